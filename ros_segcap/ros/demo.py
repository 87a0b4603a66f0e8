"""`segcap demo`: camera and node as separate processes, one command, the answer and overlay.

The demo process starts the camera publisher and segcap_node as children (their output goes
to <out>/camera.log and <out>/node.log, and is printed if one fails), waits until the node
is on the graph and frames flow, publishes the command, waits for the answer (and the
overlay), prints the answer and the end-to-end latency, writes overlay.png and mask.png,
and stops the children. With --serve it also streams to a Foxglove websocket until Ctrl-C.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image
from std_msgs.msg import String

from ros_segcap.ros import demo_track
from ros_segcap.ros.commands import add_demo_arguments
from ros_segcap.ros.processes import (Child, DemoError, check_children, ros_environment,
                                      start_child, stop_children)
from ros_segcap.ros.transport import find_share_file, use_large_frame_transport

OVERLAY_GRACE = 3.0  # seconds to wait for the overlay and mask once the answer is in
STOP = threading.Event()  # set by SIGINT/SIGTERM; spin_until turns it into KeyboardInterrupt


def source_arguments(args: argparse.Namespace) -> list[str]:
    """Turn the camera options of `args` into arguments for the camera process."""
    width, height = args.size
    argv = ['--rate', f'{args.rate:g}', '--world', args.world, '--size', f'{width}x{height}',
            '--scene-seconds', f'{args.scene_seconds:g}']
    if args.seed is not None:
        argv += ['--seed', str(args.seed)]
    for option in ('images', 'video', 'bag'):
        value = getattr(args, option)
        if value is not None:
            argv += [f'--{option}', str(Path(value).resolve())]
    return argv


def node_command(args: argparse.Namespace) -> list[str]:
    """Build the command line of segcap_node with the demo's parameters."""
    cmd = [sys.executable, '-m', 'ros_segcap.ros.node', '--ros-args']
    params = find_share_file('config/segcap.yaml')
    if params is not None:
        cmd += ['--params-file', str(params)]
    for name, value in (('model', args.model), ('backend', args.backend),
                        ('publish_overlay', 'true'), ('autostart', 'true')):
        cmd += ['-p', f'{name}:={value}']
    if getattr(args, 'track', None):  # follow every frame the node can take
        cmd += ['-p', f'continuous_rate:={demo_track.TRACK_RATE!r}']
    return cmd


@dataclass(frozen=True)
class Answer:
    """What segcap_node answered to the demo's command."""

    received: float  # time.monotonic() when it arrived
    text: str
    status: str = 'ok'
    phrases: tuple[str, ...] = ()
    node_ms: Optional[float] = None  # the node's own pipeline time


class DemoClient(Node):
    """The demo's own node: sends the command, watches frames and the node's outputs."""

    def __init__(self) -> None:
        super().__init__('segcap_demo')
        self.command_pub = self.create_publisher(String, 'command', QoSProfile(depth=10))
        self.images = 0
        self.command: Optional[str] = None
        self.sent_at: Optional[float] = None
        self.result: Optional[Answer] = None  # from segcap/result or segcap/result_json
        self.caption: Optional[Answer] = None  # from segcap/caption
        self.images_out: dict[str, Image] = {}
        reliable = QoSProfile(depth=10)
        self.create_subscription(Image, 'image', self._on_image, qos_profile_sensor_data)
        self.create_subscription(String, 'segcap/caption', self._on_caption, reliable)
        self.create_subscription(String, 'segcap/result_json', self._on_json, reliable)
        try:  # the interface package is optional; the JSON result covers its absence
            from ros_segcap_msgs.msg import SegCapResult
            self.create_subscription(SegCapResult, 'segcap/result', self._on_result, reliable)
        except ImportError:
            pass
        for name in ('overlay', 'mask'):
            self.create_subscription(Image, f'segcap/{name}', self._keep_image(name), reliable)

    def _on_image(self, msg: Image) -> None:
        self.images += 1

    def _keep_image(self, name: str):
        def callback(msg: Image) -> None:
            if self.sent_at is not None:
                self.images_out[name] = msg
        return callback

    def _on_caption(self, msg: String) -> None:
        if self.sent_at is not None and self.caption is None:
            self.caption = Answer(time.monotonic(), msg.data)

    def _on_result(self, msg) -> None:
        self._keep_result(msg.command, Answer(time.monotonic(), msg.answer, msg.status,
                                              tuple(msg.phrases), msg.total_ms))

    def _on_json(self, msg: String) -> None:
        data = json.loads(msg.data)
        self._keep_result(data.get('command'), Answer(
            time.monotonic(), data.get('answer', ''), data.get('status', ''),
            tuple(data.get('phrases', ())), data.get('total_ms')))

    def _keep_result(self, command: str, answer: Answer) -> None:
        if self.sent_at is not None and self.result is None and command == self.command:
            self.result = answer

    @property
    def answer(self) -> Optional[Answer]:
        """The node's result for our command (or, without one, its caption) and its arrival."""
        first = min((a.received for a in (self.result, self.caption) if a), default=None)
        best = self.result or self.caption
        return None if best is None else dataclasses.replace(best, received=first)

    def node_ready(self) -> bool:
        """Tell whether segcap_node listens to `command` and publishes `segcap/caption`."""
        return (self.command_pub.get_subscription_count() > 0
                and self.count_publishers('segcap/caption') > 0)

    def send(self, command: str) -> None:
        """Publish the command and start the latency clock."""
        self.command, self.sent_at = command, time.monotonic()
        self.command_pub.publish(String(data=command))


