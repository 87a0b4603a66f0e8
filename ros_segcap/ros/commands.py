"""`segcap` subcommands that need ROS: demo, camera, record, play.

This module only builds argument parsers; rclpy and the message packages are imported inside
the command functions, so `segcap infer` and the other core commands work without ROS.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ros_segcap.cli import add_option_flags
from ros_segcap.ros.demo_track import add_track_arguments

DEFAULT_COMMAND = 'segment the red cup'
# test-split scenes (never trained on) with one red cup, per world of the simulated camera
DEMO_SEEDS = {'default': 2_000_009, 'varied': 2_000_311}
DEMO_WORLD = 'varied'
DEMO_SEED = DEMO_SEEDS[DEMO_WORLD]


def image_size(text: str) -> tuple[int, int]:
    """Parse WIDTHxHEIGHT, e.g. 640x480."""
    try:
        width, height = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected WIDTHxHEIGHT like 640x480, got {text!r}')
    if width < 16 or height < 16:
        raise argparse.ArgumentTypeError(f'{text}: width and height must be at least 16')
    return width, height


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the camera source options (tabletop frames unless one file source is given)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument('--images', type=Path, metavar='DIR',
                       help='publish the images of DIR (png/jpg/bmp), looping')
    group.add_argument('--video', type=Path, metavar='FILE',
                       help='publish the frames of a video file, looping')
    group.add_argument('--bag', type=Path, metavar='FILE',
                       help='publish the image topic of a rosbag2 (MCAP) file, looping')
    parser.add_argument('--rate', type=float, default=15.0, metavar='HZ',
                        help='publishing rate in frames per second (default: 15)')
    parser.add_argument('--world', default=DEMO_WORLD, choices=tuple(DEMO_SEEDS),
                        help='simulated tabletop world: varied (domain-randomised, the '
                             'default) or default (the plain first renderer)')
    parser.add_argument('--seed', type=int, default=None,
                        help='tabletop scene seed (default: a test-split scene of the world '
                             'with one red cup)')
    parser.add_argument('--size', type=image_size, default=(640, 480), metavar='WxH',
                        help='tabletop frame size (default: 640x480)')
    parser.add_argument('--scene-seconds', type=float, default=0.0, metavar='S',
                        help='show a new tabletop scene every S seconds (default: 0 = never)')


def add_camera_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of the camera publisher process."""
    add_source_arguments(parser)
    parser.add_argument('--topic', default='image',
                        help='sensor_msgs/Image topic to publish (default: image)')
    parser.add_argument('--frame-id', default='camera', help='header.frame_id of the frames')
    parser.add_argument('--reliable', action='store_true',
                        help='publish with reliable QoS (default: best effort, as drivers do)')
    parser.add_argument('--count', type=int, default=0,
                        help='stop after this many frames (default: 0 = run until Ctrl-C)')


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of `segcap demo`."""
    parser.add_argument('--command', default=DEFAULT_COMMAND,
                        help=f'the command to send (default: "{DEFAULT_COMMAND}")')
    add_option_flags(parser, ('model', 'backend'))  # the node's parameters
    add_source_arguments(parser)
    parser.add_argument('--out', type=Path, default=Path('out/demo'), metavar='DIR',
                        help='where overlay.png, mask.png and the child logs go')
    parser.add_argument('--timeout', type=float, default=300.0, metavar='S',
                        help='seconds to wait for the node and then for the result')
    parser.add_argument('--serve', action='store_true',
                        help='also stream image, overlay and caption to a Foxglove websocket '
                             'on 127.0.0.1 and stay up until Ctrl-C')
    parser.add_argument('--port', type=int, default=8765,
                        help='websocket port for --serve (default: 8765; 0 = any free port)')
    add_track_arguments(parser)


def add_record_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of `segcap record`."""
    parser.add_argument('--out', type=Path, required=True, metavar='FILE.mcap',
                        help='output: a single .mcap file, or a rosbag2 directory otherwise')
    parser.add_argument('--topics', nargs='+', default=['image'], metavar='TOPIC',
                        help='topics to record (default: image)')
    parser.add_argument('--duration', type=float, default=10.0, metavar='S',
                        help='seconds to record (default: 10; Ctrl-C stops early)')
    parser.add_argument('--count', type=int, default=0,
                        help='stop after this many messages in total (default: no limit)')
    parser.add_argument('--discovery-timeout', type=float, default=10.0, metavar='S',
                        help='seconds to wait for the topics to appear (default: 10)')


def add_play_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of `segcap play`."""
    parser.add_argument('path', type=Path, help='a .mcap file or a rosbag2 directory')
    parser.add_argument('--rate', type=float, default=1.0,
                        help='playback speed factor (default: 1.0)')
    parser.add_argument('--topics', nargs='+', default=None, metavar='TOPIC',
                        help='play only these topics (default: all)')
    parser.add_argument('--loop', action='store_true', help='play again until Ctrl-C')
    parser.add_argument('--wait-subscribers', type=float, default=0.0, metavar='S',
                        help='wait up to S seconds for each topic to have a subscriber')


def _run_demo(args: argparse.Namespace) -> int:
    from ros_segcap.ros import demo
    return demo.run(args)


def _run_camera(args: argparse.Namespace) -> int:
    from ros_segcap.ros import camera
    return camera.run(args)


def _run_record(args: argparse.Namespace) -> int:
    from ros_segcap.ros import bag
    return bag.run_record(args)


def _run_play(args: argparse.Namespace) -> int:
    from ros_segcap.ros import bag
    return bag.run_play(args)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ROS subcommands (demo, camera, record, play) to the `segcap` parser."""
    demo = subparsers.add_parser(
        'demo', help='run camera + node, send a command, print the answer, save the overlay')
    add_demo_arguments(demo)
    demo.set_defaults(func=_run_demo)

    camera = subparsers.add_parser('camera', help='publish camera frames on a topic')
    add_camera_arguments(camera)
    camera.set_defaults(func=_run_camera)

    record = subparsers.add_parser('record', help='record topics to a rosbag2 MCAP file')
    add_record_arguments(record)
    record.set_defaults(func=_run_record)

    play = subparsers.add_parser('play', help='replay a rosbag2 MCAP file')
    add_play_arguments(play)
    play.set_defaults(func=_run_play)
