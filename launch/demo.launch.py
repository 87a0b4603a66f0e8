"""Launch the demo camera, segcap_node and (if installed) RViz showing the overlay and mask.

    ros2 launch ros_segcap demo.launch.py command:='segment the red cup'
    ros2 launch ros_segcap demo.launch.py images:=/path/to/photos rviz:=false

The camera publishes tabletop frames, a folder of images, a video or a bag on `image` at
`rate` Hz. With `command` set, it is published once (after `command_delay` seconds, as soon
as the node subscribes); more commands: ros2 topic pub --once /command std_msgs/msg/String ...
"""
import json
import shutil

from launch import LaunchContext, LaunchDescription
from launch.actions import (DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription,
                            OpaqueFunction, TimerAction)
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = (
    ('rate', '15.0', 'camera frame rate (Hz)'),
    ('images', '', 'publish the images of this folder instead of tabletop frames'),
    ('video', '', 'publish the frames of this video file instead'),
    ('bag', '', 'publish the image topic of this rosbag2/MCAP file instead'),
    ('model', '', 'model name (default: from the node parameter file)'),
    ('backend', '', 'vision backend (default: from the node parameter file)'),
    ('command', '', 'a command to send once the node is up, e.g. "segment the red cup"'),
    ('command_delay', '5.0', 'seconds to wait before sending `command`'),
    ('rviz', 'true', 'start RViz with config/segcap.rviz when rviz2 is installed'),
)
TRUE_WORDS = ('true', '1', 'yes', 'on')


def camera_node(context: LaunchContext) -> list:
    """Build the camera publisher with the chosen source."""
    arguments = ['--rate', LaunchConfiguration('rate').perform(context)]
    for source in ('images', 'video', 'bag'):
        value = LaunchConfiguration(source).perform(context)
        if value:
            arguments += [f'--{source}', value]
    return [Node(package='ros_segcap', executable='segcap_camera', name='segcap_camera',
                 output='screen', arguments=arguments)]


def rviz_node(context: LaunchContext) -> list:
    """Start RViz on config/segcap.rviz if asked for and installed."""
    if LaunchConfiguration('rviz').perform(context).strip().lower() not in TRUE_WORDS:
        return []
    if shutil.which('rviz2') is None and not _has_package('rviz2'):
        print('[demo.launch.py] rviz2 is not installed; not starting RViz')
        return []
    config = PathJoinSubstitution([FindPackageShare('ros_segcap'), 'config', 'segcap.rviz'])
    return [Node(package='rviz2', executable='rviz2', name='rviz2', output='screen',
                 arguments=['-d', config])]


def send_command(context: LaunchContext) -> list:
    """Publish `command` once on /command, waiting for the node's subscription."""
    text = LaunchConfiguration('command').perform(context)
    if not text:
        return []
    # A JSON string is a valid YAML scalar: quotes in the command cannot break the message.
    publish = ExecuteProcess(
        cmd=['ros2', 'topic', 'pub', '--once', '--wait-matching-subscriptions', '1',
             '/command', 'std_msgs/msg/String', '{data: %s}' % json.dumps(text)],
        output='screen')
    delay = float(LaunchConfiguration('command_delay').perform(context))
    return [TimerAction(period=delay, actions=[publish])]


def _has_package(name: str) -> bool:
    try:
        from ament_index_python.packages import get_package_prefix
        get_package_prefix(name)
    except (ImportError, LookupError, OSError, ValueError):
        return False
    return True


def generate_launch_description() -> LaunchDescription:
    """Declare the arguments, the camera, the included segcap launch, RViz and the command."""
    arguments = [DeclareLaunchArgument(name, default_value=default, description=description)
                 for name, default, description in ARGUMENTS]
    segcap = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(
            PathJoinSubstitution([FindPackageShare('ros_segcap'), 'launch', 'segcap.launch.py'])),
        launch_arguments={'model': LaunchConfiguration('model'),
                          'backend': LaunchConfiguration('backend')}.items())
    return LaunchDescription(arguments + [
        OpaqueFunction(function=camera_node),
        segcap,
        OpaqueFunction(function=rviz_node),
        OpaqueFunction(function=send_command),
    ])
