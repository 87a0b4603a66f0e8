"""Node parameters: declared once (with descriptions and ranges) and read into NodeConfig.

Each parameter is one ParamSpec. `live` parameters may change while the node runs; the
others are refused at run time with the reason (they need a restart).
"""
from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from ros_segcap.core.llm import DECODE_PATHS, DEFAULT_DECODE_PATH

BACKENDS = ('torch', 'onnxruntime', 'tensorrt', 'auto')
IMAGE_QOS = ('sensor_data', 'best_effort', 'reliable')
PIPELINE_OPTIONS = ('max_new_tokens', 'temperature', 'mask_threshold', 'refine_edges')


@dataclass(frozen=True)
class NodeConfig:
    """Everything the node reads from its parameters."""

    model: str = 'segcap-tiny'
    backend: str = 'torch'
    device: str = 'cpu'
    image_size: int = 0  # 0 = the model's own input size
    decode_path: str = DEFAULT_DECODE_PATH
    max_new_tokens: int = 48
    temperature: float = 0.0
    mask_threshold: float = 0.5
    refine_edges: bool = True
    publish_overlay: bool = True
    continuous: bool = False
    continuous_rate: float = 1.0  # Hz
    frame_buffer: int = 4
    queue_size: int = 4
    compressed: bool = False
    image_qos: str = 'sensor_data'
    image_qos_depth: int = 5
    command_qos_depth: int = 1000
    max_image_megapixels: float = 40.0
    diagnostics_period: float = 1.0  # s


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: its description, range or choices, and whether it applies live."""

    name: str
    description: str
    live: bool = False
    lo: Optional[float] = None
    hi: Optional[float] = None
    choices: Sequence[str] = ()


SPECS = (
    ParamSpec('model', 'model registry name or model directory (tiny-random: tests)'),
    ParamSpec('backend', 'vision backend', choices=BACKENDS),
    ParamSpec('device', 'torch device for the model, e.g. cpu or cuda:0'),
    ParamSpec('image_size', 'model input size in pixels; 0 = the model default', lo=0, hi=4096),
    ParamSpec('decode_path', 'LLM decode path: fast-q4 (GGUF blocks, C kernels; falls back to '
              'fast), fast (fp32), fast-int8, reference (Hugging Face forward)',
              choices=DECODE_PATHS),
    ParamSpec('max_new_tokens', 'longest answer in tokens', live=True, lo=1, hi=1024),
    ParamSpec('temperature', 'sampling temperature; 0 = greedy', live=True, lo=0.0, hi=2.0),
    ParamSpec('mask_threshold', 'mask probability threshold', live=True, lo=0.0, hi=1.0),
    ParamSpec('refine_edges', "snap mask edges to the image's colour edges", live=True),
    ParamSpec('publish_overlay', 'publish segcap/overlay (rgb8)', live=True),
    ParamSpec('continuous', 're-run the last command on new frames', live=True),
    ParamSpec('continuous_rate', 'highest re-run rate in continuous mode (Hz)', live=True,
              lo=0.01, hi=20.0),  # the node checks at 20 Hz
    ParamSpec('frame_buffer', 'frames kept (with their encoder outputs)', lo=1, hi=64),
    ParamSpec('queue_size', 'commands waiting at most; more are dropped', lo=1, hi=1000),
    ParamSpec('compressed', 'subscribe to image/compressed (jpeg/png) instead of image'),
    ParamSpec('image_qos', 'image subscription QoS', choices=IMAGE_QOS),
    ParamSpec('image_qos_depth', 'image subscription queue depth', lo=1, hi=100),
    ParamSpec('command_qos_depth', 'command subscription queue depth (reliable)', lo=1,
              hi=10000),
    ParamSpec('max_image_megapixels', 'larger images are refused with a status', live=True,
              lo=0.01, hi=500.0),
    ParamSpec('diagnostics_period', 'seconds between /diagnostics messages', lo=0.1,
              hi=60.0),
)
SPEC_BY_NAME = {spec.name: spec for spec in SPECS}


def _descriptor(spec: ParamSpec, default: Any) -> ParameterDescriptor:
    desc = spec.description
    if spec.choices:
        desc += f' (one of: {", ".join(spec.choices)})'
    if not spec.live:
        desc += ' [restart to change]'
    descriptor = ParameterDescriptor(description=desc)
    if spec.lo is not None and isinstance(default, bool) is False:
        if isinstance(default, int):
            descriptor.integer_range = [IntegerRange(from_value=int(spec.lo),
                                                     to_value=int(spec.hi), step=0)]
        elif isinstance(default, float):
            descriptor.floating_point_range = [FloatingPointRange(
                from_value=float(spec.lo), to_value=float(spec.hi), step=0.0)]
    return descriptor


def declare_parameters(node: Node) -> NodeConfig:
    """Declare every parameter on `node` once and return their values as a NodeConfig."""
    defaults = NodeConfig()
    for spec in SPECS:
        default = getattr(defaults, spec.name)
        node.declare_parameter(spec.name, default, _descriptor(spec, default))
    values = {spec.name: node.get_parameter(spec.name).value for spec in SPECS}
    config = NodeConfig(**values)
    for spec in SPECS:
        reason = check_value(spec, getattr(config, spec.name))
        if reason:
            raise ValueError(f'parameter {reason}')
    return config


def check_value(spec: ParamSpec, value: Any) -> Optional[str]:
    """Return why `value` is not valid for `spec`, or None."""
    if spec.choices and value not in spec.choices:
        return f'{spec.name}={value!r} must be one of {", ".join(spec.choices)}'
    return None


def apply_changes(config: NodeConfig, params: list[Parameter]) -> tuple[NodeConfig, str]:
    """Return (new config, '') if every change can apply live, else (config, reason)."""
    changes = {}
    for param in params:
        spec = SPEC_BY_NAME.get(param.name)
        if spec is None:
            continue  # e.g. use_sim_time: not ours
        if not spec.live and param.value != getattr(config, param.name):
            return config, (f'{param.name} cannot change while the node runs: restart the node '
                            f'with {param.name}:={param.value}')
        reason = check_value(spec, param.value)
        if reason:
            return config, reason
        changes[param.name] = param.value
    return dataclasses.replace(config, **changes), ''


def image_qos(config: NodeConfig) -> QoSProfile:
    """Return the image subscription QoS: sensor-data (best effort) unless configured."""
    if config.image_qos == 'sensor_data':
        profile = QoSProfile(**{k: getattr(qos_profile_sensor_data, k)
                                for k in ('reliability', 'durability', 'history')},
                             depth=config.image_qos_depth)
        return profile
    reliability = (ReliabilityPolicy.RELIABLE if config.image_qos == 'reliable'
                   else ReliabilityPolicy.BEST_EFFORT)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=config.image_qos_depth,
                      reliability=reliability)


def use_default_dds_profile() -> None:
    """Point Fast DDS at config/fastdds_shm.xml (64 MiB SHM) unless a profile is set."""
    if os.environ.get('FASTDDS_DEFAULT_PROFILES_FILE') or \
            os.environ.get('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp') != 'rmw_fastrtps_cpp':
        return
    here = Path(__file__).resolve()
    for path in (here.parents[2] / 'config' / 'fastdds_shm.xml',
                 Path(sys.prefix) / 'share' / 'ros_segcap' / 'config' / 'fastdds_shm.xml'):
        if path.is_file():
            os.environ['FASTDDS_DEFAULT_PROFILES_FILE'] = str(path)
            return
