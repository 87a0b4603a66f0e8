"""`segcap demo` and its parts: the Foxglove bridge, signals, the CLI registration.

The end-to-end demo runs the real segcap_node (model tiny-random) as a child process; it
skips while ros_segcap.ros.node is absent. ROS tests use a private domain per test.
"""
from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import rosutil as ru

if not ru.HAVE_RCLPY:
    pytest.skip(ru.WHY_NO_RCLPY, allow_module_level=True)
cv2 = pytest.importorskip('cv2')

import rclpy  # noqa: E402
from rclpy.qos import QoSProfile  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402


pytestmark = pytest.mark.ros
TIMEOUT = 60.0


@pytest.fixture
def ros_env(tmp_path, monkeypatch):
    """A private ROS domain for this test, for the test process and its children."""
    return ru.private_ros_env(tmp_path, monkeypatch)


@pytest.fixture
def node(ros_env):
    """An rclpy node in the test process (in the test's domain)."""
    yield from ru.plain_node('test_demo')


# ---------------------------------------------------------------- Foxglove bridge

class WebSocket:
    """Just enough of a websocket client (RFC 6455) to talk to the Foxglove server."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(('127.0.0.1', port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((
            'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n'
            f'Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n'
            'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: foxglove.sdk.v1\r\n\r\n'
        ).encode())
        self.buffer = b''
        while b'\r\n\r\n' not in self.buffer:
            self.buffer += self.sock.recv(4096)
        head, self.buffer = self.buffer.split(b'\r\n\r\n', 1)
        assert b' 101 ' in head.split(b'\r\n')[0], head

    def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self.buffer += self.sock.recv(1 << 16)
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def receive(self) -> tuple[int, bytes]:
        """Return (opcode, payload) of the next server frame (never fragmented here)."""
        b0, b1 = self._take(2)
        size = b1 & 0x7F
        if size >= 126:
            size = int.from_bytes(self._take(2 if size == 126 else 8), 'big')
        return b0 & 0x0F, self._take(size)

    def send_json(self, message: dict) -> None:
        payload, mask = json.dumps(message).encode(), os.urandom(4)
        assert len(payload) < 126
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)


def test_foxglove_bridge_streams_image_and_caption(node):
    from ros_segcap.ros.foxglove_bridge import FoxgloveBridge
    pid = os.getpid()
    image_topic, text_topic = f'/fox_{pid}/image', f'/fox_{pid}/caption'
    bridge = FoxgloveBridge(node, port=0, image_topics=(image_topic,), text_topics=(text_topic,))
    try:
        assert bridge.ws_url == f'ws://127.0.0.1:{bridge.port}'
        assert 'ws%3A%2F%2F127.0.0.1' in bridge.app_url
        ws = WebSocket(bridge.port)
        info = json.loads(ws.receive()[1])
        advertise = json.loads(ws.receive()[1])
        assert info['op'] == 'serverInfo' and advertise['op'] == 'advertise'
        channels = {c['topic']: c for c in advertise['channels']}
        assert channels[image_topic]['schemaName'] == 'foxglove.RawImage'
        assert channels[text_topic]['encoding'] == 'json'
        ws.send_json({'op': 'subscribe', 'subscriptions': [
            {'id': 1, 'channelId': channels[image_topic]['id']},
            {'id': 2, 'channelId': channels[text_topic]['id']}]})

        image_pub = node.create_publisher(Image, image_topic, QoSProfile(depth=5))
        text_pub = node.create_publisher(String, text_topic, QoSProfile(depth=5))
        pixels = np.random.default_rng(1).integers(0, 256, (24, 32, 3), np.uint8).tobytes()
        image = Image(height=24, width=32, encoding='rgb8', step=96)
        image.data = pixels

        def publish() -> None:  # again and again: the server may register us late
            image_pub.publish(image)
            text_pub.publish(String(data='<p> the red cup </p> [SEG].'))

        node.create_timer(0.2, publish)
        stop = threading.Event()
        spinner = threading.Thread(target=lambda: [rclpy.spin_once(node, timeout_sec=0.05)
                                                   for _ in iter(stop.is_set, True)])
        spinner.start()
        got = {}
        try:
            while len(got) < 2:  # the socket times out after 10 s without data
                opcode, payload = ws.receive()
                if opcode == 2 and payload[0] == 1:  # binary "message data"
                    (subscription,) = struct.unpack_from('<I', payload, 1)
                    got[subscription] = payload[13:]
        finally:
            stop.set()
            spinner.join(10)
        assert pixels in got[1]  # RawImage protobuf carries the pixel bytes as they are
        assert json.loads(got[2]) == {'data': '<p> the red cup </p> [SEG].'}
    finally:
        bridge.close()


# ---------------------------------------------------------------- the demo end to end

def _node_available() -> bool:
    import importlib.util
    return importlib.util.find_spec('ros_segcap.ros.node') is not None


needs_node = pytest.mark.skipif(not _node_available(),
                                reason='ros_segcap.ros.node (segcap_node) is not there yet')


def run_demo(tmp_path: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, '-m', 'ros_segcap.ros.demo', '--out', str(tmp_path / 'out'), *args],
        env=dict(env, OMP_NUM_THREADS='1'), capture_output=True, text=True, timeout=600)
    print(result.stdout, result.stderr, sep='\n')  # shown by pytest on failure
    return result


class Lines:
    """Collects a child's output lines in a thread, so the test can wait for one."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self.thread = threading.Thread(target=lambda: self.lines.extend(process.stdout),
                                       daemon=True)
        self.thread.start()

    def wait_for(self, text: str, timeout: float) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            found = [line for line in list(self.lines) if text in line]
            if found:
                return found[0]
            time.sleep(0.1)
        raise AssertionError(f'no {text!r} within {timeout} s; output:\n' + ''.join(self.lines))


