"""ROS overhead of segcap_node, and camera frame rates over DDS, measured in one run.

    .venv/bin/python benchmarks/bench_ros.py [--model segcap-tiny] [--runs 5]
        [--max-new-tokens 16] [--threads 1] [--seconds 5] [--only latency|rate]

(a) Latency. segcap_node runs as a child process (Fast DDS SHM profile, as it sets itself;
torch seeded like this process, so untrained model parts are the same in both).
One 640x480 tabletop frame goes to it as a best-effort rgb8 Image, followed at once by the
command "segment the red cup"; the time from publishing the frame to receiving the
SegCapResult for that frame (checked by its header stamp) is divided by Pipeline.run on the
same frame and command in this process. Every run uses a new frame, so both encode it. The
two alternate, so machine load hits both alike; medians of --runs each, after one warm-up.
Both use --threads torch threads and the same fixed max_new_tokens (greedy decoding), so they
give the same answer (the report shows it, or both when they differ).
(b) Rate. A publisher child (ros_segcap.ros.camera's CameraPublisher and publish_loop: rgb8,
best-effort sensor-data QoS) sends 640x480 and 1024x1024 frames at 30 Hz to a receiver child
that subscribes with the node's image QoS; the received rate over --seconds is printed with
Fast DDS defaults and with config/fastdds_shm.xml in both children.

Not a test: the numbers depend on the machine and its load. Every child's return code is
checked; children are stopped on any exit.
"""
from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')

import numpy as np  # noqa: E402

from ros_procs import (FIRST_FRAME_S, PROFILE_VARS, BenchError,  # noqa: E402
                       Child, child_env, role_publish, role_receive, unique_domain, wait_for)

ROOT = Path(__file__).resolve().parents[1]
SHM_PROFILE = ROOT / 'config' / 'fastdds_shm.xml'
SIZES = ((640, 480), (1024, 1024))  # (width, height)
RATE_HZ = 30.0
STARTUP_S = 300.0  # model load on a busy 2-core machine
RESULT_S = 120.0
# A model without shipped weights has randomly initialised new parts (projectors, heads), so
# the node and this process seed torch alike before building it; trained weights overwrite
# them. Otherwise this is `python -m ros_segcap.ros.node`.
SEED = 0
NODE_MAIN = (f'import sys, torch; torch.manual_seed({SEED}); '
             'from ros_segcap.ros.node import main; sys.exit(main())')


def self_command(role: str, *extra: str) -> list[str]:
    """Command line that runs this script in a child role."""
    return [sys.executable, str(Path(__file__).resolve()), '--role', role, *extra]


# ----- (a) latency through ROS vs in process ---------------------------------------------------

def bench_frame() -> np.ndarray:
    """The demo's 640x480 tabletop frame (a test-split scene with a red cup), or a photo."""
    try:
        from ros_segcap.ros.commands import DEMO_SEEDS
        from ros_segcap.world import TabletopCamera
        return next(TabletopCamera(480, 640, seed=DEMO_SEEDS['default']).frames())
    except ImportError:
        import cv2
        bgr = cv2.imread(str(ROOT / 'ros_segcap' / 'assets' / 'coffee.jpg'), cv2.IMREAD_COLOR)
        return cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (640, 480))


class RosSide:
    """This process's ROS endpoints for the latency runs, spun in a background thread."""

    def __init__(self, domain: int, namespace: str, result_type: type) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node('bench_ros', namespace=namespace, context=self.context)
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.image = self.node.create_publisher(Image, 'image', qos_profile_sensor_data)
        self.command = self.node.create_publisher(String, 'command', reliable)
        self.results: list[tuple[float, Any]] = []  # (perf_counter at arrival, message)
        self.node.create_subscription(result_type, 'segcap/result', self._on_result, reliable)
        self.result_topic = f'{namespace}/segcap/result'
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _on_result(self, msg: Any) -> None:
        self.results.append((time.perf_counter(), msg))

    def _spin(self) -> None:
        try:
            self._executor.spin()
        except Exception:  # noqa: BLE001 - shutdown races end the spin
            pass

    def ready(self) -> bool:
        """True once the node subscribes to image and command and publishes results."""
        return (self.image.get_subscription_count() > 0 and
                self.command.get_subscription_count() > 0 and
                self.node.count_publishers(self.result_topic) > 0)

    def close(self) -> None:
        """Stop spinning and shut the context down."""
        import rclpy
        self._executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=5.0)


