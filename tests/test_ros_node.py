"""segcap_node across real processes: frames, commands, prompts, service, action, bad input, load.

One node (model tiny-random) serves the tests in file order (tests that start their own
node processes are in test_ros_lifecycle.py). The child's output is in every timeout
message.
"""
from __future__ import annotations

import collections
import time
import uuid
from typing import Any

import numpy as np
import pytest

import rosutil as ru

if not ru.HAVE_RCLPY:
    pytest.skip(ru.WHY_NO_RCLPY, allow_module_level=True)

from action_msgs.msg import GoalStatus  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PointStamped  # noqa: E402
from rcl_interfaces.srv import GetParameters  # noqa: E402
from rclpy.action import ActionClient  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from ros_segcap.ros import convert  # noqa: E402

pytestmark = pytest.mark.ros
STARTUP_S = 180.0  # model load on a busy 2-core machine
RESULT_S = ru.RESULT_S


@pytest.fixture(scope='module')
def ros(tmp_path_factory):
    """Start the shared node (tiny-random) and the test side; stop them at the end."""
    it = ru.built_interfaces()
    node, side = ru.start_node(tmp_path_factory.mktemp('node'), 'segcap_test',
                               {'model': 'tiny-random', 'queue_size': 4, 'max_new_tokens': 16,
                                'diagnostics_period': 0.2})
    ns = node.namespace
    pub = side.node.create_publisher
    ros = ru.Ros(node, side, it, side.collect(it.ResultMsg, 'segcap/result'),
                 pub(ru.Image, 'image', ru.best_effort()), pub(String, 'command', ru.reliable()),
                 pub(PointStamped, 'image_mouse_left', 10),
                 pub(it.PromptMsg, 'segcap/prompt', 10))
    try:
        ru.wait_for(lambda: ros.command.get_subscription_count() > 0 and
                    side.node.count_publishers(f'{ns}/segcap/result') > 0,
                    STARTUP_S, 'segcap_node to start', node)
        yield ros
    finally:
        side.close()
        code = node.stop()
        print(node.output())
    assert code == 0, node.explain(f'segcap_node exited with {code} on SIGINT')


def test_command_before_any_image_gets_no_image_yet_promptly(ros):
    text = ros.unique('segment the cup')
    start = time.monotonic()
    result = ros.send(text, timeout=5.0)
    assert result.status == 'no image yet' and time.monotonic() - start < 5.0


def test_best_effort_camera_and_the_newest_frame_at_arrival(ros):
    with ru.Camera(ros.image, rate=30.0, first=1000, frame_id='cam_a') as camera:
        ru.wait_for(lambda: camera.published > 15, 5.0, 'the camera to run')
        sent_after = camera.last_stamp()
        result = ros.send(ros.unique('segment the red cup'))
        assert result.status == 'ok', result.status
        assert result.header.frame_id == 'cam_a'
        # newest frame at arrival: not older than a few frames in flight, never from the future
        assert sent_after - 10 <= result.header.stamp.sec <= camera.last_stamp()
    assert result.encoder_runs >= 1 and result.total_ms > 0
    assert 'vision' in result.stage_names or 'llm_decode' in result.stage_names


def commands_counted(ros: Any, diagnostics: Any, after: float) -> int:
    """Return the node's count of received commands in its newest /diagnostics after `after`."""
    hardware = f'{ros.node.namespace}/segcap_node'
    counts = [int(kv.value) for d in diagnostics.snapshot() for s in d.status
              if s.hardware_id == hardware and
              d.header.stamp.sec + d.header.stamp.nanosec * 1e-9 > after
              for kv in s.values if kv.key == 'commands']
    return counts[-1] if counts else -1


