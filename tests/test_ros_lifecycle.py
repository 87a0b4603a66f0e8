"""segcap_node's life across real processes: transitions, start, stop signals, namesakes.

The module's node starts with autostart:=false (as under launch/segcap.launch.py or a
lifecycle manager) and the first tests drive its transitions through the lifecycle services,
in file order. The tests after them start node processes of their own.
"""
from __future__ import annotations

import signal
import time
import uuid
from typing import Any

import numpy as np

import pytest

import rosutil as ru

if not ru.HAVE_RCLPY:
    pytest.skip(ru.WHY_NO_RCLPY, allow_module_level=True)

from geometry_msgs.msg import PointStamped  # noqa: E402
from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rclpy.action import ActionClient  # noqa: E402
from sensor_msgs.msg import CompressedImage  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from ros_segcap.ros import convert  # noqa: E402

pytestmark = pytest.mark.ros
STARTUP_S = 180.0  # model load on a busy 2-core machine
RESULT_S = ru.RESULT_S


class Lifecycle:
    """Calls segcap_node's lifecycle services from the test side."""

    def __init__(self, ros: ru.Ros) -> None:
        self.ros = ros
        node = ros.side.node
        self._change = node.create_client(ChangeState, 'segcap_node/change_state')
        self._get = node.create_client(GetState, 'segcap_node/get_state')
        ru.wait_for(lambda: self._change.service_is_ready() and self._get.service_is_ready(),
                    STARTUP_S, 'the lifecycle services', ros.node)

    def _call(self, client: Any, request: Any, timeout: float) -> Any:
        future = client.call_async(request)
        ru.wait_for(future.done, timeout, f'{client.srv_name}', self.ros.node)
        return future.result()

    def state(self) -> int:
        return self._call(self._get, GetState.Request(), 10.0).current_state.id

    def change(self, transition: int) -> bool:
        request = ChangeState.Request(transition=Transition(id=transition))
        return self._call(self._change, request, STARTUP_S).success

    def listening(self) -> bool:
        """Tell whether the node subscribes to `command` (only while active)."""
        return self.ros.command.get_subscription_count() > 0

    def publishing(self) -> bool:
        """Tell whether the node has its result publisher (configured)."""
        return self.ros.side.node.count_publishers(f'{self.ros.node.namespace}/segcap/result') > 0


@pytest.fixture(scope='module')
def lifecycle(tmp_path_factory):
    """Start segcap_node unconfigured (autostart:=false) and the test side."""
    it = ru.built_interfaces()
    node, side = ru.start_node(tmp_path_factory.mktemp('node'), 'segcap_life',
                               {'model': 'tiny-random', 'max_new_tokens': 8, 'autostart': False})
    pub = side.node.create_publisher
    ros = ru.Ros(node, side, it, side.collect(it.ResultMsg, 'segcap/result'),
                 pub(ru.Image, 'image', ru.best_effort()), pub(String, 'command', ru.reliable()),
                 pub(PointStamped, 'image_mouse_left', 10),
                 pub(it.PromptMsg, 'segcap/prompt', 10))
    try:
        yield Lifecycle(ros)
    finally:
        side.close()
        code = node.stop()
        print(node.output())
    assert code == 0, node.explain(f'segcap_node exited with {code} on SIGINT')


def test_starts_unconfigured_and_takes_restart_parameters(lifecycle):
    assert lifecycle.state() == State.PRIMARY_STATE_UNCONFIGURED
    assert not lifecycle.listening() and not lifecycle.publishing()
    assert lifecycle.ros.set_parameter('queue_size', 2).successful  # a restart parameter
    assert not lifecycle.ros.set_parameter('image_qos', 'fast').successful  # not a choice


def test_a_failed_configure_leaves_it_unconfigured_and_alive(lifecycle):
    assert lifecycle.ros.set_parameter('model', 'nope').successful
    assert not lifecycle.change(Transition.TRANSITION_CONFIGURE)
    assert lifecycle.state() == State.PRIMARY_STATE_UNCONFIGURED
    assert "configure failed: unknown model 'nope'" in lifecycle.ros.node.output()
    assert lifecycle.ros.set_parameter('model', 'tiny-random').successful