@dataclass
class Latency:
    """Times of the latency runs, in ms, and what came back."""

    inproc_ms: list[float] = field(default_factory=list)
    ros_ms: list[float] = field(default_factory=list)
    node_core_ms: list[float] = field(default_factory=list)  # the node's core stages
    answers: dict[str, set[str]] = field(default_factory=lambda: {'in process': set(),
                                                                  'through ROS': set()})
    retries: int = 0  # the command reached the node before its frame: run again
    # stage name -> ms per run, for 'in process' and 'in the node'
    stages: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: {'in process': {}, 'in the node': {}})

    def add(self, inproc_ms: float, inproc: Any, ros_ms: float, result: Any) -> None:
        """Record one pair: the in-process SegCapResult and the node's result message."""
        self.inproc_ms.append(inproc_ms)
        self.ros_ms.append(ros_ms)
        self.node_core_ms.append(core_ms(result))
        self.answers['in process'].add(inproc.answer)
        self.answers['through ROS'].add(result.answer)
        for where, ms in (('in process', inproc.timing.ms),
                          ('in the node', dict(zip(result.stage_names, result.stage_ms)))):
            for name, value in ms.items():
                self.stages[where].setdefault(name, []).append(value)


def ros_once(side: RosSide, node: Child, rgb: np.ndarray, command: str, stamp: int
             ) -> Optional[tuple[float, Any]]:
    """Frame then command in, result out: (ms, result), or None if it used another frame."""
    from ros_segcap.ros.camera import rgb_to_image
    from std_msgs.msg import String

    msg = rgb_to_image(rgb, 'bench')
    msg.header.stamp.sec = stamp
    seen = len(side.results)
    t0 = time.perf_counter()
    side.image.publish(msg)
    side.command.publish(String(data=command))
    wait_for(lambda: len(side.results) > seen, RESULT_S, f'the result of frame {stamp}', node)
    arrival, result = side.results[seen]
    if result.status != 'ok':
        raise BenchError(node.explain(f'status {result.status!r} for frame {stamp}'))
    if result.header.stamp.sec != stamp:
        return None
    return (arrival - t0) * 1000.0, result


def core_ms(result: Any) -> float:
    """Sum of a SegCapResult message's core stages (without ros_convert and queue_wait)."""
    return sum(ms for name, ms in zip(result.stage_names, result.stage_ms)
               if name not in ('ros_convert', 'queue_wait'))


def ros_run(side: RosSide, node: Child, rgb: np.ndarray, command: str,
            stamps: Iterator[int], latency: Latency) -> tuple[float, Any]:
    """ros_once, run again (with a new frame) while the command overtakes its frame."""
    for _ in range(3):
        got = ros_once(side, node, rgb, command, next(stamps))
        if got is not None:
            return got
        latency.retries += 1
    raise BenchError(node.explain('three commands in a row overtook their frame'))


def run_latency_pairs(args: argparse.Namespace, side: RosSide, node: Child,
                      pipeline: Any) -> Latency:
    """One warm-up each, then --runs pairs; which of the two goes first alternates."""
    from ros_segcap.ros.commands import DEFAULT_COMMAND

    rgb, out, stamps = bench_frame(), Latency(), itertools.count(100_000)

    def inproc() -> tuple[float, Any]:
        t0 = time.perf_counter()
        result = pipeline.run(rgb, DEFAULT_COMMAND)
        return (time.perf_counter() - t0) * 1000.0, result

    for i in range(args.runs + 1):
        if i % 2:
            inproc_ms, inproc_result = inproc()
        ros_ms, result = ros_run(side, node, rgb, DEFAULT_COMMAND, stamps, out)
        if not i % 2:
            inproc_ms, inproc_result = inproc()
        if i == 0:
            continue  # warm-up
        out.add(inproc_ms, inproc_result, ros_ms, result)
        print(f'  run {i}: in process {inproc_ms:7.0f} ms, through ROS {ros_ms:7.0f} ms '
              f'(core stages in the node {out.node_core_ms[-1]:.0f} ms)', flush=True)
    return out


