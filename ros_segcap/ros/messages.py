"""Glue between core types and ROS messages: results, visual prompts, diagnostics.

The interface package ros_segcap_msgs is optional: `load_interfaces()` returns None when it
is not built, and the node then publishes results as JSON on a std_msgs/String.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Optional, Union

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PointStamped
from sensor_msgs.msg import RegionOfInterest
from std_msgs.msg import Header

from ros_segcap.core.types import InputError, SegCapResult, VisualPrompt
from ros_segcap.ros.convert import image_to_numpy, mask_to_image
from ros_segcap.worker import STATUS_DROPPED, STATUS_NO_IMAGE  # noqa: F401 - the statuses

STATUS_OK = 'ok'
STATUS_CANCELLED = 'cancelled'
NO_INTERFACES = ('ros_segcap_msgs is not importable ({why}): running with standard messages '
                 'only (results as JSON on segcap/result_json; no segcap/prompt, service or '
                 'action). Build it with: python scripts/build_msgs.py')


def load_interfaces() -> tuple[Optional[SimpleNamespace], str]:
    """Import ros_segcap_msgs; return (namespace of its types, '') or (None, why not)."""
    try:
        from ros_segcap_msgs.action import Segment as SegmentAction
        from ros_segcap_msgs.msg import SegCapResult as ResultMsg
        from ros_segcap_msgs.msg import VisualPrompt as PromptMsg
        from ros_segcap_msgs.srv import Segment as SegmentSrv
    except ImportError as exc:
        return None, str(exc)
    return SimpleNamespace(ResultMsg=ResultMsg, PromptMsg=PromptMsg, SegmentSrv=SegmentSrv,
                           SegmentAction=SegmentAction), ''


def status_result(status: str) -> SegCapResult:
    """Return a result without an answer that only carries a status."""
    return SegCapResult(answer='', status=status)


def prompt_from_msg(msg: Any) -> Optional[VisualPrompt]:
    """Convert a PointStamped or ros_segcap_msgs/VisualPrompt to a core VisualPrompt.

    Returns None for a VisualPrompt of type NONE. Raises InputError for a malformed prompt;
    whether it fits the image is checked by the core (VisualPrompt.validate).
    """
    if msg is None:
        return None
    if isinstance(msg, PointStamped):
        return VisualPrompt('point', point=(float(msg.point.x), float(msg.point.y)))
    if msg.type == msg.NONE:
        return None
    kind = {msg.POINT: 'point', msg.BOX: 'box', msg.MASK: 'mask'}.get(msg.type)
    if kind is None:
        raise InputError(f'visual prompt type {msg.type} is not NONE, POINT, BOX or MASK')
    if kind == 'point':
        return VisualPrompt('point', point=(float(msg.point.x), float(msg.point.y)))
    if kind == 'box':
        return VisualPrompt('box', box=tuple(float(v) for v in msg.box))
    if msg.mask.encoding not in ('mono8', '8UC1'):
        raise InputError(f'mask prompt must be mono8, got {msg.mask.encoding!r}')
    return VisualPrompt('mask', mask=image_to_numpy(msg.mask) > 0)


def box_to_roi(box: tuple[int, int, int, int]) -> RegionOfInterest:
    """Convert an inclusive (x1, y1, x2, y2) box to a RegionOfInterest (empty -> zeros)."""
    x1, y1, x2, y2 = box
    if x2 < x1 or y2 < y1:
        return RegionOfInterest()
    return RegionOfInterest(x_offset=int(x1), y_offset=int(y1), width=int(x2 - x1 + 1),
                            height=int(y2 - y1 + 1))


@dataclass(frozen=True)
class Envelope:
    """What the node adds to a core result: the frame, the command and when it came."""

    header: Header
    command: str
    command_stamp: Time
    encoder_runs: int


def result_to_msg(result: SegCapResult, env: Envelope, msg_type: type) -> Any:
    """Build a ros_segcap_msgs/SegCapResult from a core result."""
    msg = msg_type()
    msg.header = env.header
    msg.command = env.command
    msg.command_stamp = env.command_stamp
    msg.answer = result.answer
    msg.status = result.status
    msg.model = result.model
    msg.phrases = list(result.phrases)
    msg.masks = [mask_to_image(mask, env.header) for mask in result.masks]
    msg.scores = [float(s) for s in result.scores]
    msg.boxes = [box_to_roi(box) for box in result.boxes]
    msg.stage_names = list(result.timing.ms)
    msg.stage_ms = [float(v) for v in result.timing.ms.values()]
    msg.total_ms = float(result.timing.total)
    msg.encoder_runs = int(env.encoder_runs)
    msg.ids = [int(i) for i in result.ids]
    msg.stuff = [bool(s) for s in result.stuff]
    msg.match_scores = [float(s) for s in result.match_scores]
    msg.regrounded = bool(result.regrounded)
    return msg


def result_to_json(result: SegCapResult, env: Envelope) -> str:
    """Encode a result (without mask pixels) as JSON, for when ros_segcap_msgs is missing."""
    stamp = env.header.stamp
    return json.dumps({
        'header': {'stamp': {'sec': stamp.sec, 'nanosec': stamp.nanosec},
                   'frame_id': env.header.frame_id},
        'command': env.command,
        'command_stamp': {'sec': env.command_stamp.sec, 'nanosec': env.command_stamp.nanosec},
        'answer': result.answer, 'status': result.status, 'model': result.model,
        'phrases': result.phrases, 'scores': [float(s) for s in result.scores],
        'boxes': [list(map(int, b)) for b in result.boxes],
        'stage_ms': {k: round(v, 3) for k, v in result.timing.ms.items()},
        'total_ms': round(result.timing.total, 3), 'encoder_runs': env.encoder_runs,
        'ids': [int(i) for i in result.ids], 'stuff': [bool(s) for s in result.stuff],
        'match_scores': [float(s) for s in result.match_scores],
        'regrounded': bool(result.regrounded),
    })


Number = Union[int, float]


def diagnostics(name: str, hardware_id: str, stamp: Time, values: dict[str, Number | str],
                warning: str = '') -> DiagnosticArray:
    """Build a one-status DiagnosticArray; `warning` non-empty makes the level WARN."""
    status = DiagnosticStatus(
        level=DiagnosticStatus.WARN if warning else DiagnosticStatus.OK,
        name=name, hardware_id=hardware_id, message=warning or 'running',
        values=[KeyValue(key=k, value=f'{v:.3f}' if isinstance(v, float) else str(v))
                for k, v in values.items()])
    return DiagnosticArray(header=Header(stamp=stamp), status=[status])


def rate_hz(times: list[float], now: float, window: float = 2.0) -> float:
    """Return the event rate over the last `window` seconds of monotonic `times`."""
    recent = [t for t in times if now - t <= window]
    if len(recent) < 3 or recent[-1] <= recent[0]:
        return 0.0
    return (len(recent) - 1) / (recent[-1] - recent[0])