def test_a_queued_command_keeps_the_frame_of_its_arrival(ros):
    diagnostics = ros.side.collect(DiagnosticArray, '/diagnostics', 100)
    ros.show(ru.make_image(120, 160, stamp_sec=5000, frame_id='cam_b', value=-1))
    texts = [ros.unique(t) for t in ('describe the scene', 'segment the cup', 'segment the bowl',
                                     'what is this?')]
    # long answers keep the queue busy, so the last command is still waiting when the new
    # frame arrives, however fast the machine
    assert ros.set_parameter('max_new_tokens', 400).successful
    try:
        now = time.time()
        # + 1: a count of 0 is an answer too (wait_for waits for a truthy value)
        before = ru.wait_for(lambda: commands_counted(ros, diagnostics, now) + 1, 10.0,
                             'our /diagnostics', ros.node) - 1
        for text in texts:
            ros.command.publish(String(data=text))
        # the node has taken all four (its own count says so); the last waits behind the others
        ru.wait_for(lambda: commands_counted(ros, diagnostics, 0.0) >= before + 4, 10.0,
                    'the node to count the four commands', ros.node)
        ros.show(ru.make_image(120, 160, stamp_sec=5001, frame_id='cam_b', value=-1), times=5)
        done_early = [t for t in texts if ros.results.find(lambda r, t=t: r.command == t)]
        results = [ros.result_for(text) for text in texts]
    finally:
        assert ros.set_parameter('max_new_tokens', 16).successful
    assert [(r.status, r.header.stamp.sec) for r in results] == [('ok', 5000)] * 4
    # one worker: while the third result is out, the fourth command has not started
    assert texts[2] not in done_early, (f'{len(done_early)} of 4 commands were done before '
                                        'the new frame came: the test proves little')


def test_several_commands_on_one_frame_encode_it_once(ros):
    ros.show(ru.make_image(120, 160, stamp_sec=6000, value=-1))
    texts = [ros.unique(t) for t in ('segment the cup', 'what is this?', 'describe')]
    for text in texts:
        ros.command.publish(String(data=text))
    results = [ros.result_for(text) for text in texts]
    assert all(r.status == 'ok' and r.header.stamp.sec == 6000 for r in results)
    assert len({r.encoder_runs for r in results}) == 1, [r.encoder_runs for r in results]
    assert sum('vision' in r.stage_names for r in results) == 1


def test_click_on_image_mouse_left_is_a_point_prompt_for_the_next_command(ros):
    ros.show(ru.make_image(120, 160, stamp_sec=7000, value=-1))
    click = PointStamped()
    click.point.x, click.point.y = 40.0, 30.0
    ros.click.publish(click)
    time.sleep(0.3)
    with_point = ros.send(ros.unique('what is this?'))
    assert with_point.status == 'ok' and 'prompt_decode' in with_point.stage_names
    without = ros.send(ros.unique('what is this?'))  # the click was used up
    assert without.status == 'ok' and 'prompt_decode' not in without.stage_names
    click.point.x = 500.0
    ros.click.publish(click)
    time.sleep(0.3)
    outside = ros.send(ros.unique('what is this?'))
    assert outside.status.startswith('bad input: point (500, 30) is'), outside.status
    assert 'outside the 160x120' in outside.status, outside.status


def test_visual_prompts_on_segcap_prompt(ros):
    ros.show(ru.make_image(120, 160, stamp_sec=7100, value=-1))
    prompt = ros.it.PromptMsg(type=ros.it.PromptMsg.BOX, text=ros.unique('what is in the box?'))
    prompt.box = [10.0, 10.0, 60.0, 50.0]
    ros.prompt.publish(prompt)
    result = ros.result_for(prompt.text)
    assert result.status == 'ok' and 'prompt_decode' in result.stage_names
    wrong = ros.it.PromptMsg(type=ros.it.PromptMsg.MASK, text=ros.unique('what is this?'))
    wrong.mask = convert.mask_to_image(np.ones((10, 10), bool))
    ros.prompt.publish(wrong)
    status = ros.result_for(wrong.text).status
    assert status == 'bad input: mask prompt is 10x10 but the image is 160x120', status


def test_service_on_the_newest_frame_and_on_its_own_image(ros):
    client = ros.side.node.create_client(ros.it.SegmentSrv, 'segcap/segment')
    ru.wait_for(lambda: client.service_is_ready(), 10.0, 'the segcap/segment service', ros.node)
    ros.show(ru.make_image(120, 160, stamp_sec=8000, value=-1))

    def call(request: Any) -> Any:
        future = client.call_async(request)
        ru.wait_for(future.done, RESULT_S, 'the service response', ros.node)
        return future.result().result

    result = call(ros.it.SegmentSrv.Request(command='describe the scene'))
    assert result.status == 'ok' and result.header.stamp.sec == 8000
    own = ru.make_image(64, 48, 'bgr8', stamp_sec=8100, frame_id='upload', value=-1)
    result = call(ros.it.SegmentSrv.Request(command='segment the cup', image=own))
    header = result.header
    assert (result.status, header.stamp.sec, header.frame_id) == ('ok', 8100, 'upload')
    own.encoding = 'yuv422'
    result = call(ros.it.SegmentSrv.Request(command='segment the cup', image=own))
    assert result.status.startswith("bad input: unsupported image encoding 'yuv422'")


