"""Child processes for the ROS benchmarks: environment, logs, return codes, clean stops.

Each child gets its own ROS_DOMAIN_ID and only the Fast DDS profile it is given (the caller
sets ROS_AUTOMATIC_DISCOVERY_RANGE and ROS_LOG_DIR); its output goes to a log file that
every error message quotes. A child reports its numbers as one JSON line tagged JSON_TAG.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

PROFILE_VARS = ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE')
JSON_TAG = 'BENCH_JSON '
FIRST_FRAME_S = 20.0  # a rate child waits this long for its first frame


class BenchError(RuntimeError):
    """A child failed or an expected message never came; the message holds its output."""


def unique_domain() -> int:
    """Return a ROS_DOMAIN_ID unlikely to clash with another run on this machine."""
    return random.SystemRandom().randint(1, 230)


def child_env(domain: int, profile: Optional[Path], threads: int = 1) -> dict[str, str]:
    """Environment of a child: its domain, localhost discovery, and only `profile` for DDS."""
    env = {k: v for k, v in os.environ.items() if k not in PROFILE_VARS}
    env.update(ROS_DOMAIN_ID=str(domain), OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED='1',
               RCUTILS_COLORIZED_OUTPUT='0')
    if profile is not None:
        env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(profile)
    return env


class Child:
    """A child process with its output in a log file; stop() sends SIGINT, then kills."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.log_path = workdir / f'{name}.log'
        self._log = self.log_path.open('w')
        # cwd = workdir: Fast DDS would also read a DEFAULT_FASTDDS_PROFILES.xml from the cwd
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env, cwd=workdir)

    def alive(self) -> bool:
        """True while the child runs."""
        return self.proc.poll() is None

    def output(self, tail: int = 4000) -> str:
        """Return the last `tail` characters the child printed."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors='replace')[-tail:]

    def explain(self, what: str) -> str:
        """Return `what` followed by the child's recent output."""
        state = 'running' if self.alive() else f'exited with {self.proc.returncode}'
        return f'{what}\n--- {self.name} ({state}) output ---\n{self.output()}'

    def stop(self, timeout: float = 15.0) -> int:
        """Interrupt (as Ctrl-C does), kill after `timeout`; return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5.0)
        self._log.close()
        return self.proc.returncode

    def finish(self, timeout: float) -> dict[str, Any]:
        """Wait for a normal exit, check the code, and return the JSON line it printed."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(self.explain(f'{self.name} did not finish in {timeout:g} s'))
        return self.stop_checked()

    def stop_checked(self) -> dict[str, Any]:
        """Stop, require exit code 0, and return the JSON line the child printed."""
        code = self.stop()
        if code != 0:
            raise BenchError(self.explain(f'{self.name} exited with {code}'))
        lines = [x for x in self.output(100_000).splitlines() if x.startswith(JSON_TAG)]
        if not lines:
            raise BenchError(self.explain(f'{self.name} printed no {JSON_TAG.strip()} line'))
        return json.loads(lines[-1][len(JSON_TAG):])


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             child: Optional[Child] = None) -> Any:
    """Poll until predicate() is truthy; fail with the child's output on timeout or death."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if child is not None and not child.alive():
            raise BenchError(child.explain(f'{child.name} died while waiting for {what}'))
        if time.monotonic() > deadline:
            message = f'timed out after {timeout:g} s waiting for {what}'
            raise BenchError(child.explain(message) if child else message)
        time.sleep(0.01)
    return value


# ----- child roles of bench_ros.py -----------------------------------------------------------

def role_publish(args: argparse.Namespace) -> int:
    """Publish one random frame of --size at --rate Hz until interrupted; print the rate."""
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from ros_segcap.ros.camera import CameraPublisher, publish_loop

    width, height = args.size
    frame = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    rclpy.init()
    node = CameraPublisher(itertools.repeat(frame), frame_id='bench')
    start = time.monotonic()
    try:
        publish_loop(node, args.rate)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        elapsed = time.monotonic() - start
        node.destroy_node()
        rclpy.try_shutdown()
    print(JSON_TAG + json.dumps({'published': node.published,
                                 'rate_hz': node.published / max(elapsed, 1e-9)}), flush=True)
    return 0


def role_receive(args: argparse.Namespace) -> int:
    """Subscribe as segcap_node does; count frames over --seconds after a 1 s settle."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from ros_segcap.ros.params import NodeConfig, image_qos
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node('bench_receiver')
    times: list[float] = []
    node.create_subscription(Image, 'image', lambda _: times.append(time.monotonic()),
                             image_qos(NodeConfig()))
    executor = SingleThreadedExecutor()
    executor.add_node(node)

    def spin_until(deadline: float, stop: Callable[[], bool] = lambda: False) -> None:
        while time.monotonic() < deadline and not stop():
            executor.spin_once(timeout_sec=0.05)

    spin_until(time.monotonic() + FIRST_FRAME_S, lambda: bool(times))
    start = (times[0] if times else time.monotonic()) + 1.0
    spin_until(start)
    spin_until(start + args.seconds)
    count = sum(1 for t in times if start <= t < start + args.seconds)
    executor.shutdown()
    node.destroy_node()
    rclpy.try_shutdown()
    print(JSON_TAG + json.dumps({'received': count, 'rate_hz': count / args.seconds,
                                 'first_frame': bool(times)}), flush=True)
    return 0
