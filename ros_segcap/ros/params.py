"""Node parameters: declared once from the option table, with ranges, read into NodeConfig.

Every parameter is a row of ros_segcap/core/options.py (scope 'node'). `live` parameters may
change while the node runs; the others are refused while it is configured (clean it up or
restart it to change them).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from ros_segcap.core.options import Option, check, describe, in_scope, option

NODE_OPTIONS = in_scope('node')
NodeConfig = dataclasses.make_dataclass(
    'NodeConfig', [(o.name, o.type, dataclasses.field(default=o.default))
                   for o in NODE_OPTIONS], frozen=True)
NodeConfig.__doc__ = 'Everything the node reads from its parameters (see core/options.py).'


def descriptor(opt: Option) -> ParameterDescriptor:
    """Return the ROS descriptor of an option: description, range, read-only-ness noted."""
    text = describe(opt) + ('' if opt.live else ' [restart to change]')
    result = ParameterDescriptor(description=text)
    if opt.lo is not None and opt.type is int:
        result.integer_range = [IntegerRange(from_value=int(opt.lo), to_value=int(opt.hi),
                                             step=0)]
    elif opt.lo is not None:
        result.floating_point_range = [FloatingPointRange(
            from_value=float(opt.lo), to_value=float(opt.hi), step=0.0)]
    return result


def declare_parameters(node: Node) -> None:
    """Declare every parameter on `node` once, with its default and descriptor."""
    for opt in NODE_OPTIONS:
        node.declare_parameter(opt.name, opt.default, descriptor(opt))


def read_parameters(node: Node) -> Any:
    """Return the declared parameters as a NodeConfig; ValueError naming a bad value."""
    values = {opt.name: node.get_parameter(opt.name).value for opt in NODE_OPTIONS}
    for name, value in values.items():
        reason = check(name, value)
        if reason:
            raise ValueError(f'parameter {reason}')
    return NodeConfig(**values)


def apply_changes(config: Any, params: list[Parameter], configured: bool = True
                  ) -> tuple[Any, str]:
    """Return (new config, '') if every change can apply now, else (config, reason).

    Restart parameters change only while the node is not configured.
    """
    changes = {}
    for param in params:
        if not hasattr(config, param.name):
            continue  # e.g. use_sim_time: not ours
        if configured and not option(param.name).live and \
                param.value != getattr(config, param.name):
            return config, (f'{param.name} cannot change while the node is configured: '
                            f'clean the node up first (ros2 lifecycle set <node> cleanup) or '
                            f'restart it with {param.name}:={param.value}')
        reason = check(param.name, param.value)
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
