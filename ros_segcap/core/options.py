"""Every user-facing option of segcap, defined once: node parameters, CLI flags, pipeline.

One row of OPTIONS names an option, its type, default, description, range or choices, and
where it applies (`scopes`): 'node' (a segcap_node parameter), 'cli' (a `segcap infer` flag)
and 'pipeline' (a PipelineConfig field). `live` options may change while the node runs; the
others are read when the node is configured. The node's parameter descriptors, the CLI flags
and config/segcap.yaml (`python -m ros_segcap.core.options > config/segcap.yaml`) all come
from this table. A leaf module: the standard library only.
"""
from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

SCOPES = ('node', 'cli', 'pipeline')
BACKENDS = ('torch', 'onnxruntime', 'tensorrt', 'auto')
DECODE_PATHS = ('fast-q4', 'fast', 'reference')
IMAGE_QOS = ('sensor_data', 'best_effort', 'reliable')
MODES = ('command', 'panoptic')
NODE = frozenset({'node'})
ALL = frozenset(SCOPES)
MODEL = frozenset({'node', 'cli', 'pipeline'})


@dataclass(frozen=True)
class Option:
    """One option; `key` is its name in PipelineConfig when that differs from `name`."""

    name: str
    type: type
    default: Any
    description: str
    live: bool = False
    lo: Optional[float] = None
    hi: Optional[float] = None
    choices: tuple = ()
    scopes: frozenset = NODE
    key: str = ''

    @property
    def pipeline_key(self) -> str:
        """The option's PipelineConfig field name."""
        return self.key or self.name


OPTIONS = (
    Option('model', str, 'segcap-tiny', 'model registry name or model directory',
           scopes=MODEL),
    Option('backend', str, 'torch', 'vision backend', choices=BACKENDS, scopes=MODEL),
    Option('device', str, 'cpu', 'torch device for the model, e.g. cpu or cuda:0',
           scopes=MODEL),
    Option('image_size', int, 0, 'model input size in pixels; 0 = the model default',
           lo=0, hi=4096),
    Option('decode_path', str, 'fast-q4', 'LLM decode path; fast-q4 (GGUF blocks, C kernels) '
           'falls back to fast (fp32) where it cannot run',
           choices=DECODE_PATHS, scopes=MODEL),
    Option('max_new_tokens', int, 320, 'longest answer in tokens', live=True, lo=1, hi=1024,
           scopes=ALL),
    Option('temperature', float, 0.0, 'sampling temperature; 0 = greedy', live=True,
           lo=0.0, hi=2.0, scopes=ALL),
    Option('mask_threshold', float, 0.5, 'mask probability threshold', live=True,
           lo=0.0, hi=1.0, scopes=ALL),
    Option('refine_edges', bool, True, "snap mask edges to the image's colour edges",
           live=True, scopes=ALL),
    Option('check_presence', bool, True, "plain requests ('segment the red cup'): the "
           "model's class and colour heads may decide whether the answer finds the object "
           '(models with a presence_check)', live=True, scopes=ALL),
    Option('region_places', bool, True,
           'questions on a visual prompt: its place words ("at the front left of the '
           'table") and which of two regions is closer come from the masks (models with a '
           'table class)', live=True, scopes=ALL),
    Option('frame_buffer', int, 4, 'frames kept (with their encoder outputs)', lo=1, hi=64,
           scopes=frozenset({'node', 'pipeline'}), key='cache_frames'),
    Option('allow_pickle', bool, False, 'allow loading pickle weight files (only if you '
           'trust them)', scopes=MODEL),
    Option('engines_dir', str, '', "engine directory; '' = $SEGCAP_ENGINES, ./engines or "
           "the checkout's engines/", scopes=MODEL),
    Option('publish_overlay', bool, True, 'publish segcap/overlay (rgb8)', live=True),
    Option('continuous', bool, False, 're-run the last command on new frames', live=True),
    Option('continuous_rate', float, 1.0, 'highest re-run rate in continuous mode (Hz)',
           live=True, lo=0.01, hi=30.0),
    Option('mode', str, 'command', 'command: answer commands; panoptic: publish every object '
           'of each frame (at most continuous_rate Hz), no LLM', live=True, choices=MODES),
    Option('track_min_match', float, 0.3, 'tracking: a re-found object whose mask overlaps '
           'its last one less than this (IoU) is re-grounded by the LLM', live=True,
           lo=0.0, hi=1.0),
    Option('track_reground_s', float, 10.0, 'tracking: re-ground with the LLM at least this '
           'often (s); 0 = only when a match is lost or weak', live=True, lo=0.0, hi=3600.0),
    Option('track_retry_lost_s', float, 0.0, 'tracking: while an object is lost, ask the LLM '
           'for it at most this often (s); 0 = on every frame', live=True, lo=0.0, hi=3600.0),
    Option('queue_size', int, 4, 'commands waiting at most; more are dropped', lo=1, hi=1000),
    Option('compressed', bool, False, 'subscribe to image/compressed (jpeg/png) instead of '
           'image'),
    Option('image_qos', str, 'sensor_data', 'image subscription QoS', choices=IMAGE_QOS),
    Option('image_qos_depth', int, 5, 'image subscription queue depth', lo=1, hi=100),
    Option('command_qos_depth', int, 1000, 'command subscription queue depth (reliable)',
           lo=1, hi=10000),
    Option('max_image_megapixels', float, 40.0, 'larger images are refused with a status',
           live=True, lo=0.01, hi=500.0, scopes=frozenset({'node', 'cli'})),
    Option('diagnostics_period', float, 1.0, 'seconds between /diagnostics messages',
           lo=0.1, hi=60.0),
    Option('drop_warn_percent', float, 5.0, 'warn when more than this % of the image frames '
           'are lost on the way (judged from their header stamps)', live=True, lo=0.0,
           hi=100.0),
    Option('autostart', bool, False, 'configure and activate at start (unmanaged); '
           'false: wait for lifecycle transitions'),
)
BY_NAME = {o.name: o for o in OPTIONS}
LIVE = tuple(o.name for o in OPTIONS if o.live)


