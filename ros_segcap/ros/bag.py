"""Record topics to rosbag2 MCAP files and play them back, with rosbags instead of ros2 bag.

Messages are stored as the serialized CDR bytes rclpy receives (raw subscriptions) and
published back as the same bytes, so a round trip is byte-exact. `--out x.mcap` writes one
MCAP file (what `ros2 bag play x.mcap` reads); any other --out is a rosbag2 directory.
Run as `segcap record|play` or `python -m ros_segcap.ros.bag record|play ...`.
"""
from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import get_types_from_msg, get_typestore, Stores

from ros_segcap.core.options import option
from ros_segcap.ros.commands import add_play_arguments, add_record_arguments
from ros_segcap.ros.transport import (DropMeter, header_stamp_ns, transport_fix,
                                      use_large_frame_transport)


class BagError(RuntimeError):
    """A user-facing recording or playback error; the message says what to do."""


def absolute_topic(name: str) -> str:
    """Resolve a topic name relative to the root namespace ('image' -> '/image')."""
    return name if name.startswith('/') else '/' + name


def message_class(msgtype: str) -> Any:
    """Import the Python class of 'pkg/msg/Name'; BagError if its package is not installed."""
    package, _, name = msgtype.split('/')
    try:
        return getattr(importlib.import_module(f'{package}.msg'), name)
    except (ImportError, AttributeError) as error:
        raise BagError(f'message type {msgtype} is not importable ({error}); install or '
                       f'source its interface package') from error


def _register_package_types(typestore: Any, msgtype: str) -> None:
    """Teach `typestore` every .msg of the package of `msgtype` (e.g. ros_segcap_msgs)."""
    from ament_index_python.packages import get_package_share_directory, PackageNotFoundError
    package = msgtype.split('/')[0]
    try:
        share = Path(get_package_share_directory(package))
    except (PackageNotFoundError, OSError, ValueError) as error:
        raise BagError(f'no message definition for {msgtype}: package {package} is not in '
                       f'the ament index ({error})') from error
    types: dict[str, Any] = {}
    for path in sorted((share / 'msg').glob('*.msg')):
        types.update(get_types_from_msg(path.read_text(), f'{package}/msg/{path.stem}'))
    typestore.register(types)
    if msgtype not in typestore.fielddefs:
        raise BagError(f'no {msgtype.split("/")[-1]}.msg in {share / "msg"}')


def has_header(msg_class: Any) -> bool:
    """True if the message's first field is a std_msgs Header (its stamp can be read raw)."""
    first = next(iter(msg_class.get_fields_and_field_types().items()), None)
    return first == ('header', 'std_msgs/Header')


def make_typestore(msgtypes: list[str]) -> Any:
    """Build a rosbags typestore that knows the standard messages and `msgtypes`."""
    typestore = get_typestore(Stores.ROS2_KILTED)
    for msgtype in msgtypes:
        if msgtype not in typestore.fielddefs:
            _register_package_types(typestore, msgtype)
    return typestore


class Recorder(Node):
    """Subscribes raw to each topic once a publisher shows its type, and writes to a bag.

    Topics whose messages start with a Header get a DropMeter: frames lost on the way,
    estimated from the cadence of the stamps.
    """

    def __init__(self, writer: Writer, topics: list[str]) -> None:
        super().__init__('segcap_record')
        self._writer = writer
        self._pending = [absolute_topic(t) for t in topics]
        self._readers: list[Any] = []
        self.count = 0
        self.meters: dict[str, DropMeter] = {}

    @property
    def pending(self) -> list[str]:
        """Topics not seen on the graph yet."""
        return list(self._pending)

    def discover(self) -> None:
        """Subscribe to the pending topics that now have a publisher."""
        types = dict(self.get_topic_names_and_types())
        for topic in [t for t in self._pending if t in types]:
            msgtype = types[topic][0]
            typestore = make_typestore([msgtype])
            connection = self._writer.add_connection(topic, msgtype, typestore=typestore)
            msg_class = message_class(msgtype)
            meter = self.meters.setdefault(topic, DropMeter()) if has_header(msg_class) else None
            self._readers.append(self.create_subscription(
                msg_class, topic, self._writer_callback(connection, meter),
                self._qos_for(topic), raw=True))
            self._pending.remove(topic)
            self.get_logger().info(f'recording {topic} ({msgtype})')

    def _qos_for(self, topic: str) -> QoSProfile:
        """Reliable, unless a publisher is best effort (a reliable reader would not match)."""
        qos = QoSProfile(depth=100)
        publishers = self.get_publishers_info_by_topic(topic)
        if any(p.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for p in publishers):
            qos.reliability = ReliabilityPolicy.BEST_EFFORT
        return qos

    def _writer_callback(self, connection: Any, meter: Optional[DropMeter]) -> Any:
        def callback(rawdata: bytes) -> None:
            self._writer.write(connection, self.get_clock().now().nanoseconds, rawdata)
            self.count += 1
            stamp = header_stamp_ns(rawdata) if meter is not None else None
            if stamp is not None:
                meter.add(stamp)
        return callback


