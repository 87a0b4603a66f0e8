"""segcap_node's lifecycle across real processes: configure, activate, deactivate, cleanup.

The node starts with autostart:=false (as under launch/segcap.launch.py or a lifecycle
manager) and the test drives its transitions through the lifecycle services, in file order.
"""
from __future__ import annotations

import uuid
from typing import Any

import pytest

import rosutil as ru

if not ru.HAVE_RCLPY:
    pytest.skip(ru.WHY_NO_RCLPY, allow_module_level=True)

from geometry_msgs.msg import PointStamped  # noqa: E402
from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from ros_segcap.ros.messages import load_interfaces  # noqa: E402

pytestmark = pytest.mark.ros
STARTUP_S = 180.0  # model load on a busy 2-core machine


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
    it, why = load_interfaces()
    if it is None:
        pytest.skip(f'ros_segcap_msgs is not built ({why}): run scripts/build_msgs.py')
    domain, ns = ru.unique_domain(), f'/segcap_life_{uuid.uuid4().hex[:8]}'
    node = ru.NodeProcess(tmp_path_factory.mktemp('node'), domain, ns,
                          {'model': 'tiny-random', 'max_new_tokens': 8, 'autostart': False})
    side = ru.TestSide(domain, ns)
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