def test_pending_service_calls_leave_parameters_answering(ros):
    """Calls wait for the worker without holding executor threads (4 of them)."""
    client = ros.side.node.create_client(ros.it.SegmentSrv, 'segcap/segment')
    params = ros.side.node.create_client(GetParameters, 'segcap_node/get_parameters')
    ru.wait_for(lambda: client.service_is_ready() and params.service_is_ready(), 10.0,
                'the segment and get_parameters services', ros.node)
    ros.show(ru.make_image(120, 160, stamp_sec=8500, value=-1))
    assert ros.set_parameter('max_new_tokens', 1024).successful  # seconds per call
    done_at: dict[str, float] = {}

    def call(name: str, future: Any) -> Any:
        future.add_done_callback(lambda _: done_at.setdefault(name, time.monotonic()))
        return future
    try:
        calls = [call(f'call {i}', client.call_async(ros.it.SegmentSrv.Request(
            command=f'describe the scene {i}'))) for i in range(5)]  # 1 runs, 4 wait
        time.sleep(0.5)  # the node has them all
        asked = time.monotonic()
        answer = call('get_parameters', params.call_async(
            GetParameters.Request(names=['max_new_tokens'])))
        ru.wait_for(answer.done, RESULT_S, 'the get_parameters answer', ros.node)
    finally:
        assert ros.set_parameter('max_new_tokens', 16).successful
    for future in calls:
        ru.wait_for(future.done, 2 * RESULT_S, 'the service answers', ros.node)
    assert answer.result().values[0].integer_value == 1024
    first_call = min(done_at[f'call {i}'] for i in range(5))
    assert done_at['get_parameters'] - asked < 3.0 and done_at['get_parameters'] < first_call, (
        f'get_parameters took {done_at["get_parameters"] - asked:.1f} s and came '
        f'{done_at["get_parameters"] - first_call:+.1f} s after the first call\'s answer')
    assert {f.result().result.status for f in calls} <= {'ok', 'dropped: queue full'}


def test_live_parameters_and_refused_ones(ros):
    assert ros.set_parameter('max_new_tokens', 8).successful
    refused = ros.set_parameter('model', 'segcap-tiny')
    assert not refused.successful
    assert 'model cannot change while the node is configured' in refused.reason
    out_of_range = ros.set_parameter('mask_threshold', 1.5)
    assert not out_of_range.successful


def test_continuous_mode_reruns_the_last_command_on_new_frames(ros):
    text = ros.unique('keep segmenting the red cup')
    assert ros.set_parameter('continuous_rate', 4.0).successful
    assert ros.set_parameter('continuous', True).successful
    runs = lambda: ros.results.find(lambda r: r.command == text)  # noqa: E731
    with ru.Camera(ros.image, rate=30.0, first=30000):
        ros.send(text)
        ru.wait_for(lambda: len(runs()) >= 4, RESULT_S, 'continuous re-runs', ros.node)
        assert ros.set_parameter('continuous', False).successful
        count, deadline = -1, time.monotonic() + RESULT_S
        while count != len(runs()) and time.monotonic() < deadline:  # re-runs already queued
            count = len(runs())
            time.sleep(1.0)
        time.sleep(1.0)
    assert len(runs()) == count, 'continuous mode went on after it was switched off'
    stamps = [r.header.stamp.sec for r in runs()]
    assert len(set(stamps)) == len(stamps), f'a frame was processed twice: {stamps}'
    arrivals = [r.command_stamp.sec + r.command_stamp.nanosec * 1e-9 for r in runs()[1:]]
    assert min(np.diff(arrivals)) > 0.2, 'continuous_rate (4 Hz) was exceeded'