def measure_latency(args: argparse.Namespace, workdir: Path) -> Latency:
    """Start segcap_node, load the same model here, and time both on one frame/command."""
    import torch
    from ros_segcap.runtime import PipelineConfig, open_pipeline
    from ros_segcap.ros.messages import load_interfaces

    interfaces, why = load_interfaces()
    if interfaces is None:
        raise BenchError(f'ros_segcap_msgs is not importable ({why}): run scripts/build_msgs.py')
    domain, namespace = unique_domain(), f'/bench_{os.getpid()}'
    params = {'model': args.model, 'max_new_tokens': args.max_new_tokens, 'temperature': 0.0}
    cmd = [sys.executable, '-c', NODE_MAIN, '--ros-args', '-r', f'__ns:={namespace}']
    cmd += [x for k, v in params.items() for x in ('-p', f'{k}:={v}')]
    with ExitStack() as stack:
        node = Child('segcap_node', cmd, child_env(domain, SHM_PROFILE, args.threads), workdir)
        stack.callback(node.stop)
        torch.set_num_threads(args.threads)
        torch.manual_seed(SEED)  # as NODE_MAIN does: the same untrained parts as the node's
        try:
            pipeline = open_pipeline(PipelineConfig(model=args.model, temperature=0.0,
                                                    max_new_tokens=args.max_new_tokens))
        except (KeyError, ValueError, FileNotFoundError) as exc:
            raise BenchError(f'--model {args.model}: {exc.args[0] if exc.args else exc}')
        side = RosSide(domain, namespace, interfaces.ResultMsg)
        stack.callback(side.close)
        wait_for(side.ready, STARTUP_S, 'segcap_node to start', node)
        result = run_latency_pairs(args, side, node, pipeline)
    if node.proc.returncode != 0:  # stopped above, on the way out of the with block
        raise BenchError(node.explain(f'segcap_node exited with {node.proc.returncode} '
                                      'on SIGINT'))
    return result


def report_latency(args: argparse.Namespace, lat: Latency) -> None:
    """Print part (a): medians, the ROS overhead, the ratio and the answers."""
    med = statistics.median
    ratio = med(lat.ros_ms) / med(lat.inproc_ms)
    pair = med(r / i for r, i in zip(lat.ros_ms, lat.inproc_ms))
    print(f'\n(a) end-to-end latency, model {args.model}, max_new_tokens {args.max_new_tokens}, '
          f'{args.threads} torch thread(s), 640x480 frame, {args.runs} runs each (median):')
    print(f'  in-process Pipeline.run     {med(lat.inproc_ms):8.0f} ms '
          f'(min {min(lat.inproc_ms):.0f}, max {max(lat.inproc_ms):.0f})')
    print(f'  through ROS                 {med(lat.ros_ms):8.0f} ms '
          f'(min {min(lat.ros_ms):.0f}, max {max(lat.ros_ms):.0f}; frame and command in, '
          f'result out)')
    overhead = med(r - n for r, n in zip(lat.ros_ms, lat.node_core_ms))
    print(f'  ROS overhead per command: {overhead:.0f} ms (median of end to end minus the core '
          f'stages the node reports: DDS, callbacks, queue, image and result conversion)')
    print(f'  ratio ROS / in-process: {ratio:.3f} (goal <= 1.15; median of per-pair ratios '
          f'{pair:.3f}); commands that overtook their frame (re-run): {lat.retries}')
    node_stages = lat.stages['in the node']
    print('  stages, median ms in process / in the node: ' + ', '.join(
        f'{name} {med(ms):.0f} / {med(node_stages.get(name, [float("nan")])):.0f}'
        for name, ms in lat.stages['in process'].items()) + ''.join(
        f', {name} - / {med(ms):.0f}' for name, ms in node_stages.items()
        if name not in lat.stages['in process']))
    if len(set.union(*lat.answers.values())) == 1:
        print(f'  same answer in every run: {next(iter(lat.answers["in process"]))!r}')
    else:
        for where, answers in lat.answers.items():
            print(f'  ANSWERS DIFFER, {where}: ' + ' | '.join(map(repr, sorted(answers))))


# ----- (b) received frame rate -----------------------------------------------------------------

