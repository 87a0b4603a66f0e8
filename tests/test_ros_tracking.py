"""segcap_node (segcap-tiny) across real processes, fed a world sequence at 10 Hz.

Frame i of the stream has header.stamp.sec = FIRST + i, so every result names the exact
frame it was computed on and is checked against that frame's true masks.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import rosutil as ru

if not ru.HAVE_RCLPY:
    pytest.skip(ru.WHY_NO_RCLPY, allow_module_level=True)

from std_msgs.msg import String  # noqa: E402

from ros_segcap.core.pipeline import mask_iou  # noqa: E402
from ros_segcap.models.segcap.weights import SHIPPED_DIR  # noqa: E402
from ros_segcap.ros import convert  # noqa: E402
from ros_segcap.world.sequence import make_sequence  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.skipif(
    not (SHIPPED_DIR / 'segcap-tiny' / 'model.safetensors').is_file(),
    reason='no shipped segcap-tiny weights in ros_segcap/weights')]
STARTUP_S = 180.0
FIRST = 5000
# pan seed 4, as in test_tracker.PAN_SEED: the shipped model's first answer finds the target
SEQ = make_sequence('pan', seed=4, frames=12)
# Seed 3: the node's frames depend on its timing, and on this sequence the shipped model's
# tracker invents no mask at any frame stride (the model-level rate over seeds is
# tests/test_tracker.py's; this module checks what the node reports).
LEAVE = make_sequence('leave', seed=3, frames=16)


def there_and_back(n: int) -> list[int]:
    return list(range(n)) + list(range(n - 2, 0, -1))


class SequenceCamera:
    """Publish a sequence's frames at `rate` Hz, back and forth; the n-th frame published
    has stamp FIRST + n. `play` switches to another sequence."""

    def __init__(self, publisher, rate: float = 10.0) -> None:
        self._publisher, self._period = publisher, 1.0 / rate
        self.published = 0
        self.sent: dict[int, object] = {}  # stamp -> the sequence frame published with it
        self.play(SEQ)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def play(self, seq) -> None:
        self._seq, self._order, self._start = seq, there_and_back(len(seq)), self.published

    def frame(self, stamp: int):
        """The sequence frame that was published with `stamp`."""
        return self.sent[stamp]

    def _run(self) -> None:
        next_time = time.monotonic()
        while not self._stop.is_set():
            stamp = FIRST + self.published
            order = self._order
            frame = self._seq.frames[order[(self.published - self._start) % len(order)]]
            self.sent[stamp] = frame
            msg = convert.numpy_to_image(frame.image, 'rgb8')
            msg.header.stamp.sec, msg.header.frame_id = stamp, 'world'
            self._publisher.publish(msg)
            self.published += 1
            next_time += self._period
            self._stop.wait(max(0.0, next_time - time.monotonic()))

    def __enter__(self) -> 'SequenceCamera':
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


@pytest.fixture(scope='module')
def ros(tmp_path_factory):
    it = ru.built_interfaces()
    node, side = ru.start_node(tmp_path_factory.mktemp('node'), 'segcap_track',
                               {'model': 'segcap-tiny', 'continuous_rate': 10.0,
                                'track_reground_s': 0.0, 'publish_overlay': False})
    ns = node.namespace
    pub = side.node.create_publisher
    ros = ru.Ros(node, side, it, side.collect(it.ResultMsg, 'segcap/result'),
                 pub(ru.Image, 'image', ru.reliable(10)), pub(String, 'command', ru.reliable()),
                 None, None)
    try:
        ru.wait_for(lambda: ros.command.get_subscription_count() > 0 and
                    side.node.count_publishers(f'{ns}/segcap/result') > 0,
                    STARTUP_S, 'segcap_node to start', node)
        with SequenceCamera(ros.image) as camera:
            ru.wait_for(lambda: camera.published > 5, 10.0, 'the sequence camera to run')
            CAMERA.append(camera)
            yield ros
            CAMERA.clear()
    finally:
        side.close()
        code = node.stop()
    assert code == 0, node.explain(f'segcap_node exited with {code} on SIGINT')


CAMERA: list[SequenceCamera] = []  # the module's running camera


def of(ros, command: str) -> list:
    return ros.results.find(lambda r: r.command == command)


def test_track_command_keeps_the_id_over_the_sequence(ros):
    command = f'track {SEQ.phrase}'
    ros.command.publish(String(data=command))
    ru.wait_for(lambda: len(of(ros, command)) >= 10, 60.0, 'ten tracking results', ros.node)
    results = of(ros, command)[:10]
    assert all(r.status == 'ok' for r in results), [r.status for r in results]
    assert [list(r.ids) for r in results] == [[1]] * 10, 'the id must stay with the object'
    assert results[0].regrounded and not all(r.regrounded for r in results[1:]), \
        'later frames must be followed without the LLM'
    stamps = [r.header.stamp.sec for r in results]
    assert len(set(stamps)) == len(stamps), f'a frame was processed twice: {stamps}'
    for r in results:  # each mask against the truth of the frame its header names
        frame = CAMERA[0].frame(r.header.stamp.sec)
        mask = convert.image_to_mask(r.masks[0], *frame.image.shape[:2])
        iou = mask_iou(mask, frame.mask(SEQ.target))
        assert iou > 0.7, f'frame {r.header.stamp.sec}: IoU {iou:.2f} with the truth'
        assert r.match_scores[0] > 0.0 and r.header.frame_id == 'world'


def test_a_new_command_replaces_the_tracked_set(ros):
    other = next(f'the {o.colour} {o.kind}' for i, o in enumerate(SEQ.spec.objects)
                 if i != SEQ.target)
    command = f'track {other}'
    ros.command.publish(String(data=command))
    ru.wait_for(lambda: len(of(ros, command)) >= 3, 60.0, 'results of the new command',
                ros.node)
    old = f'track {SEQ.phrase}'
    count = len(of(ros, old))
    time.sleep(1.0)
    assert len(of(ros, old)) == count, 'the old command is still being tracked'
    first = of(ros, command)[0]
    assert first.regrounded and SEQ.phrase not in list(first.phrases)
    assert 1 not in list(first.ids), 'the old ids must not carry over'


def test_a_target_that_leaves_the_view_is_reported_lost(ros):
    """While the tracked object is out of view its result has an empty mask and a zero
    match score (nothing invented), and it keeps its id when it comes back."""
    camera = CAMERA[0]
    camera.play(LEAVE)  # its first 4 frames show the target (0.4 s at 10 Hz)
    start = FIRST + camera.published
    time.sleep(0.15)
    command = f'track {LEAVE.phrase}'
    ros.command.publish(String(data=command))

    def mine() -> list:  # this command's results on LEAVE's frames
        return [r for r in of(ros, command) if r.header.stamp.sec >= start]

    def absent(r) -> bool:
        return not camera.frame(r.header.stamp.sec).mask(LEAVE.target).any()

    def lost(r) -> bool:  # reported as tracked (with an id) on a frame without the target
        return absent(r) and len(r.ids) == 1
    ru.wait_for(lambda: sum(map(lost, mine())) >= 2 and
                sum(not absent(r) for r in mine()) >= 2, 60.0,
                'results with the target in view and after it left', ros.node)
    results = mine()
    assert all(r.status == 'ok' for r in results), [r.status for r in results]
    ids = {tuple(r.ids) for r in results} - {()}
    assert len(ids) == 1 and len(next(iter(ids))) == 1, f'the id must not change: {ids}'
    for r in filter(absent, results):  # nothing invented while it is out of view
        assert all(not convert.image_to_mask(m, 240, 320).any() for m in r.masks), \
            f'frame {r.header.stamp.sec}: a mask for a target out of view'
        assert all(score == 0.0 for score in r.match_scores)
    camera.play(SEQ)


def test_panoptic_mode_publishes_one_result_per_frame(ros):
    masks = ros.side.collect(ru.Image, 'segcap/mask', ru.reliable(50))
    ros.command.publish(String(data='stop tracking: what is on the table?'))
    assert ros.set_parameter('continuous_rate', 5.0).successful
    assert ros.set_parameter('mode', 'panoptic').successful
    ru.wait_for(lambda: len(of(ros, 'panoptic')) >= 6, 60.0, 'panoptic results', ros.node)
    assert ros.set_parameter('mode', 'command').successful
    results = of(ros, 'panoptic')
    stamps = [r.header.stamp.sec for r in results]
    assert len(set(stamps)) == len(stamps), f'a frame was published twice: {stamps}'
    for r in results[:6]:
        assert r.status == 'ok' and len(r.ids) == len(r.phrases) == len(r.masks) >= 3
        assert list(r.ids) == list(range(1, len(r.ids) + 1))
        assert 'table' in list(r.phrases) and r.stuff[list(r.phrases).index('table')]
    ru.wait_for(lambda: masks.find(lambda m: m.header.stamp.sec in stamps), 10.0,
                'an instance-id image with a result frame stamp', ros.node)
    for m in masks.find(lambda m: m.header.stamp.sec in stamps):
        r = results[stamps.index(m.header.stamp.sec)]
        values = set(np.unique(convert.image_to_numpy(m)).tolist()) - {0}
        assert values <= set(r.ids), f'ids in the mask image {values}, result {list(r.ids)}'