def test_mask_overlay_caption_and_diagnostics_topics(ros):
    masks = ros.side.collect(ru.Image, 'segcap/mask', 10)
    overlays = ros.side.collect(ru.Image, 'segcap/overlay', 10)
    captions = ros.side.collect(String, 'segcap/caption', 10)
    diagnostics = ros.side.collect(DiagnosticArray, '/diagnostics', 10)
    ns = ros.node.namespace
    ru.wait_for(lambda: ros.side.node.count_publishers(f'{ns}/segcap/mask') and
                ros.side.node.count_publishers(f'{ns}/segcap/overlay'), 10.0,
                'the mask and overlay publishers', ros.node)
    time.sleep(0.5)  # let the node see our subscriptions too (it skips unwatched images)
    ros.show(ru.make_image(90, 100, stamp_sec=31000, frame_id='cam_m', value=-1))
    result = ros.send(ros.unique('segment everything'))
    assert result.status == 'ok'
    mask = ru.wait_for(lambda: masks.find(lambda m: m.header.stamp.sec == 31000), 10.0, 'mask')
    overlay = ru.wait_for(lambda: overlays.find(lambda m: m.header.stamp.sec == 31000), 10.0,
                          'overlay')
    assert (mask[0].encoding, mask[0].height, mask[0].width) == ('mono8', 90, 100)
    assert (overlay[0].encoding, overlay[0].height, overlay[0].width) == ('rgb8', 90, 100)
    ru.wait_for(lambda: [c for c in captions.snapshot() if c.data == result.answer], 10.0,
                'caption')
    ours = lambda: [s for d in diagnostics.snapshot() for s in d.status  # noqa: E731
                    if s.hardware_id == f'{ns}/segcap_node']
    status = ru.wait_for(ours, 10.0, 'our /diagnostics', ros.node)[-1]
    values = {kv.key: kv.value for kv in status.values}
    for key in ('image rate (Hz)', 'queue depth', 'dropped', 'encoder runs',
                'latency total (ms)', 'latency vision (ms)'):
        assert key in values, values


def test_action_streams_text_and_cancel_stops_generation(ros):
    ros.show(ru.make_image(120, 160, stamp_sec=9000, value=-1))
    client = ActionClient(ros.side.node, ros.it.SegmentAction, 'segcap/segment_stream')
    ru.wait_for(lambda: client.server_is_ready(), 10.0, 'the action server', ros.node)
    feedback: list[Any] = []

    def run(goal: Any, cancel: bool) -> tuple[Any, Any]:
        feedback.clear()
        sent = client.send_goal_async(goal, feedback_callback=feedback.append)
        handle = ru.wait_for(lambda: sent.done() and sent.result(), 10.0, 'goal accepted')
        if cancel:
            ru.wait_for(lambda: feedback, RESULT_S, 'the first feedback', ros.node)
            handle.cancel_goal_async()
        done = handle.get_result_async()
        ru.wait_for(done.done, RESULT_S, 'the action result', ros.node)
        return done.result().status, done.result().result.result

    assert ros.set_parameter('max_new_tokens', 400).successful  # long enough to cancel
    status, result = run(ros.it.SegmentAction.Goal(command='describe the scene'), cancel=True)
    assert result.status == 'cancelled' and status == GoalStatus.STATUS_CANCELED
    assert result.stage_ms and result.header.stamp.sec == 9000
    assert len(feedback) < 300, 'generation went on after the cancel'
    assert ros.set_parameter('max_new_tokens', 12).successful
    status, result = run(ros.it.SegmentAction.Goal(command='describe the scene'), cancel=False)
    assert result.status == 'ok' and status == GoalStatus.STATUS_SUCCEEDED
    texts = [f.feedback.text for f in feedback]
    assert texts and all(b.startswith(a) for a, b in zip(texts, texts[1:]))


@pytest.mark.parametrize('bad,expected', [
    (dict(encoding='yuv422'), "bad input: unsupported image encoding 'yuv422'"),
    (dict(data=bytes(100)), 'bad input: image data has 100 bytes, less than height*step'),
    (dict(height=0, width=0, step=0, data=b''), 'bad input: image has zero size (0x0)'),
])
def test_bad_images_give_a_status_and_the_node_stays_up(ros, bad, expected):
    msg = ru.make_image(120, 160, stamp_sec=10000)
    for key, value in bad.items():
        setattr(msg, key, value)
    ros.show(msg, times=6)  # more than frame_buffer (4): no usable frame is left in the ring
    result = ros.send(ros.unique('segment the cup'))
    assert result.status.startswith(expected), result.status
    assert result.header.stamp.sec == 10000
    ros.show(ru.make_image(120, 160, stamp_sec=10001))
    assert ros.send(ros.unique('segment the cup')).status == 'ok'