@pytest.mark.slow
@needs_node
def test_demo_end_to_end_with_foxglove_serve(tmp_path, ros_env):
    """Camera + node processes, one command, answer + overlay; --serve streams until SIGINT."""
    out = tmp_path / 'out'
    demo = subprocess.Popen(
        [sys.executable, '-m', 'ros_segcap.ros.demo', '--model', 'tiny-random', '--out',
         str(out), '--timeout', '240', '--serve', '--port', '0'],
        env=dict(ros_env, OMP_NUM_THREADS='1'), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    lines = Lines(demo)
    try:
        port = int(re.search(r'ws://127\.0\.0\.1:(\d+)', lines.wait_for('ws://', 60))[1])
        lines.wait_for('serving until Ctrl-C', 400)
        ws = WebSocket(port)
        ws.receive()  # serverInfo
        channels = {c['topic']: c['id'] for c in json.loads(ws.receive()[1])['channels']}
        assert {'/image', '/segcap/overlay', '/segcap/mask', '/segcap/caption'} <= set(channels)
        ws.send_json({'op': 'subscribe', 'subscriptions': [{'id': 7,
                                                           'channelId': channels['/image']}]})
        opcode, payload = ws.receive()
        while opcode != 2:
            opcode, payload = ws.receive()
        assert payload[0] == 1 and len(payload) > 640 * 480 * 3  # a live camera frame
    finally:
        demo.send_signal(signal.SIGINT)
        demo.wait(60)
        lines.thread.join(10)
    output = ''.join(lines.lines)
    assert demo.returncode == 0, output
    assert 'answer:' in output and 'latency:' in output and 'stopping' in output
    overlay = cv2.imread(str(out / 'overlay.png'))
    assert overlay is not None and overlay.shape == (480, 640, 3), output
    assert cv2.imread(str(out / 'mask.png'), cv2.IMREAD_UNCHANGED).shape == (480, 640)


@needs_node
def test_demo_reports_a_failing_camera(tmp_path, ros_env):
    result = run_demo(tmp_path, ros_env, '--model', 'tiny-random', '--timeout', '60',
                      '--images', str(tmp_path / 'no_such_folder'))
    assert result.returncode == 1
    assert 'camera process exited with code 1' in result.stderr
    assert 'not a directory' in result.stderr  # the child's own message is shown


# ---------------------------------------------------------------- CLI registration

def run_probe(probe: str) -> str:
    """Run Python code in a fresh interpreter; it must exit 0. Return its stdout."""
    result = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_commands_register_subcommands_without_importing_rclpy():
    probe = ('import argparse, sys\n'
             'from ros_segcap.ros import commands\n'
             'parser = argparse.ArgumentParser()\n'
             'commands.register(parser.add_subparsers(dest="cmd"))\n'
             'for argv in (["demo", "--serve", "--port", "0"], ["camera", "--size", "320x240"],\n'
             '             ["record", "--out", "a.mcap", "--topics", "image", "segcap/caption"],\n'
             '             ["play", "a.mcap", "--rate", "2"]):\n'
             '    args = parser.parse_args(argv)\n'
             '    assert callable(args.func), argv\n'
             'assert "rclpy" not in sys.modules, "commands must import rclpy lazily"\n'
             'print(parser.parse_args(["demo"]).command)\n')
    assert run_probe(probe).strip() == 'segment the red cup'


def test_demo_knows_when_the_model_is_untrained(tmp_path):
    import json

    from ros_segcap.models.segcap.weights import weights_warning
    for trained in (True, False):
        d = tmp_path / str(trained)
        d.mkdir()
        (d / 'config.json').write_text(json.dumps({'trained': trained}))
        warning = weights_warning(str(d))
        assert (warning is None) is trained
        if not trained:
            assert 'trained: false' in warning and 'README.md' in warning
    assert weights_warning(str(tmp_path / 'missing' / 'dir')) is None  # the node reports it
    assert 'meaningless' in weights_warning('tiny-random')  # a name with nothing shipped


def test_a_signal_stops_the_demo_only_at_a_safe_point():
    """SIGINT must not raise inside arbitrary code (rclpy's C++ take_message turned it into a
    RuntimeError that killed the demo); spin_until raises KeyboardInterrupt at its next turn."""
    from ros_segcap.ros import demo
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        demo.interrupt_on_signals()
        for signum in (signal.SIGINT, signal.SIGTERM):
            demo.STOP.clear()
            os.kill(os.getpid(), signum)
            time.sleep(0.05)  # the handler has run by now, and raised nothing here
            assert demo.STOP.is_set()
            with pytest.raises(KeyboardInterrupt):
                demo.spin_until(None, [], lambda: False, 5.0)
    finally:
        demo.STOP.clear()
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def test_sigint_while_spinning_ends_rclpy_cleanly_and_interrupts_only_while_flagged():
    """raise_while: once spinning, Ctrl-C ends spin via rclpy's shutdown (a safe point);
    while the flag is set (model loading) it raises KeyboardInterrupt as usual."""
    probe = ('import os, signal, sys, threading, time\n'
             'import rclpy\n'
             'from rclpy.executors import ExternalShutdownException\n'
             'from ros_segcap.ros.sigint import raise_while\n'
             'flag = threading.Event()\n'
             'flag.set()\n'
             'raise_while(flag)\n'
             'rclpy.init()\n'
             'try:\n'
             '    os.kill(os.getpid(), signal.SIGINT)\n'
             '    time.sleep(5)\n'
             '    print("not interrupted")\n'
             'except KeyboardInterrupt:\n'
             '    print("interrupted while flagged")\n'
             'rclpy.try_shutdown()\n'
             'rclpy.init()\n'
             'flag.clear()\n'
             'node = rclpy.create_node("probe")\n'
             'threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()\n'
             'try:\n'
             '    rclpy.spin(node)\n'
             'except ExternalShutdownException:\n'
             '    print("spin ended by shutdown")\n')
    out = run_probe(probe)
    assert out.split('\n')[:2] == ['interrupted while flagged', 'spin ended by shutdown'], out


def test_a_stop_signal_inside_a_callback_python_ignores_prints_nothing():
    """StopSignals: an interrupt that lands in a weakref callback (where Python can only
    print it as 'Exception ignored') is dropped silently; the stop stays requested."""
    probe = ('import gc, os, signal, weakref\n'
             'from ros_segcap.ros.sigint import StopSignals\n'
             'signals = StopSignals().install()\n'
             'signals.interrupt.set()\n'
             'class Thing: pass\n'
             'def callback(ref):\n'
             '    os.kill(os.getpid(), signal.SIGINT)\n'
             '    for _ in range(100000): pass\n'
             'thing = Thing()\n'
             'ref = weakref.ref(thing, callback)\n'
             'del thing\n'
             'gc.collect()\n'
             'print("requested" if signals.requested.is_set() else "not requested")\n'
             'def other(ref):\n'
             '    raise ValueError("a real error")\n'
             'thing = Thing()\n'
             'ref = weakref.ref(thing, other)\n'
             'del thing\n')
    result = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert result.returncode == 0 and result.stdout == 'requested\n', result
    assert 'KeyboardInterrupt' not in result.stderr, result.stderr
    assert 'ValueError: a real error' in result.stderr, 'other ignored errors must still print'
