"""Camera publisher process: tabletop frames, an image folder, a video or a bag, at a rate.

Run it with `segcap camera`, `segcap_camera` or `python -m ros_segcap.ros.camera`; ROS
arguments (`--ros-args -r image:=/cam/image`) are accepted after the options. Frames are
published as rgb8 sensor_msgs/Image stamped with the time of publishing, with best-effort
(sensor-data) QoS unless --reliable, like a camera driver, over the large-frame DDS profile
unless one is set (transport.py).
"""
from __future__ import annotations

import argparse
import itertools
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from ros_segcap.ros.commands import add_camera_arguments
from ros_segcap.ros.convert import compressed_to_rgb, image_to_rgb
from ros_segcap.ros.sigint import raise_while
from ros_segcap.ros.transport import use_large_frame_transport

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')


class SourceError(RuntimeError):
    """A frame source cannot be opened or holds no frames; the message says why."""


def rgb_to_image(rgb: np.ndarray, frame_id: str = '') -> Image:
    """Build an rgb8 Image from (H, W, 3) uint8 (bytes assignment: one fast copy)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise SourceError(f'a frame must be (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}')
    msg = Image()
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = 'rgb8'
    msg.step = msg.width * 3
    msg.data = np.ascontiguousarray(rgb).tobytes()
    return msg


def _read_rgb(path: Path) -> Optional[np.ndarray]:
    import cv2
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def image_dir_frames(folder: Path) -> list[np.ndarray]:
    """Load every readable image of `folder` (sorted by name) as (H, W, 3) uint8 RGB."""
    if not folder.is_dir():
        raise SourceError(f'--images {folder}: not a directory')
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    frames = [f for f in (_read_rgb(p) for p in paths) if f is not None]
    if not frames:
        raise SourceError(f'--images {folder}: no readable {"/".join(IMAGE_SUFFIXES)} files')
    return frames


def video_frames(path: Path) -> Iterator[np.ndarray]:
    """Yield the frames of a video as RGB, reopening it at the end (endless)."""
    import cv2
    if not path.is_file():
        raise SourceError(f'--video {path}: no such file')
    while True:
        capture = cv2.VideoCapture(str(path))
        count = 0
        try:
            while True:
                ok, bgr = capture.read()
                if not ok:
                    break
                count += 1
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            capture.release()
        if count == 0:
            raise SourceError(f'--video {path}: OpenCV could not decode any frame')


def _decode_bag_image(rawdata: bytes, msgtype: str) -> np.ndarray:
    from rclpy.serialization import deserialize_message
    if msgtype == 'sensor_msgs/msg/Image':
        return np.array(image_to_rgb(deserialize_message(rawdata, Image)))
    return np.array(compressed_to_rgb(deserialize_message(rawdata, CompressedImage)))


def bag_frames(path: Path) -> Iterator[np.ndarray]:
    """Yield the frames of the first image topic of a rosbag2 file, looping (endless)."""
    from rosbags.rosbag2 import Reader
    if not path.exists():
        raise SourceError(f'--bag {path}: no such file or directory')
    while True:
        with Reader(path) as reader:
            connections = [c for c in reader.connections if c.msgtype in IMAGE_TYPES]
            if not connections:
                topics = ', '.join(f'{c.topic} ({c.msgtype})' for c in reader.connections)
                raise SourceError(f'--bag {path}: no sensor_msgs Image or CompressedImage '
                                  f'topic; it has: {topics or "nothing"}')
            first = connections[0]
            for connection, _, rawdata in reader.messages(connections=[first]):
                yield _decode_bag_image(rawdata, connection.msgtype)


def photo_frames() -> list[np.ndarray]:
    """Real photos from scikit-image: the fallback scene when the tabletop world is absent."""
    from skimage import data
    return [data.coffee()]


def tabletop_frames(args: argparse.Namespace) -> Iterator[np.ndarray]:
    """Endless frames of a procedural tabletop scene (ros_segcap.world), or of a photo."""
    try:
        from ros_segcap.world import TabletopCamera
    except ImportError:
        return itertools.cycle(photo_frames())
    width, height = args.size
    period = round(args.scene_seconds * args.rate) if args.scene_seconds > 0 else 2 ** 62
    from ros_segcap.ros.commands import DEMO_SEEDS
    seed = DEMO_SEEDS[args.world] if args.seed is None else args.seed
    camera = TabletopCamera(height, width, seed=seed, scene_period=max(period, 1),
                            world=args.world)
    return camera.frames()


def open_source(args: argparse.Namespace) -> Iterator[np.ndarray]:
    """Return an endless iterator of RGB frames for the source chosen on the command line."""
    if args.images is not None:
        return itertools.cycle(image_dir_frames(args.images))
    if args.video is not None:
        return video_frames(args.video)
    if args.bag is not None:
        return bag_frames(args.bag)
    return tabletop_frames(args)


class CameraPublisher(Node):
    """Publishes frames from an iterator at a fixed rate; knows nothing about the model."""

    def __init__(self, frames: Iterator[np.ndarray], *, topic: str = 'image',
                 frame_id: str = 'camera', reliable: bool = False) -> None:
        super().__init__('segcap_camera')
        qos = QoSProfile(depth=10) if reliable else qos_profile_sensor_data
        if reliable:
            qos.reliability = ReliabilityPolicy.RELIABLE
        self._publisher = self.create_publisher(Image, topic, qos)
        self._frames = frames
        self._frame_id = frame_id
        self.published = 0

    @property
    def topic_name(self) -> str:
        """The resolved topic the frames go to."""
        return self._publisher.topic_name

    def publish_next(self) -> None:
        """Publish the next frame, stamped now."""
        msg = rgb_to_image(next(self._frames), self._frame_id)
        msg.header.stamp = self.get_clock().now().to_msg()
        self._publisher.publish(msg)
        self.published += 1


def publish_loop(node: CameraPublisher, rate: float, count: int = 0) -> None:
    """Publish at `rate` Hz on a steady schedule until `count` frames or shutdown."""
    period = 1.0 / rate
    next_time = time.monotonic()
    while rclpy.ok() and (count <= 0 or node.published < count):
        try:
            node.publish_next()
        except RuntimeError:  # rclpy's RCLError
            if rclpy.ok():
                raise
            return  # Ctrl-C shut the context down between the check and the publish
        next_time += period
        delay = next_time - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:  # fell behind (slow source): restart the schedule instead of bursting
            next_time = time.monotonic()


def run(args: argparse.Namespace, ros_args: Optional[list[str]] = None) -> int:
    """Run the camera publisher until Ctrl-C (or --count frames); return an exit code."""
    use_large_frame_transport()  # before rclpy.init: Fast DDS reads it once
    if args.rate <= 0:
        print(f'segcap camera: --rate must be > 0, got {args.rate}', file=sys.stderr)
        return 2
    try:
        frames = open_source(args)
        first = next(frames)
    except SourceError as error:
        print(f'segcap camera: {error}', file=sys.stderr)
        return 1
    raise_while(threading.Event())  # Ctrl-C: rclpy shuts down, the loop sees rclpy.ok()
    rclpy.init(args=ros_args)
    node = CameraPublisher(itertools.chain([first], frames), topic=args.topic,
                           frame_id=args.frame_id, reliable=args.reliable)
    h, w = first.shape[:2]
    qos = 'reliable' if args.reliable else 'best effort'
    node.get_logger().info(f'publishing {w}x{h} rgb8 frames on {node.topic_name} '
                           f'at {args.rate:g} Hz ({qos})')
    try:
        publish_loop(node, args.rate, args.count)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except SourceError as error:
        node.get_logger().error(str(error))
        return 1
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of `segcap_camera` / `python -m ros_segcap.ros.camera`."""
    from rclpy.utilities import remove_ros_args
    argv = list(sys.argv if argv is None else argv)
    parser = argparse.ArgumentParser(prog='segcap_camera', description=__doc__.splitlines()[0])
    add_camera_arguments(parser)
    args = parser.parse_args(remove_ros_args(argv)[1:])
    return run(args, ros_args=argv)


if __name__ == '__main__':
    sys.exit(main())