def measure_rate(args: argparse.Namespace, workdir: Path, profile: Optional[Path],
                 size: tuple[int, int]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run a receiver and a 30 Hz publisher child; return (received, published) stats."""
    env = child_env(unique_domain(), profile)
    size_arg = f'{size[0]}x{size[1]}'
    tag = f'{"shm" if profile else "default"}_{size_arg}'
    with ExitStack() as stack:
        receiver = Child(f'receiver_{tag}', self_command(
            'receive', '--seconds', str(args.seconds)), env, workdir)
        stack.callback(receiver.stop)
        publisher = Child(f'publisher_{tag}', self_command(
            'publish', '--size', size_arg, '--rate', str(RATE_HZ)), env, workdir)
        stack.callback(publisher.stop)
        received = receiver.finish(FIRST_FRAME_S + args.seconds + 30.0)
        published = publisher.stop_checked()
    return received, published


def run_rates(args: argparse.Namespace, workdir: Path) -> None:
    """Measure and print part (b): each Fast DDS profile x each frame size."""
    print(f'\n(b) received rate of rgb8 frames published at {RATE_HZ:g} Hz, best effort, '
          f'over {args.seconds:g} s (in brackets: the rate the publisher achieved):')
    print((f'  {"Fast DDS profile":<24}' + ''.join(f'{f"{w}x{h}":<21}' for w, h in SIZES))
          .rstrip())
    for name, profile in (('defaults (no file)', None), ('config/fastdds_shm.xml', SHM_PROFILE)):
        cells = []
        for size in SIZES:
            received, published = measure_rate(args, workdir, profile, size)
            none = '' if received['first_frame'] else ' (no frame arrived)'
            cells.append(f'{received["rate_hz"]:5.1f} Hz [{published["rate_hz"]:4.1f}]{none}')
        print(f'  {name:<24}' + ''.join(f'{c:<21}' for c in cells).rstrip(), flush=True)


# ----- entry point ---------------------------------------------------------------------------

def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """Parse the options (the hidden ones are for the child roles)."""
    from ros_segcap.ros.commands import image_size

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', default='segcap-tiny',
                        help='model for the node and in process (tiny-random: a quick run)')
    parser.add_argument('--runs', type=int, default=5, help='timed runs of each (after a '
                        'warm-up; default: 5)')
    parser.add_argument('--max-new-tokens', type=int, default=16,
                        help='fixed answer length limit for both (default: 16)')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch threads in process and in the node (default: 1)')
    parser.add_argument('--seconds', type=float, default=5.0,
                        help='rate measurement window per case (default: 5)')
    parser.add_argument('--only', choices=('latency', 'rate'),
                        help='run one part only (default: both)')
    parser.add_argument('--role', choices=('bench', 'publish', 'receive'), default='bench',
                        help=argparse.SUPPRESS)
    parser.add_argument('--size', type=image_size, default=(640, 480), help=argparse.SUPPRESS)
    parser.add_argument('--rate', type=float, default=RATE_HZ, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.seconds <= 0 or args.threads < 1 or args.max_new_tokens < 1:
        parser.error('--runs, --threads and --max-new-tokens must be >= 1, --seconds > 0')
    return args


def main(argv: Optional[list[str]] = None) -> int:
    """Run the benchmark (or one child role); return the exit code."""
    args = parse_args(argv)
    if args.role == 'publish':
        return role_publish(args)
    if args.role == 'receive':
        return role_receive(args)
    workdir = Path(tempfile.mkdtemp(prefix='segcap-bench-ros-'))
    os.environ.setdefault('ROS_LOG_DIR', str(workdir / 'ros_log'))
    # this process talks to the node, which uses the SHM profile when none is set
    for name in PROFILE_VARS:
        os.environ.pop(name, None)
    os.environ['FASTDDS_DEFAULT_PROFILES_FILE'] = str(SHM_PROFILE)
    print(f'rmw {os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp (default)")}, '
          f'{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; logs in {workdir}')
    try:
        if args.only in (None, 'latency'):
            report_latency(args, measure_latency(args, workdir))
        if args.only in (None, 'rate'):
            run_rates(args, workdir)
    except BenchError as exc:
        print(f'bench_ros: {exc}\n(logs in {workdir})', file=sys.stderr)
        return 1
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