def option(name: str) -> Option:
    """Return the option called `name`; KeyError naming the known ones."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f'unknown option {name!r}; known options: {", ".join(BY_NAME)}') \
            from None


def in_scope(scope: str) -> tuple[Option, ...]:
    """Return the options of one scope ('node', 'cli' or 'pipeline'), in table order."""
    if scope not in SCOPES:
        raise ValueError(f'unknown scope {scope!r}; use one of {", ".join(SCOPES)}')
    return tuple(o for o in OPTIONS if scope in o.scopes)


def defaults(scope: str) -> dict[str, Any]:
    """Return {name: default} of one scope; 'pipeline' uses PipelineConfig field names."""
    if scope == 'pipeline':
        return {o.pipeline_key: o.default for o in in_scope(scope)}
    return {o.name: o.default for o in in_scope(scope)}


def live(scope: str) -> tuple[str, ...]:
    """Return the names (PipelineConfig names for 'pipeline') of the live options of a scope."""
    return tuple(o.pipeline_key if scope == 'pipeline' else o.name
                 for o in in_scope(scope) if o.live)


def pipeline_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """Pick the pipeline options out of node or CLI values, keyed by PipelineConfig name."""
    return {o.pipeline_key: values[o.name] for o in in_scope('pipeline') if o.name in values}


def check(name: str, value: Any) -> Optional[str]:
    """Return why `value` is not valid for option `name` (one line), or None."""
    opt = option(name)
    wanted = (int, float) if opt.type is float else opt.type
    if isinstance(value, bool) is not (opt.type is bool) or not isinstance(value, wanted):
        return f'{name}={value!r} must be of type {opt.type.__name__}'
    if opt.choices and value not in opt.choices:
        return f'{name}={value!r} must be one of {", ".join(opt.choices)}'
    if opt.lo is not None and not opt.lo <= value <= opt.hi:
        return f'{name}={value!r} must be from {opt.lo:g} to {opt.hi:g}'
    return None


def describe(opt: Option) -> str:
    """Return the description with its choices, as the node and the CLI show it."""
    if opt.choices:
        return f'{opt.description} (one of: {", ".join(opt.choices)})'
    return opt.description


def yaml_value(value: Any) -> str:
    """Write a default as YAML that rcl reads with the option's type."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, float):
        return repr(value)  # keeps the decimal point: rclpy refuses 1 for a float
    return str(value) if value != '' else "''"


YAML_HEADER = """\
# Parameters of segcap_node (ros_segcap), written from ros_segcap/core/options.py by
#   python -m ros_segcap.core.options > config/segcap.yaml
# Load with
#   ros2 run ros_segcap segcap_node --ros-args --params-file config/segcap.yaml
# or through launch/segcap.launch.py (params_file:=...). '/**' applies to any node name.
# segcap_node is a lifecycle node: configure loads the model, activate starts serving. The
# launch file drives both; with autostart: true the node does them itself.
# [restart] parameters are read at configure; the others can change live (ros2 param set).
/**:
  ros__parameters:
"""


def yaml_text(options: Iterable[Option] = OPTIONS) -> str:
    """Return config/segcap.yaml: every node parameter with its default and description."""
    lines = []
    for opt in options:
        if 'node' not in opt.scopes:
            continue
        entry = f'{f"    {opt.name}: {yaml_value(opt.default)}":<32}#'
        restart = '' if opt.live else ' [restart]'
        line = f'{entry} {describe(opt)}{restart}'
        if len(line) > 99:  # the description above, the marker on the line
            lines += textwrap.wrap(describe(opt), 95, initial_indent='    # ',
                                   subsequent_indent='    # ')
            line = entry + restart if restart else entry[:-1].rstrip()
        lines.append(line)
    return YAML_HEADER + '\n'.join(lines) + '\n'


if __name__ == '__main__':
    sys.stdout.write(yaml_text())
