"""Helpers for ROS tests across real processes.

segcap_node runs as a child process (`python -m ros_segcap.ros.node`) in a unique
ROS_DOMAIN_ID and namespace, with localhost-only discovery, ROS_LOG_DIR in a temp dir and
the 64 MiB shared-memory Fast DDS profile. The test side is an rclpy node in its own context,
spun in a background thread. Timeouts raise AssertionError with the child's output.
"""
from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DDS_PROFILE = ROOT / 'config' / 'fastdds_shm.xml'
RESULT_S = 30.0  # longest wait for one result on a busy 2-core machine
_ids = itertools.count()

# Set before any DDS participant exists in this process (Fast DDS reads them once).
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', str(DDS_PROFILE))
os.environ.setdefault('ROS_LOG_DIR', tempfile.mkdtemp(prefix='segcap-roslog-'))

try:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter
    from std_msgs.msg import Header, String
    HAVE_RCLPY, WHY_NO_RCLPY = True, ''
except ImportError as exc:  # pragma: no cover - depends on the environment
    HAVE_RCLPY, WHY_NO_RCLPY = False, f'rclpy is not importable: {exc}'


def built_interfaces() -> Any:
    """The generated ros_segcap_msgs classes; skips the calling test when they are not built."""
    import pytest

    from ros_segcap.ros.messages import load_interfaces
    it, why = load_interfaces()
    if it is None:
        pytest.skip(f'ros_segcap_msgs is not built ({why}): run scripts/build_msgs.py')
    return it


def start_node(workdir: Path, prefix: str, params: dict[str, Any], **kwargs: Any
               ) -> tuple['NodeProcess', 'TestSide']:
    """segcap_node in a fresh domain and namespace '/<prefix>_<random>', and the test side."""
    domain, ns = unique_domain(), f'/{prefix}_{uuid.uuid4().hex[:8]}'
    return NodeProcess(workdir, domain, ns, params, **kwargs), TestSide(domain, ns)


def unique_domain() -> int:
    """Return a ROS_DOMAIN_ID unlikely to be used by another test run on this machine."""
    return random.Random(os.getpid() * 1_000_003 + time.time_ns()).randint(1, 230)


def reliable(depth: int = 1000) -> 'QoSProfile':
    """Return a reliable keep-last QoS of the given depth."""
    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)


def best_effort(depth: int = 5) -> 'QoSProfile':
    """Return a best-effort keep-last QoS (what camera drivers use)."""
    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.BEST_EFFORT)


class NodeProcess:
    """segcap_node as a child process (autostart unless params say otherwise); output to a log."""

    def __init__(self, workdir: Path, domain: int, namespace: str, params: dict[str, Any],
                 python_path: Optional[Path] = None) -> None:
        self.namespace, self.domain = namespace, domain
        self.log_path = workdir / f'node{namespace.replace("/", "_")}.log'
        env = dict(os.environ, ROS_DOMAIN_ID=str(domain), OMP_NUM_THREADS='1',
                   PYTHONUNBUFFERED='1', RCUTILS_COLORIZED_OUTPUT='0')
        if python_path is not None:  # e.g. a dir that hides ros_segcap_msgs
            env['PYTHONPATH'] = os.pathsep.join(
                [str(python_path), str(ROOT)] + [p for p in [env.get('PYTHONPATH')] if p])
        args = [sys.executable, '-m', 'ros_segcap.ros.node', '--ros-args',
                '-r', f'__ns:={namespace}']
        for key, value in dict({'autostart': True}, **params).items():  # active unless told
            text = str(value).lower() if isinstance(value, bool) else str(value)
            args += ['-p', f'{key}:={text}']
        self._log = self.log_path.open('w')
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env, cwd=workdir)

    def output(self, tail: int = 8000) -> str:
        """Return the last `tail` characters the node printed."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors='replace')[-tail:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_mb(self) -> float:
        """Return the node's resident memory in MB (from /proc)."""
        for line in Path(f'/proc/{self.proc.pid}/status').read_text().splitlines():
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
        raise AssertionError('VmRSS not found')

    def peak_rss_mb(self) -> float:
        """Return the node's peak resident memory so far in MB (VmHWM, from /proc)."""
        for line in Path(f'/proc/{self.proc.pid}/status').read_text().splitlines():
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024.0
        raise AssertionError('VmHWM not found')

    def stop(self, timeout: float = 15.0) -> Optional[int]:
        """Stop with SIGINT (as Ctrl-C does); kill after `timeout`. Return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode

    def explain(self, what: str) -> str:
        """Return `what` followed by the node's recent output, for assertion messages."""
        state = 'running' if self.alive() else f'exited with {self.proc.returncode}'
        return f'{what}\n--- segcap_node ({state}) output ---\n{self.output()}'


class Collector:
    """Messages received on one topic, in arrival order (thread-safe)."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._lock = threading.Lock()

    def __call__(self, msg: Any) -> None:
        with self._lock:
            self.items.append(msg)

    def snapshot(self) -> list[Any]:
        with self._lock:
            return list(self.items)

    def find(self, predicate: Callable[[Any], bool]) -> list[Any]:
        return [m for m in self.snapshot() if predicate(m)]


class TestSide:
    """An rclpy node for the test, in its own context and domain, spun in a thread."""

    def __init__(self, domain: int, namespace: str) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node('segcap_test', namespace=namespace,
                                      context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - shutdown races end the spin
            pass

    def collect(self, msg_type: type, topic: str, qos: Any = None) -> Collector:
        """Subscribe and return the Collector that gathers the messages."""
        collector = Collector()
        self.node.create_subscription(msg_type, topic, collector, qos or reliable())
        return collector

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=5.0)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             node: Optional[NodeProcess] = None, period: float = 0.02) -> Any:
    """Poll until predicate() is truthy and return it; on timeout fail with the node's output."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if node is not None and not node.alive():
            raise AssertionError(node.explain(f'segcap_node died while waiting for {what}'))
        if time.monotonic() > deadline:
            message = f'timed out after {timeout:g} s waiting for {what}'
            raise AssertionError(node.explain(message) if node else message)
        time.sleep(period)


