"""Large frames across processes: the default DDS profile, and frames lost from stamps.

The process tests run their children with the default environment: no Fast DDS profile
variable, no RMW_IMPLEMENTATION, a working directory without a profile file; each test has
its own ROS domain with localhost discovery. Run as a script, this file is the plain
publisher of the node test (`python tests/test_transport.py publish TOPIC SECONDS`): rclpy
with Fast DDS defaults, as a user's own camera driver would be.
"""
from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ros_segcap.ros import transport
from ros_segcap.ros.transport import PROFILE_VARS, DropMeter, use_large_frame_transport

ROOT = Path(__file__).resolve().parents[1]
PERIOD_NS = 1_000_000_000 // 15  # a 15 Hz camera
SKIP_EVERY = 3  # the plain publisher leaves every third stamp slot empty: 1/3 of frames lost


# ----- the profile every entry point sets -----------------------------------------------------

def test_profile_is_set_unless_the_user_chose_a_transport(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env: dict[str, str] = {}
    path = use_large_frame_transport(env)
    assert env == {'FASTDDS_DEFAULT_PROFILES_FILE': path} and Path(path).is_file()
    assert Path(path).name == 'fastdds_shm.xml'
    assert use_large_frame_transport({'RMW_IMPLEMENTATION': 'rmw_fastrtps_cpp'})
    for mine in ({'FASTDDS_DEFAULT_PROFILES_FILE': '/mine.xml'},
                 {'FASTRTPS_DEFAULT_PROFILES_FILE': '/mine.xml'},
                 {'RMW_IMPLEMENTATION': 'rmw_cyclonedds_cpp'}):
        env = dict(mine)
        assert use_large_frame_transport(env) == '' and env == mine
    (tmp_path / 'DEFAULT_FASTDDS_PROFILES.xml').write_text('<dds/>')
    env = {}
    assert use_large_frame_transport(env) == '' and env == {}


def test_profile_is_found_in_a_colcon_install(tmp_path, monkeypatch):
    """Outside the checkout, share/ros_segcap/config is found through the ament index."""
    prefix = tmp_path / 'install' / 'ros_segcap'
    (prefix / 'share' / 'ament_index' / 'resource_index' / 'packages').mkdir(parents=True)
    (prefix / 'share' / 'ament_index' / 'resource_index' / 'packages' / 'ros_segcap').touch()
    (prefix / 'share' / 'ros_segcap' / 'config').mkdir(parents=True)
    profile = prefix / 'share' / 'ros_segcap' / 'config' / 'fastdds_shm.xml'
    profile.write_text((ROOT / 'config' / 'fastdds_shm.xml').read_text())
    monkeypatch.setattr(transport, 'SOURCE_ROOT', tmp_path / 'no_checkout')
    monkeypatch.setattr(sys, 'prefix', str(tmp_path / 'venv'))
    monkeypatch.setenv('AMENT_PREFIX_PATH', str(prefix))
    monkeypatch.chdir(tmp_path)
    env: dict[str, str] = {}
    assert use_large_frame_transport(env) == str(profile)
    assert str(profile) in transport.transport_fix()


# ----- frames lost, from the stamps -----------------------------------------------------------

def meter_of(keep, n: int = 300, jitter_ns: int = 3_000_000, seed: int = 0) -> DropMeter:
    """A DropMeter fed the stamps of a jittery 15 Hz source whose frames `keep` lets through."""
    rng, meter = random.Random(seed), DropMeter()
    for k in range(n):
        if keep(k, rng):
            meter.add(k * PERIOD_NS + rng.randint(-jitter_ns, jitter_ns))
    return meter


def test_drop_meter_counts_the_frames_missing_from_the_cadence():
    whole = meter_of(lambda k, rng: True)
    assert (whole.received, whole.lost, whole.percent()) == (300, 0, 0.0)
    assert 14.8 < whole.source_hz() < 15.2
    gaps = meter_of(lambda k, rng: k % 4 != 3)  # frames 3, 7, ... never arrive
    assert gaps.received == 225 and gaps.lost == 74  # the last slot is after the last frame
    assert gaps.expected == 299 and 24.0 < gaps.recent_percent() < 26.0
    half = meter_of(lambda k, rng: rng.random() < 0.5, seed=1)
    assert abs(half.percent() - 100.0 * half.lost / half.expected) < 1e-9
    assert half.expected in range(295, 301) and 45.0 < half.percent() < 55.0
    assert 14.5 < half.source_hz() < 15.5


def test_drop_meter_ignores_pauses_restarts_and_too_few_frames():
    meter = DropMeter()
    for k in range(5):
        meter.add(k * PERIOD_NS)
    assert not meter.known and meter.lost == 0 and meter.source_hz() == 0.0
    for k in range(5, 20):
        meter.add(k * PERIOD_NS)
    meter.add(20 * PERIOD_NS + 5_000_000_000)  # the source paused for 5 s
    for k in range(10):  # then a bag loops: the stamps start again from the beginning
        meter.add(k * PERIOD_NS)
    assert meter.known and meter.received == 31 and meter.lost == 0


def test_header_stamp_is_read_from_the_serialized_message():
    serialization = pytest.importorskip('rclpy.serialization', reason='needs rclpy')
    from sensor_msgs.msg import CompressedImage, Image
    for msg in (Image(), CompressedImage()):
        msg.header.stamp.sec, msg.header.stamp.nanosec = 1_700_000_000, 123_456_789
        raw = serialization.serialize_message(msg)
        assert transport.header_stamp_ns(raw) == 1_700_000_000_123_456_789
    big_endian = b'\x00\x00\x00\x00' + (7).to_bytes(4, 'big') + (9).to_bytes(4, 'big')
    assert transport.header_stamp_ns(big_endian) == 7_000_000_009
    assert transport.header_stamp_ns(b'\x00\x01') is None


# ----- across real processes, default environment ---------------------------------------------

@pytest.fixture
def default_env(tmp_path, monkeypatch):
    """The children's environment: no profile variable, no RMW choice, a private domain."""
    pytest.importorskip('rclpy', reason='needs rclpy (ROS 2 from pip)')
    domain = str(random.SystemRandom().randint(1, 230))
    for name in PROFILE_VARS + ('RMW_IMPLEMENTATION',):
        monkeypatch.delenv(name, raising=False)
    for name, value in (('ROS_DOMAIN_ID', domain), ('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST'),
                        ('ROS_LOG_DIR', str(tmp_path / 'ros_log'))):
        monkeypatch.setenv(name, value)
    return dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1',
                RCUTILS_COLORIZED_OUTPUT='0')


