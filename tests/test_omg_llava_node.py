"""segcap_node on a converted OMG-LLaVA directory, across real processes: the synthetic
official-layout release (converted by test_omg_llava_convert's `release` fixture) is served
with model:=DIR autostart:=true, and one frame + one command get a result of that frame.
Random weights: the answer is noise, only its status and header are checked."""
from __future__ import annotations

import json
import time
from types import SimpleNamespace
from typing import Any, Callable
import uuid

import pytest

import rosutil as ru

if not ru.HAVE_RCLPY:
    pytest.skip(ru.WHY_NO_RCLPY, allow_module_level=True)

from std_msgs.msg import String  # noqa: E402
from test_omg_llava_convert import release  # noqa: E402, F401 - the converted directory

from ros_segcap.ros.messages import load_interfaces  # noqa: E402

pytestmark = pytest.mark.ros
STARTUP_S = 40.0  # import + load of the tiny converted model on a busy 2-core machine
COMMAND = 'Please segment the cup in this image.'


def _results(side: ru.TestSide) -> tuple[str, ru.Collector, Callable[[Any], Any]]:
    """(topic, collector, reader to command, status, stamp, frame_id): SegCapResult when
    ros_segcap_msgs is built, else the JSON result topic."""
    it, _ = load_interfaces()
    if it is not None:
        return 'segcap/result', side.collect(it.ResultMsg, 'segcap/result'), \
            lambda m: SimpleNamespace(command=m.command, status=m.status,
                                      stamp=(m.header.stamp.sec, m.header.stamp.nanosec),
                                      frame_id=m.header.frame_id)

    def read(msg: Any) -> SimpleNamespace:
        d = json.loads(msg.data)
        h = d['header']
        return SimpleNamespace(command=d['command'], status=d['status'],
                               stamp=(h['stamp']['sec'], h['stamp']['nanosec']),
                               frame_id=h['frame_id'])
    return 'segcap/result_json', side.collect(String, 'segcap/result_json'), read


def test_the_node_serves_a_converted_omg_llava_directory(release, tmp_path):  # noqa: F811
    _, model_dir = release
    domain, ns = ru.unique_domain(), f'/segcap_omg_{uuid.uuid4().hex[:8]}'
    node = ru.NodeProcess(tmp_path, domain, ns, {'model': str(model_dir), 'autostart': True,
                                                 'max_new_tokens': 8})
    side = ru.TestSide(domain, ns)
    try:
        topic, results, read = _results(side)
        image = side.node.create_publisher(ru.Image, 'image', ru.best_effort())
        command = side.node.create_publisher(String, 'command', ru.reliable())
        ru.wait_for(lambda: command.get_subscription_count() > 0 and
                    image.get_subscription_count() > 0 and
                    side.node.count_publishers(f'{ns}/{topic}') > 0,
                    STARTUP_S, 'segcap_node to load the omg_llava directory', node)
        frame = ru.make_image(120, 160, stamp_sec=4242, frame_id='cam_omg', value=-1)
        frame.header.stamp.nanosec = 123
        for _ in range(5):
            image.publish(frame)
            time.sleep(0.05)
        time.sleep(0.5)
        command.publish(String(data=COMMAND))
        got = ru.wait_for(lambda: [read(m) for m in results.snapshot()
                                   if read(m).command == COMMAND], ru.RESULT_S,
                          'the result of the command', node)[0]
        assert got.status == 'ok', node.explain(f'status {got.status!r}')
        assert (got.stamp, got.frame_id) == ((4242, 123), 'cam_omg')
    finally:
        side.close()
        code = node.stop()
    assert code == 0, node.explain(f'segcap_node exited with {code} on SIGINT')