def test_a_bad_frame_right_before_a_command_leaves_it_the_newest_usable_one(ros):
    captions = ros.side.collect(String, 'segcap/caption', 10)
    ros.show(ru.make_image(120, 160, stamp_sec=10100, value=-1))
    ros.show(ru.make_image(0, 0, stamp_sec=10101), times=1)
    result = ros.send(ros.unique('segment the cup'))
    assert (result.status, result.header.stamp.sec) == ('ok', 10100), result.status
    ru.wait_for(lambda: [c for c in captions.snapshot() if c.data == result.answer], 10.0,
                'the caption of the command', ros.node)


def test_an_8000x6000_image_is_refused_and_the_node_stays_up(ros):
    big = ru.make_image(6000, 8000, 'mono8', stamp_sec=11000, value=7)  # 48 MB
    for _ in range(5):  # best effort: until the ring (4) holds no usable frame
        ros.show(big, times=2)
        result = ros.send(ros.unique('segment the cup'))
        if result.header.stamp.sec == 11000:
            break
    assert result.status.startswith(
        'bad input: image is 8000x6000 (48.0 MP), more than the limit'), result.status
    ros.show(ru.make_image(120, 160, stamp_sec=11001))
    assert ros.send(ros.unique('segment the cup')).status == 'ok'


@pytest.mark.parametrize('text,expected', [
    ('', 'bad input: empty command'),
    ('  \t\n ', 'bad input: empty command'),
    ('x' * 100_000, 'bad input: prompt is 100000 characters; the limit is'),
])
def test_bad_commands_give_a_status(ros, text, expected):
    ros.show(ru.make_image(120, 160, stamp_sec=12000))
    before = len(ros.results.find(lambda r: r.command == text))
    ros.command.publish(String(data=text))
    found = ru.wait_for(lambda: ros.results.find(lambda r: r.command == text)[before:],
                        RESULT_S, 'the result of a bad command', ros.node)
    assert found[0].status.startswith(expected), found[0].status[:200]


@pytest.mark.slow
def test_flood_of_commands_with_30hz_images(ros):
    """50 commands/s for 10 s with 30 Hz images: one answer per command, bounded memory."""
    texts = [f'flood {i} {uuid.uuid4().hex[:6]}' for i in range(500)]
    rss: list[float] = []
    with ru.Camera(ros.image, rate=30.0, first=20000):
        assert ros.send(ros.unique('warm up')).status == 'ok'
        start = time.monotonic()
        for i, text in enumerate(texts):
            ros.command.publish(String(data=text))
            if i == 100:
                rss.append(ros.node.rss_mb())  # after 2 s: warmed up
            time.sleep(max(0.0, start + (i + 1) / 50.0 - time.monotonic()))
        rss.append(ros.node.rss_mb())
    wanted = set(texts)
    try:
        ru.wait_for(lambda: wanted <= {r.command for r in ros.results.snapshot()}, 60.0,
                    'a result for every flood command', ros.node)
    except AssertionError as error:
        missing = sorted(wanted - {r.command for r in ros.results.snapshot()},
                         key=texts.index)
        raise AssertionError(f'{len(missing)} commands have no result (first: {missing[:5]})'
                             f'\n{error}') from None
    time.sleep(1.0)  # any duplicate would arrive by now
    counts = collections.Counter(r.command for r in ros.results.snapshot() if r.command in wanted)
    statuses = collections.Counter(r.status for r in ros.results.snapshot()
                                   if r.command in wanted)
    print(f'flood: {dict(statuses)}, RSS {rss[0]:.0f} -> {rss[-1]:.0f} MB')
    assert set(counts.values()) == {1}, 'some commands got more than one result'
    assert set(statuses) <= {'ok', 'dropped: queue full'}, statuses
    assert statuses['ok'] >= 4 and statuses['dropped: queue full'] > 0, statuses
    assert ros.node.alive()
    assert rss[-1] - rss[0] < 50.0, f'RSS grew from {rss[0]:.0f} to {rss[-1]:.0f} MB'