def _record_loop(node: Recorder, args: argparse.Namespace) -> None:
    """Spin until the duration or message count is reached; BagError if topics never show."""
    start = time.monotonic()
    while rclpy.ok():
        now = time.monotonic() - start
        if node.pending:
            node.discover()
            if node.pending and now > args.discovery_timeout and node.count == 0:
                raise BagError(f'no publisher for {", ".join(node.pending)} after '
                               f'{args.discovery_timeout:g} s; check the topic names and '
                               f'ROS_DOMAIN_ID')
        if now >= args.duration or (args.count > 0 and node.count >= args.count):
            if node.pending:
                node.get_logger().warning(f'never saw {", ".join(node.pending)}')
            return
        rclpy.spin_once(node, timeout_sec=0.05)


def record(args: argparse.Namespace, ros_args: Optional[list[str]] = None
           ) -> tuple[int, dict[str, DropMeter]]:
    """Record `args.topics` into `args.out`; return the messages written and drop meters."""
    out = Path(args.out)
    if out.exists():
        raise BagError(f'{out} exists; delete it or choose another --out')
    single = out.suffix == '.mcap'
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix='.record-') as tmp:
        bag_dir = Path(tmp) / out.stem if single else out
        rclpy.init(args=ros_args)
        node = None
        try:
            with Writer(bag_dir, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
                node = Recorder(writer, args.topics)
                try:
                    _record_loop(node, args)
                except (KeyboardInterrupt, ExternalShutdownException):
                    pass
        finally:
            if node is not None:
                node.destroy_node()
            rclpy.try_shutdown()
        if single:
            shutil.move(str(bag_dir / f'{out.stem}.mcap'), out)
    return node.count, node.meters


def loss_summary(meters: dict[str, DropMeter]) -> tuple[str, list[str]]:
    """Return the received/expected/lost part of the summary line, and loss warnings."""
    parts, warnings = [], []
    threshold = option('drop_warn_percent').default
    for topic, meter in meters.items():
        if not meter.known:
            parts.append(f'{topic}: received {meter.received}, too few to estimate loss')
            continue
        parts.append(f'{topic}: received {meter.received}, expected {meter.expected}, '
                     f'lost {meter.lost} ({meter.percent():.1f}%)')
        if meter.percent() > threshold:
            warnings.append(f'{meter.percent():.0f}% of the frames on {topic} were lost on the '
                            f'way (judged from their header stamps); '
                            f'{transport_fix(f"record {topic}/compressed")}')
    return '; '.join(parts), warnings


class Player(Node):
    """Publishes the raw messages of a bag with their original timing, scaled by a rate."""

    def __init__(self, connections: list[Any]) -> None:
        super().__init__('segcap_play')
        self._outputs: dict[int, Any] = {}
        for c in connections:
            self._outputs[c.id] = self.create_publisher(
                message_class(c.msgtype), c.topic, QoSProfile(depth=100))

    def wait_for_subscribers(self, timeout: float, settle: float = 0.5) -> None:
        """Wait up to `timeout` seconds until every topic has a subscriber, then `settle`
        seconds more: a publisher can see a subscriber before that subscriber has matched
        the publisher, and volatile messages sent in between are lost to it."""
        end = time.monotonic() + timeout
        while time.monotonic() < end and rclpy.ok():
            if all(p.get_subscription_count() > 0 for p in self._outputs.values()):
                time.sleep(settle)
                return
            time.sleep(0.05)
        missing = [p.topic_name for p in self._outputs.values()
                   if p.get_subscription_count() == 0]
        if missing:
            self.get_logger().warning(f'no subscriber on {", ".join(missing)}; playing anyway')

    def play_once(self, reader: Reader, connections: list[Any], rate: float) -> int:
        """Publish every message once, sleeping to keep the recorded spacing / rate."""
        start, first, count = time.monotonic(), None, 0
        for connection, timestamp, rawdata in reader.messages(connections=connections):
            first = timestamp if first is None else first
            delay = start + (timestamp - first) * 1e-9 / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if not rclpy.ok():
                break
            self._outputs[connection.id].publish(bytes(rawdata))
            count += 1
        return count


def _select(reader: Reader, topics: Optional[list[str]]) -> list[Any]:
    connections = list(reader.connections)
    if topics:
        wanted = {absolute_topic(t) for t in topics}
        connections = [c for c in connections if c.topic in wanted]
        if not connections:
            have = ', '.join(sorted({c.topic for c in reader.connections}))
            raise BagError(f'none of {", ".join(sorted(wanted))} is in the bag; it has: {have}')
    return connections


def play(args: argparse.Namespace, ros_args: Optional[list[str]] = None) -> int:
    """Play `args.path` (once, or until Ctrl-C with --loop); return messages published."""
    if args.rate <= 0:
        raise BagError(f'--rate must be > 0, got {args.rate}')
    if not Path(args.path).exists():
        raise BagError(f'{args.path}: no such file or directory')
    total = 0
    with Reader(args.path) as reader:
        connections = _select(reader, args.topics)
        rclpy.init(args=ros_args)
        node = Player(connections)
        try:
            node.wait_for_subscribers(args.wait_subscribers)
            while rclpy.ok():
                total += node.play_once(reader, connections, args.rate)
                if not args.loop:
                    break
            time.sleep(0.2)  # let the middleware hand the last (reliable) messages over
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            node.destroy_node()
            rclpy.try_shutdown()
    return total


def run_record(args: argparse.Namespace, ros_args: Optional[list[str]] = None) -> int:
    """`segcap record`: exit code 0 on success, 1 with a message on a user error."""
    use_large_frame_transport()  # before rclpy.init: Fast DDS reads it once
    try:
        count, meters = record(args, ros_args)
    except BagError as error:
        print(f'segcap record: {error}', file=sys.stderr)
        return 1
    losses, warnings = loss_summary(meters)
    print(f'recorded {count} messages to {args.out}' + (f'; {losses}' if losses else ''))
    for warning in warnings:
        print(f'segcap record: warning: {warning}', file=sys.stderr)
    return 0


def run_play(args: argparse.Namespace, ros_args: Optional[list[str]] = None) -> int:
    """`segcap play`: exit code 0 on success, 1 with a message on a user error."""
    use_large_frame_transport()  # before rclpy.init: Fast DDS reads it once
    try:
        count = play(args, ros_args)
    except BagError as error:
        print(f'segcap play: {error}', file=sys.stderr)
        return 1
    print(f'played {count} messages from {args.path}')
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of `python -m ros_segcap.ros.bag record|play ...`."""
    from rclpy.utilities import remove_ros_args
    argv = list(sys.argv if argv is None else argv)
    parser = argparse.ArgumentParser(prog='python -m ros_segcap.ros.bag')
    sub = parser.add_subparsers(dest='verb', required=True)
    add_record_arguments(sub.add_parser('record'))
    add_play_arguments(sub.add_parser('play'))
    args = parser.parse_args(remove_ros_args(argv)[1:])
    return (run_record if args.verb == 'record' else run_play)(args, ros_args=argv)


if __name__ == '__main__':
    sys.exit(main())