def start(env: dict, cwd: Path, *args: str) -> subprocess.Popen:
    """Start a Python child in `cwd` (where Fast DDS finds no profile file)."""
    return subprocess.Popen([sys.executable, *args], env=env, cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen) -> str:
    """Interrupt a child (as Ctrl-C does), kill it if it hangs; return its output."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        return process.communicate(timeout=15)[0]
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()[0]


@pytest.mark.ros
def test_camera_to_record_keeps_large_frames(tmp_path, default_env):
    """640x480 rgb8 at 15 Hz, best effort, camera -> record: >= 90% of the frames kept."""
    from rclpy.serialization import deserialize_message
    from rosbags.rosbag2 import Reader
    from sensor_msgs.msg import Image

    topic, out, count = f'/transport_{os.getpid()}/image', tmp_path / 'rec.mcap', 76
    camera = start(default_env, tmp_path, '-m', 'ros_segcap.ros.camera', '--topic', topic,
                   '--rate', '15', '--size', '640x480')
    try:
        recorder = subprocess.run(
            [sys.executable, '-m', 'ros_segcap.ros.bag', 'record', '--out', str(out),
             '--topics', topic, '--count', str(count), '--duration', '25'],
            env=default_env, cwd=tmp_path, capture_output=True, text=True, timeout=35)
    finally:
        camera_output = stop(camera)
    output = recorder.stdout + recorder.stderr
    assert recorder.returncode == 0, f'{output}\ncamera:\n{camera_output}'
    with Reader(out) as reader:
        stamps = [deserialize_message(raw, Image).header.stamp for _, _, raw in reader.messages()]
    ns = sorted(s.sec * 1_000_000_000 + s.nanosec for s in stamps)
    sent = round((ns[-1] - ns[0]) / PERIOD_NS) + 1  # the camera stamps each frame it sends
    assert len(ns) >= count and len(ns) >= 0.9 * sent, \
        f'kept {len(ns)} of {sent} frames sent in {(ns[-1] - ns[0]) / 1e9:.1f} s:\n{output}'
    assert f'{topic}: received {len(ns)}, expected ' in recorder.stdout, output


def publish_with_gaps(topic: str, seconds: float) -> int:
    """A user's camera driver: plain rclpy, Fast DDS defaults, bgr8, sensor-data QoS.

    Frames go out on a 15 Hz schedule stamped with their slot, but every SKIP_EVERY-th slot
    stays empty: that share of the frames is lost as judged from the stamps, whatever the
    transport does. The frames are 320x240 (230 KB, within Fast DDS's default 512 KiB
    shared-memory segment): 640x480 ones from a default publisher arrive at anything from
    half the rate to none at all, which would make the test flaky.
    """
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node('plain_camera')
    publisher = node.create_publisher(Image, topic, qos_profile_sensor_data)
    msg = Image(height=240, width=320, encoding='bgr8', step=320 * 3)
    msg.data = bytes(320 * 240 * 3)
    first, start, k = node.get_clock().now().nanoseconds, time.monotonic(), 0
    try:
        for k in itertools.count():
            delay = start + k * PERIOD_NS / 1e9 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if time.monotonic() - start > seconds:
                break
            if k % SKIP_EVERY != SKIP_EVERY - 1:
                stamp = first + k * PERIOD_NS
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
                publisher.publish(msg)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    print(f'published {k - k // SKIP_EVERY} frames in {k} slots', flush=True)
    return 0


@pytest.mark.ros
def test_node_reports_the_frames_a_plain_publisher_loses(tmp_path, default_env):
    """/diagnostics shows 'frames lost (%)' (>= the share of empty slots) and says the fix."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    ns = f'/transport_{os.getpid()}'
    node = start(default_env, tmp_path, '-m', 'ros_segcap.ros.node', '--ros-args',
                 '-r', f'__ns:={ns}', '-p', 'autostart:=true', '-p', 'model:=tiny-random',
                 '-p', 'diagnostics_period:=0.5')
    camera = start(default_env, tmp_path, __file__, 'publish', f'{ns}/image', '35')
    statuses: list = []
    rclpy.init()
    listener = rclpy.create_node('transport_listener')
    listener.create_subscription(
        DiagnosticArray, '/diagnostics',
        lambda msg: statuses.extend(s for s in msg.status if s.hardware_id.startswith(ns)), 10)

    def lossy() -> list:
        return [s for s in statuses if any(
            kv.key == 'frames lost (%)' and float(kv.value) >= 30.0 for kv in s.values)]

    try:
        end = time.monotonic() + 35.0
        while not lossy() and time.monotonic() < end and node.poll() is None:
            rclpy.spin_once(listener, timeout_sec=0.1)
    finally:
        listener.destroy_node()
        rclpy.try_shutdown()
        camera_output, node_output = stop(camera), stop(node)
    last = statuses[-1] if statuses else None
    assert lossy(), f'last status: {last}\nnode:\n{node_output}\ncamera:\n{camera_output}'
    status = lossy()[0]
    values = {kv.key: kv.value for kv in status.values}
    assert 13.0 < float(values['source rate (Hz)']) < 17.0, values
    assert status.level == DiagnosticStatus.WARN and 'lost on the way' in status.message
    for fix in ('FASTDDS_DEFAULT_PROFILES_FILE=', 'fastdds_shm.xml', 'compressed'):
        assert fix in status.message and fix in node_output, node_output


if __name__ == '__main__':
    if sys.argv[1:2] != ['publish'] or len(sys.argv) != 4:
        sys.exit(f'usage: {sys.argv[0]} publish TOPIC SECONDS')
    sys.exit(publish_with_gaps(sys.argv[2], float(sys.argv[3])))
