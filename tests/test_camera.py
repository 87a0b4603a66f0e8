"""The camera publisher: its sources (folder, video, tabletop) and the camera process."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import rosutil as ru

if not ru.HAVE_RCLPY:
    pytest.skip(ru.WHY_NO_RCLPY, allow_module_level=True)
cv2 = pytest.importorskip('cv2')

from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from ros_segcap.ros import camera, commands  # noqa: E402

pytestmark = pytest.mark.ros
TIMEOUT = 60.0


@pytest.fixture
def ros_env(tmp_path, monkeypatch):
    return ru.private_ros_env(tmp_path, monkeypatch)


@pytest.fixture
def node(ros_env):
    yield from ru.plain_node('test_camera')


def camera_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    commands.add_camera_arguments(parser)
    return parser.parse_args(list(argv))


def test_image_folder_source_loops_in_name_order(tmp_path):
    pictures = [np.full((20, 30, 3), v, np.uint8) for v in (10, 20, 30)]
    for i, picture in enumerate(pictures):
        cv2.imwrite(str(tmp_path / f'{i}.png'), picture)
    (tmp_path / 'notes.txt').write_text('not an image')
    frames = camera.open_source(camera_args('--images', str(tmp_path)))
    got = [next(frames) for _ in range(4)]
    assert [int(f[0, 0, 0]) for f in got] == [10, 20, 30, 10]


def test_video_source_decodes_and_loops(tmp_path):
    path = tmp_path / 'clip.avi'
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 10, (64, 48))
    for value in (0, 120, 240):
        writer.write(np.full((48, 64, 3), value, np.uint8))
    writer.release()
    frames = camera.open_source(camera_args('--video', str(path)))
    got = [next(frames) for _ in range(5)]
    assert all(f.shape == (48, 64, 3) and f.dtype == np.uint8 for f in got)
    assert [round(float(f.mean()) / 120) for f in got] == [0, 1, 2, 0, 1]


def test_tabletop_source_size_and_bad_sources(tmp_path):
    frame = next(camera.open_source(camera_args('--size', '320x240')))
    assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8
    with pytest.raises(camera.SourceError, match='not a directory'):
        camera.open_source(camera_args('--images', str(tmp_path / 'nope')))
    with pytest.raises(camera.SourceError, match='no readable'):
        camera.open_source(camera_args('--images', str(tmp_path)))
    with pytest.raises(SystemExit):
        camera_args('--size', '640by480')


def test_tabletop_source_draws_the_chosen_world():
    from ros_segcap.world import TabletopCamera, render, sample_scene
    from ros_segcap.world.varied import render_varied, sample_varied_scene

    varied = next(camera.open_source(camera_args('--size', '320x240', '--seed', '7',
                                                 '--world', 'varied')))
    default = next(camera.open_source(camera_args('--size', '320x240', '--seed', '7',
                                                  '--world', 'default')))
    # the frame is a few-pixel crop of its scene's render plus noise: compare to both renders
    for frame, own, other in (
            (varied, render_varied(sample_varied_scene(7), 240, 320), render(sample_scene(7),
                                                                             240, 320)),
            (default, render(sample_scene(7), 240, 320), render_varied(sample_varied_scene(7),
                                                                       240, 320))):
        err_own = np.abs(frame.astype(int) - own.image).mean()
        assert err_own < np.abs(frame.astype(int) - other.image).mean() and err_own < 40
    # the demo's varied scene has exactly one red cup, and its objects stay put
    cam = TabletopCamera(240, 320, seed=commands.DEMO_SEEDS['varied'], world='varied')
    first = [(o.colour, o.kind) for o in cam.read().objects]
    assert first.count(('red', 'cup')) == 1
    for _ in range(40):
        frame = cam.read()
    assert [(o.colour, o.kind) for o in frame.objects] == first
    assert frame.image.shape == (240, 320, 3) and frame.panoptic.shape == (240, 320)
    with pytest.raises(ValueError, match='unknown world'):
        TabletopCamera(240, 320, world='mars')


def test_camera_process_publishes_best_effort_frames(ros_env, node):
    """The camera child publishes rgb8 frames that a sensor-data subscriber receives."""
    topic = f'/demotest_{os.getpid()}/image'
    stamps: list[float] = []
    frames: list[Image] = []

    def on_image(msg: Image) -> None:
        stamps.append(time.monotonic())
        frames.append(msg)

    node.create_subscription(Image, topic, on_image, qos_profile_sensor_data)
    child = subprocess.Popen(
        [sys.executable, '-m', 'ros_segcap.ros.camera', '--rate', '30', '--count', '2000',
         '--ros-args', '-r', f'image:={topic}'],
        env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        received = ru.spin_until(node, lambda: len(stamps) >= 45, TIMEOUT)
    finally:
        child.send_signal(2)  # SIGINT: the camera shuts down cleanly
        output, _ = child.communicate(timeout=TIMEOUT)
    assert received, f'got {len(stamps)} frames; camera output:\n{output}'
    assert child.returncode == 0, output
    msg = frames[-1]
    assert (msg.width, msg.height, msg.encoding, msg.step) == (640, 480, 'rgb8', 1920)
    assert msg.header.frame_id == 'camera'
    rate = (len(stamps) - 16) / (stamps[-1] - stamps[15])  # after discovery settles
    assert rate > 10.0, f'640x480 best effort at 30 Hz arrived at {rate:.1f} Hz'