def make_image(height: int, width: int, encoding: str = 'rgb8', *, stamp_sec: int = 0,
               frame_id: str = 'camera', value: int = 128, step: Optional[int] = None,
               data: Optional[bytes] = None) -> 'Image':
    """Build a test Image quickly (bytes assignment); `data`/`step` may be made bad on purpose."""
    channels = {'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1}.get(encoding, 1)
    depth = 2 if encoding in ('mono16', '16UC1') else 1
    msg = Image()
    msg.header = Header(frame_id=frame_id)
    msg.header.stamp.sec = stamp_sec
    msg.height, msg.width, msg.encoding = height, width, encoding
    msg.step = step if step is not None else width * channels * depth
    if data is None:
        rng = np.random.default_rng(stamp_sec)
        data = rng.integers(0, 256, msg.step * height, dtype=np.uint8).tobytes() \
            if value < 0 else bytes([value]) * (msg.step * height)
    msg.data = data
    return msg


def jpeg_bomb(width: int, height: int) -> bytes:
    """A small JPEG whose start-of-frame header states width x height (its data does not)."""
    import cv2
    data = bytearray(cv2.imencode('.jpg', np.zeros((16, 16, 3), np.uint8))[1].tobytes())
    sof = data.index(b'\xff\xc0')
    data[sof + 5:sof + 9] = height.to_bytes(2, 'big') + width.to_bytes(2, 'big')
    return bytes(data)


class Camera:
    """Publish frames at `rate` Hz from a thread; frame i has header.stamp.sec = first + i."""

    def __init__(self, publisher: Any, rate: float = 30.0, height: int = 120, width: int = 160,
                 first: int = 1000, frame_id: str = 'camera') -> None:
        self._publisher, self._period = publisher, 1.0 / rate
        self._frame = make_image(height, width, 'rgb8', frame_id=frame_id, value=-1)
        self.next_stamp, self.published = first, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        next_time = time.monotonic()
        while not self._stop.is_set():
            self._frame.header.stamp.sec = self.next_stamp
            self._publisher.publish(self._frame)
            self.next_stamp += 1
            self.published += 1
            next_time += self._period
            self._stop.wait(max(0.0, next_time - time.monotonic()))

    def last_stamp(self) -> int:
        """Return the stamp of the last frame published."""
        return self.next_stamp - 1

    def __enter__(self) -> 'Camera':
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


@dataclass
class Ros:
    """The running node and the test side's endpoints."""

    node: NodeProcess
    side: TestSide
    it: Any  # ros_segcap_msgs types
    results: Collector
    image: Any
    command: Any
    click: Any
    prompt: Any

    def send(self, text: str, timeout: float = RESULT_S) -> Any:
        """Publish a command and return its (first) result."""
        self.command.publish(String(data=text))
        return self.result_for(text, timeout)

    def result_for(self, text: str, timeout: float = RESULT_S) -> Any:
        found = wait_for(lambda: self.results.find(lambda r: r.command == text), timeout,
                         f'the result of {text[:60]!r}', self.node)
        return found[0]

    def show(self, msg: Any, times: int = 3) -> None:
        """Publish one frame a few times (best effort) and give the node time to store it."""
        for _ in range(times):
            self.image.publish(msg)
            time.sleep(0.03)
        time.sleep(0.3)

    def unique(self, text: str) -> str:
        return f'{text} #{next(_ids)}'

    def set_parameter(self, name: str, value: Any) -> Any:
        """Set one node parameter through its service; return the SetParametersResult."""
        client = self.side.node.create_client(SetParameters, 'segcap_node/set_parameters')
        wait_for(lambda: client.service_is_ready(), 10.0, 'set_parameters', self.node)
        request = SetParameters.Request(parameters=[Parameter(name, value=value)
                                                    .to_parameter_msg()])
        future = client.call_async(request)
        wait_for(future.done, 10.0, 'the set_parameters response', self.node)
        return future.result().results[0]


def private_ros_env(tmp_path: Path, monkeypatch: Any) -> dict[str, str]:
    """A private ROS domain for one test, for the test process and its children."""
    from ros_segcap.ros.processes import ros_environment
    base = {k: v for k, v in os.environ.items() if k != 'ROS_DOMAIN_ID'}
    env = ros_environment(base)
    env['ROS_LOG_DIR'] = str(tmp_path / 'ros_log')
    for key in ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE', 'ROS_LOG_DIR',
                'FASTDDS_DEFAULT_PROFILES_FILE'):
        if key in env:
            monkeypatch.setenv(key, env[key])
    return env


def plain_node(name: str) -> Iterator[Any]:
    """Yield an rclpy node in the default context (a fixture body); shut down after."""
    rclpy.init()
    node = rclpy.create_node(name)
    yield node
    node.destroy_node()
    rclpy.try_shutdown()


def spin_until(node: Any, condition: Callable[[], Any], timeout: float = 60.0) -> bool:
    """Spin `node` until condition() or timeout; return condition()."""
    end = time.monotonic() + timeout
    while not condition() and time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    return bool(condition())
