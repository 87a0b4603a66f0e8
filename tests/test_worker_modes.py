"""The serving loop's panoptic mode and 'track ...' commands, without ROS (worker.py)."""
from __future__ import annotations

import time

import pytest

from ros_segcap.ros.modes import is_tracked
from ros_segcap.worker import Worker
from test_worker import FakeClock, FakePipeline, Outputs, wait_for


@pytest.fixture
def serving():
    pipeline, outputs, clock = FakePipeline(), Outputs(), FakeClock()
    kinds: list[str] = []

    def process(req):
        kinds.append(req.kind)
        return pipeline.process(req)
    worker = Worker(process=process, publish=outputs.publish,
                    publish_status=outputs.publish_status, frame_buffer=4, queue_size=2,
                    clock=clock)
    worker.sticky = is_tracked
    pipeline.worker = worker
    worker.start()
    yield worker, outputs, clock, kinds
    worker.stop()


def test_panoptic_mode_takes_each_new_frame_once_at_most_at_the_rate(serving):
    worker, outputs, clock, kinds = serving
    worker.panoptic, worker.continuous_rate = True, 2.0
    worker.add_frame('f1', 'pixels')
    wait_for(lambda: outputs.of('panoptic'), 'a panoptic result without any command')
    worker.add_frame('f2', 'pixels')
    clock.now += 0.3
    time.sleep(0.3)
    assert len(outputs.of('panoptic')) == 1, 'faster than continuous_rate'
    clock.now += 0.3
    wait_for(lambda: len(outputs.of('panoptic')) == 2, 'the second frame')
    clock.now += 5.0
    time.sleep(0.3)
    assert [o[3] for o in outputs.of('panoptic')] == ['f1', 'f2'], 'one result per frame'
    assert set(kinds) == {'panoptic'}
    worker.panoptic = False
    worker.add_frame('f3', 'pixels')
    clock.now += 5.0
    time.sleep(0.3)
    assert len(outputs.of('panoptic')) == 2, 'panoptic mode went on after it was switched off'


def test_a_track_command_reruns_without_continuous_until_another_command(serving):
    worker, outputs, clock, _ = serving
    worker.continuous_rate = 100.0
    worker.add_frame('f1', 'pixels')
    worker.command('track the red cup')
    wait_for(lambda: outputs.of('track the red cup'), 'the track command')
    worker.add_frame('f2', 'pixels')
    clock.now += 1.0
    wait_for(lambda: len(outputs.of('track the red cup')) == 2, 'a re-run on the new frame')
    worker.command('segment the bowl')  # an ordinary command replaces it
    wait_for(lambda: outputs.of('segment the bowl'), 'the new command')
    worker.add_frame('f3', 'pixels')
    clock.now += 1.0
    time.sleep(0.3)
    assert len(outputs.of('track the red cup')) == 2
    assert len(outputs.of('segment the bowl')) == 1, 'an ordinary command re-ran'