def test_configure_loads_the_model_and_activate_serves(lifecycle):
    assert lifecycle.change(Transition.TRANSITION_CONFIGURE)
    assert lifecycle.state() == State.PRIMARY_STATE_INACTIVE
    assert lifecycle.publishing() and not lifecycle.listening()
    refused = lifecycle.ros.set_parameter('queue_size', 3)
    assert not refused.successful and 'while the node is configured' in refused.reason
    assert lifecycle.change(Transition.TRANSITION_ACTIVATE)
    assert lifecycle.state() == State.PRIMARY_STATE_ACTIVE
    ros = lifecycle.ros
    ru.wait_for(lifecycle.listening, 10.0, 'the command subscription', ros.node)
    ros.show(ru.make_image(60, 80, stamp_sec=500, value=-1))
    result = ros.send(ros.unique('segment the cup'))
    assert result.status == 'ok' and result.header.stamp.sec == 500


def test_deactivate_stops_taking_work_and_cleanup_releases(lifecycle):
    ros = lifecycle.ros
    assert lifecycle.change(Transition.TRANSITION_DEACTIVATE)
    assert lifecycle.state() == State.PRIMARY_STATE_INACTIVE
    ru.wait_for(lambda: not lifecycle.listening(), 10.0, 'the subscriptions to go', ros.node)
    assert lifecycle.change(Transition.TRANSITION_ACTIVATE)  # and back: frames from before
    ru.wait_for(lifecycle.listening, 10.0, 'the command subscription', ros.node)
    assert ros.send(ros.unique('segment the cup')).status == 'no image yet'
    assert lifecycle.change(Transition.TRANSITION_DEACTIVATE)
    assert lifecycle.change(Transition.TRANSITION_CLEANUP)
    assert lifecycle.state() == State.PRIMARY_STATE_UNCONFIGURED
    ru.wait_for(lambda: not lifecycle.publishing(), 10.0, 'the publishers to go', ros.node)
    assert ros.set_parameter('queue_size', 3).successful  # unconfigured again