def spin_until(client: DemoClient, children: list[Child], done, timeout: float,
               progress=None, every: float = 5.0) -> bool:
    """Spin until done() or timeout; check the children and call progress(elapsed).

    Raises KeyboardInterrupt once SIGINT or SIGTERM has arrived (see interrupt_on_signals).
    """
    start = last = time.monotonic()
    while not done():
        if STOP.is_set():
            raise KeyboardInterrupt('stop requested by signal')
        now = time.monotonic()
        if now - start > timeout:
            return False
        if progress is not None and now - last >= every:
            progress(now - start)
            last = now
        check_children(children)
        rclpy.spin_once(client, timeout_sec=0.1)
    return True


def wait_ready(client: DemoClient, children: list[Child], args: argparse.Namespace) -> None:
    """Wait for frames and for the node to come up, printing progress while the model loads."""
    node = next(c for c in children if c.name == 'node')

    def progress(elapsed: float) -> None:
        state = 'node up' if client.node_ready() else f'loading model {args.model!r}'
        print(f'  ... {elapsed:4.0f} s  {state}, {client.images} camera frames', flush=True)

    if not spin_until(client, children, lambda: client.node_ready() and client.images > 0,
                      args.timeout, progress):
        what = 'no camera frames' if client.images == 0 else 'segcap_node did not come up'
        raise DemoError(f'{what} within --timeout {args.timeout:g} s (logs in {args.out}):\n'
                        f'{node.log_tail()}')
    seen = client.images  # make sure the node has had a frame before the command
    spin_until(client, children, lambda: client.images >= seen + 2, 5.0)


def wait_result(client: DemoClient, children: list[Child], args: argparse.Namespace) -> None:
    """Wait for the answer, then briefly for the overlay; DemoError on timeout or bad status."""
    def progress(elapsed: float) -> None:
        print(f'  ... {elapsed:4.0f} s  waiting for the answer', flush=True)

    if not spin_until(client, children, lambda: client.answer is not None, args.timeout,
                      progress):
        node = next(c for c in children if c.name == 'node')
        raise DemoError(f'no answer within --timeout {args.timeout:g} s (logs in '
                        f'{args.out}):\n{node.log_tail()}')
    if client.answer.status != 'ok':
        raise DemoError(f'segcap_node answered {args.command!r} with status '
                        f'{client.answer.status!r}')
    spin_until(client, children, lambda: {'overlay', 'mask'} <= set(client.images_out),
               OVERLAY_GRACE)


def save_png(msg: Image, path: Path) -> Path:
    """Write an rgb8/bgr8/mono8 Image message as PNG."""
    import cv2
    from ros_segcap.ros.convert import image_to_numpy, image_to_rgb
    pixels = image_to_numpy(msg) if msg.encoding == 'mono8' else image_to_rgb(msg)[..., ::-1]
    if not cv2.imwrite(str(path), np.ascontiguousarray(pixels)):
        raise DemoError(f'could not write {path}')
    return path


