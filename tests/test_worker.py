"""The serving loop without ROS (ros_segcap/worker.py): a fake pipeline, real threads."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

import pytest

from ros_segcap.worker import (STATUS_DROPPED, STATUS_EMPTY, STATUS_NO_IMAGE, STATUS_STOPPING,
                               Request, Worker)

WAIT_S = 10.0


def wait_for(condition: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f'timed out waiting for {what}')


class FakeClock:
    """A monotonic clock that moves only when the test says."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakePipeline:
    """Encodes a frame key once (as the core cache does); blocks while `gate` is closed."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.encoded: list[int] = []
        self.started: list[str] = []
        self.worker: Worker = None

    def process(self, req: Request) -> tuple[Any, Any]:
        self.started.append(req.command)
        while not self.gate.wait(0.01):
            if self.worker.cancelled(req):
                return ('cancelled', req.frame.key), None
        if req.frame.key not in self.encoded:
            self.encoded.append(req.frame.key)
        return ('ok', req.frame.key), req.frame.header


class Outputs:
    """What the worker published: (command, status, frame key, frame header) per answer."""

    def __init__(self) -> None:
        self.items: list[tuple] = []
        self.fail_next = False

    def publish(self, req: Request, result: Any, header: Any) -> Any:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError('publisher gone')
        self.items.append((req.command, result[0], result[1], header))
        return result[0]

    def publish_status(self, req: Request, status: str) -> Any:
        self.items.append((req.command, status, None, None))
        return status

    def of(self, command: str) -> list[tuple]:
        return [item for item in self.items if item[0] == command]


@pytest.fixture
def serving():
    pipeline, outputs, clock = FakePipeline(), Outputs(), FakeClock()
    worker = Worker(process=pipeline.process, publish=outputs.publish,
                    publish_status=outputs.publish_status, frame_buffer=4, queue_size=2,
                    clock=clock)
    pipeline.worker = worker
    worker.start()
    yield worker, pipeline, outputs, clock
    pipeline.gate.set()
    worker.stop()


def test_a_command_takes_the_newest_frame_at_its_arrival(serving):
    worker, pipeline, outputs, _ = serving
    pipeline.gate.clear()
    worker.add_frame('frame 1', 'pixels 1')
    worker.command('first')
    wait_for(lambda: pipeline.started, 'the first command to start')
    worker.add_frame('frame 2', 'pixels 2')
    worker.command('second')  # waits in the queue while frame 3 arrives
    worker.add_frame('frame 3', 'pixels 3')
    pipeline.gate.set()
    wait_for(lambda: outputs.of('second'), 'the second result')
    assert [o[3] for o in outputs.of('first') + outputs.of('second')] == ['frame 1', 'frame 2']


def test_several_commands_on_one_frame_share_its_key(serving):
    worker, pipeline, outputs, _ = serving
    worker.add_frame('frame', 'pixels')
    for text in ('a', 'b', 'c'):
        worker.submit_and_wait(worker.request(text))
    assert len({o[2] for o in outputs.items}) == 1 and len(pipeline.encoded) == 1
    worker.add_frame('next', 'pixels')
    worker.submit_and_wait(worker.request('d'))
    assert len(pipeline.encoded) == 2


def test_a_full_queue_drops_commands_with_a_status(serving):
    worker, pipeline, outputs, _ = serving
    pipeline.gate.clear()
    worker.add_frame('frame', 'pixels')
    worker.command('running')
    wait_for(lambda: pipeline.started, 'the first command to start')
    for text in ('q1', 'q2', 'd1', 'd2'):  # queue_size=2: two wait, two are dropped
        worker.command(text)
    assert [o[1] for o in outputs.items] == [STATUS_DROPPED, STATUS_DROPPED]
    assert worker.stats['dropped'] == 2 and worker.queue_depth() == 2
    pipeline.gate.set()
    wait_for(lambda: len(outputs.items) == 5, 'every command answered')
    assert {o[0]: o[1] for o in outputs.items} == {
        'running': 'ok', 'q1': 'ok', 'q2': 'ok', 'd1': STATUS_DROPPED, 'd2': STATUS_DROPPED}


def test_commands_that_cannot_run_are_answered_at_once(serving):
    worker, _, outputs, _ = serving
    assert worker.submit_and_wait(worker.request('too early')) == STATUS_NO_IMAGE
    worker.add_frame('frame', 'pixels')
    assert worker.submit_and_wait(worker.request('  ')) == STATUS_EMPTY


def test_a_command_takes_the_newest_usable_frame_and_a_bad_one_only_without(serving):
    worker, _, outputs, _ = serving
    worker.add_frame('bad first', 'pixels', error='image has zero size (0x0)')
    only_bad = worker.request('only a bad frame')
    assert (only_bad.frame.header, only_bad.frame.msg) == ('bad first', None)
    assert only_bad.frame.error == 'image has zero size (0x0)'  # its status says why
    worker.add_frame('good', 'pixels')
    worker.add_frame('bad', 'pixels', error='image has zero size (0x0)')
    worker.command('after a 0x0 frame')
    wait_for(lambda: outputs.of('after a 0x0 frame'), 'the result')
    assert outputs.of('after a 0x0 frame')[0][1:4:2] == ('ok', 'good')


def test_a_status_that_cannot_be_published_is_still_answered(serving):
    worker, _, outputs, _ = serving

    def gone(req: Request, status: str) -> Any:
        raise RuntimeError("publisher's context is invalid")
    worker._publish_status = gone
    assert worker.submit_and_wait(worker.request('no frame yet')) is None
    worker.add_frame('frame', 'pixels')
    assert worker.submit_and_wait(worker.request('b')) == 'ok'
    assert worker.running


def test_a_held_prompt_goes_with_the_next_command_only(serving):
    worker, _, _, _ = serving
    worker.add_frame('frame', 'pixels')
    worker.hold_prompt('click')
    assert worker.command('with').prompt == 'click'
    assert worker.command('without').prompt is None


def test_a_failed_publish_is_answered_and_the_worker_lives_on(serving):
    worker, _, outputs, _ = serving
    worker.add_frame('frame', 'pixels')
    outputs.fail_next = True
    answer = worker.submit_and_wait(worker.request('a'))
    assert answer == 'error: RuntimeError: publisher gone'
    assert worker.submit_and_wait(worker.request('b')) == 'ok'


def test_continuous_mode_reruns_on_new_frames_at_most_at_its_rate(serving):
    worker, _, outputs, clock = serving
    worker.continuous, worker.continuous_rate = True, 2.0  # at most every 0.5 s
    worker.add_frame('f1', 'pixels')
    worker.submit_and_wait(worker.request('warm up'))  # not a command: nothing to re-run
    worker.command('keep going')
    wait_for(lambda: outputs.of('keep going'), 'the command')
    worker.add_frame('f2', 'pixels')
    clock.now += 0.3
    time.sleep(0.3)  # the worker ticks every 50 ms
    assert len(outputs.of('keep going')) == 1, 'continuous_rate was exceeded'
    clock.now += 0.2
    wait_for(lambda: len(outputs.of('keep going')) == 2, 'a re-run on the new frame')
    assert outputs.of('keep going')[1][3] == 'f2'
    clock.now += 5.0
    time.sleep(0.3)
    assert len(outputs.of('keep going')) == 2, 'the same frame was processed twice'
    worker.continuous = False
    worker.add_frame('f3', 'pixels')
    clock.now += 5.0
    time.sleep(0.3)
    assert len(outputs.of('keep going')) == 2, 're-runs went on in continuous:=false'
    assert worker.stats['continuous'] == 1 and worker.stats['commands'] == 2


def test_stop_cancels_the_running_request_joins_and_answers_the_queue(serving):
    worker, pipeline, outputs, _ = serving
    pipeline.gate.clear()  # the running request would block forever unless cancelled
    worker.add_frame('frame', 'pixels')
    worker.command('running')
    wait_for(lambda: pipeline.started, 'the first command to start')
    worker.command('waiting')
    start = time.monotonic()
    worker.stop()
    assert time.monotonic() - start < 2.0
    assert not worker.running
    assert not [t for t in threading.enumerate() if t.name == 'segcap_worker']
    assert {o[0]: o[1] for o in outputs.items} == {'running': 'cancelled',
                                                   'waiting': STATUS_STOPPING}
    assert worker.submit_and_wait(worker.request('late')) == STATUS_STOPPING


def test_a_restarted_worker_waits_for_new_frames(serving):
    worker, _, outputs, _ = serving
    worker.add_frame('old', 'pixels')
    worker.stop()
    worker.start()
    assert worker.running
    assert worker.submit_and_wait(worker.request('after restart')) == STATUS_NO_IMAGE
    worker.add_frame('new', 'pixels')
    assert worker.submit_and_wait(worker.request('again')) == 'ok'
    assert outputs.of('again')[0][3] == 'new'