def test_shutdown_finalizes(lifecycle):
    assert lifecycle.change(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
    assert lifecycle.state() == State.PRIMARY_STATE_FINALIZED
    assert lifecycle.ros.node.alive()  # it exits on SIGINT, with code 0 (the fixture checks)


# ----- node processes of their own ------------------------------------------------------------

@pytest.mark.parametrize('signals,at', [
    ((signal.SIGINT,), 0.3), ((signal.SIGTERM,), 0.3), ((signal.SIGINT, signal.SIGINT), 0.3),
    ((signal.SIGINT, signal.SIGINT), 4.0)],
    ids=['sigint-0.3s', 'sigterm-0.3s', 'two-ctrl-c-0.3s', 'two-ctrl-c-4s'])
def test_a_stop_signal_at_any_moment_exits_0_without_a_traceback(tmp_path, signals, at):
    node = ru.NodeProcess(tmp_path, ru.unique_domain(), '/segcap_early', {'model': 'tiny-random'})
    try:
        time.sleep(at)  # importing (0.3 s) or loading the model (4 s)
        for signum in signals:
            node.proc.send_signal(signum)
            time.sleep(0.3)
        code = node.proc.wait(30.0)
    finally:
        node.stop()
    output = node.output()
    assert code == 0 and 'Traceback' not in output, node.explain(f'exit code {code}')


def test_a_stop_with_work_in_flight_answers_every_pending_call(tmp_path):
    it = ru.built_interfaces()
    node, side = ru.start_node(tmp_path, 'segcap_stop',
                               {'model': 'tiny-random', 'max_new_tokens': 1024})
    try:
        image = side.node.create_publisher(ru.Image, 'image', ru.best_effort())
        service = side.node.create_client(it.SegmentSrv, 'segcap/segment')
        action = ActionClient(side.node, it.SegmentAction, 'segcap/segment_stream')
        ru.wait_for(lambda: service.service_is_ready() and action.server_is_ready() and
                    image.get_subscription_count(), STARTUP_S, 'segcap_node to start', node)
        for _ in range(3):
            image.publish(ru.make_image(60, 80, stamp_sec=1, value=-1))
            time.sleep(0.1)
        feedback: list[Any] = []
        sent = action.send_goal_async(it.SegmentAction.Goal(command='describe the scene'),
                                      feedback_callback=feedback.append)
        goal = ru.wait_for(lambda: sent.done() and sent.result(), 10.0, 'goal accepted', node)
        streamed = goal.get_result_async()
        ru.wait_for(lambda: feedback, RESULT_S, 'the goal to run', node)
        calls = [service.call_async(it.SegmentSrv.Request(command=f'segment thing {i}'))
                 for i in range(3)]
        time.sleep(0.5)  # the calls wait in the node's queue
        node.proc.send_signal(signal.SIGINT)
        ru.wait_for(lambda: streamed.done() and all(c.done() for c in calls), 15.0,
                    'an answer to every pending call')
        code = node.proc.wait(15.0)
    finally:
        side.close()
        node.stop()
    statuses = [c.result().result.status for c in calls]
    statuses.append(streamed.result().result.result.status)
    assert all(s.startswith('cancelled: the node is stopping') for s in statuses), statuses
    output = node.output()
    assert code == 0 and 'Traceback' not in output and 'RCLError' not in output, \
        node.explain(f'exit code {code}')


def test_a_second_node_with_the_same_name_is_warned_about(tmp_path):
    domain, ns = ru.unique_domain(), f'/segcap_twin_{uuid.uuid4().hex[:8]}'
    nodes = [ru.NodeProcess(tmp_path, domain, ns, {'model': 'tiny-random'})]
    (tmp_path / 'second').mkdir()  # its own log file
    nodes.append(ru.NodeProcess(tmp_path / 'second', domain, ns, {'model': 'tiny-random'}))
    warning = f'1 other node(s) named {ns}/segcap_node are running'
    try:
        for node in nodes:  # the later one warns on activate, the other one from the graph
            ru.wait_for(lambda: warning in node.output(), STARTUP_S, 'the warning', node)
    finally:
        codes = [node.stop() for node in nodes]
    assert codes == [0, 0], codes


def test_standard_messages_only_with_compressed_images(tmp_path):
    """Without ros_segcap_msgs the node says so once and publishes JSON results."""
    hide = tmp_path / 'hide' / 'ros_segcap_msgs'
    hide.mkdir(parents=True)
    (hide / '__init__.py').write_text("raise ImportError('hidden by the test')\n")
    node, side = ru.start_node(tmp_path, 'segcap_json',
                               {'model': 'tiny-random', 'compressed': True, 'max_new_tokens': 8},
                               python_path=hide.parent)
    ns = node.namespace
    try:
        results = side.collect(String, 'segcap/result_json')
        command = side.node.create_publisher(String, 'command', ru.reliable())
        image = side.node.create_publisher(CompressedImage, 'image/compressed', ru.best_effort())
        ru.wait_for(lambda: command.get_subscription_count() > 0 and
                    side.node.count_publishers(f'{ns}/segcap/result_json') > 0,
                    STARTUP_S, 'segcap_node to start', node)
        command.publish(String(data='segment the cup'))
        ru.wait_for(lambda: results.snapshot(), 5.0, 'a JSON result', node)
        assert '"status": "no image yet"' in results.snapshot()[0].data
        rgb = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
        frame = convert.rgb_to_compressed(rgb, 'jpeg')
        frame.header.stamp.sec = 77
        for _ in range(3):
            image.publish(frame)
            time.sleep(0.05)
        time.sleep(0.3)
        command.publish(String(data='describe'))
        ru.wait_for(lambda: len(results.snapshot()) > 1, RESULT_S, 'the second result', node)
        text = results.snapshot()[1].data
        assert '"status": "ok"' in text and '"stamp": {"sec": 77' in text, text
        assert node.output().count('ros_segcap_msgs is not importable') == 1
    finally:
        side.close()
        code = node.stop()
    assert code == 0, node.explain(f'exit code {code}')


def test_a_bad_parameter_at_start_exits_1_with_one_line(tmp_path):
    node = ru.NodeProcess(tmp_path, ru.unique_domain(), '/segcap_bad', {'model': 'nope'})
    try:
        code = node.proc.wait(STARTUP_S)
    finally:
        node.stop()
    output = node.output()
    assert code == 1 and 'Traceback' not in output, output
    assert output.strip().startswith("segcap_node: could not start: unknown model 'nope'; known "
                                     'models:'), output