def report(client: DemoClient, args: argparse.Namespace) -> None:
    """Print the answer and the latency, write overlay.png and mask.png."""
    answer = client.answer
    print(f'command: {args.command}')
    print(f'answer:  {answer.text or "(empty)"}')
    if answer.phrases:
        print(f'phrases: {", ".join(answer.phrases)}')
    inside = f'; {answer.node_ms:.0f} ms inside the node' if answer.node_ms else ''
    print(f'latency: {(answer.received - client.sent_at) * 1e3:.0f} ms end to end '
          f'(command published -> answer received, through ROS{inside})')
    for name in ('overlay', 'mask'):
        if name in client.images_out:
            print(f'{name}: {save_png(client.images_out[name], args.out / f"{name}.png")}')
        else:
            print(f'{name}: none received within {OVERLAY_GRACE:g} s of the answer')


def _demo(client: DemoClient, children: list[Child], args: argparse.Namespace) -> None:
    from ros_segcap.models import weights_warning

    warning = weights_warning(args.model)
    if warning:
        print(f'warning: {warning}', flush=True)
    print(f'waiting for camera frames and segcap_node (model {args.model!r}, '
          f'backend {args.backend!r}) ...', flush=True)
    wait_ready(client, children, args)
    log = demo_track.TrackLog(client, lambda: client.command) if args.track else None
    print(f'node ready; sending {args.command!r}', flush=True)
    client.send(args.command)
    wait_result(client, children, args)
    report(client, args)
    if log is not None:  # follow the target for a while, then say how it went
        spin_until(client, children, lambda: len(log.items) >= demo_track.TRACK_RESULTS,
                   args.timeout)
        demo_track.report(log)


def run(args: argparse.Namespace) -> int:
    """Run the demo; return 0 on success, 1 with a message on failure, 130 on Ctrl-C."""
    use_large_frame_transport()  # here and in the children, unless the user chose one
    args.out = Path(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.track:
        demo_track.prepare(args)
    env = ros_environment()
    os.environ.update({k: env[k] for k in env if k.startswith(('ROS_', 'FAST'))})
    children: list[Child] = []
    code = 0
    interrupt_on_signals()
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    client = DemoClient()
    bridge = None
    try:
        children.append(start_child('camera', [sys.executable, '-m', 'ros_segcap.ros.camera']
                                    + source_arguments(args), env, args.out))
        children.append(start_child('node', node_command(args), env, args.out))
        print(f'camera and node started (ROS_DOMAIN_ID={env["ROS_DOMAIN_ID"]}, logs in '
              f'{args.out})', flush=True)
        bridge = start_bridge(client, args.port) if args.serve else None
        _demo(client, children, args)
        if bridge is not None:
            print('serving until Ctrl-C ...', flush=True)
            spin_until(client, children, lambda: False, float('inf'))
    except DemoError as error:
        print(f'segcap demo: {error}', file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        code = 0 if bridge is not None and client.answer is not None else 130
    finally:
        code = _shutdown(client, children, bridge, code)
    return code


def interrupt_on_signals() -> None:
    """Make SIGINT and SIGTERM stop the demo, so the children are always stopped.

    The handler only sets STOP; spin_until raises KeyboardInterrupt at its next turn (within
    0.1 s). Raising from the handler itself is unsafe: the signal can land inside rclpy's C++
    take_message while it converts a message, and pybind11 turns the KeyboardInterrupt into
    an uncaught RuntimeError. (Shells start background jobs with SIGINT ignored; the children
    have their own sessions.)
    """
    STOP.clear()

    def interrupt(signum: int, frame) -> None:
        STOP.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, interrupt)
        signal.signal(signal.SIGTERM, interrupt)


def start_bridge(client: DemoClient, port: int):
    """Start the Foxglove websocket bridge on the demo's node; DemoError if it cannot bind."""
    from ros_segcap.ros.foxglove_bridge import serve
    try:
        return serve(client, port=port)
    except RuntimeError as error:  # FoxgloveError: e.g. the port is taken
        raise DemoError(f'cannot serve Foxglove on 127.0.0.1:{port} ({error}); '
                        'choose another --port (0 = any free port)') from error


def _shutdown(client: DemoClient, children: list[Child], bridge, code: int) -> int:
    print('stopping the camera and the node ...', flush=True)
    problems = stop_children(children)
    for problem in problems:
        print(f'segcap demo: {problem}', file=sys.stderr)
    if bridge is not None:
        bridge.close()
    client.destroy_node()
    rclpy.try_shutdown()
    return 1 if problems and code == 0 else code


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of `python -m ros_segcap.ros.demo`."""
    parser = argparse.ArgumentParser(prog='segcap demo', description=__doc__.splitlines()[0])
    add_demo_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
