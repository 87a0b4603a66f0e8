"""Launch segcap_node with its parameter file and topic remappings.

    ros2 launch ros_segcap segcap.launch.py image_topic:=/camera/image_raw
    ros2 topic pub --once /command std_msgs/msg/String "{data: 'segment the red cup'}"

The answer is on /segcap/caption, the overlay (rgb8) on /segcap/overlay, the labels (mono8)
on /segcap/mask. With compressed:=true the node reads <image_topic>/compressed. The model,
backend and compressed arguments override params_file only when given.
"""
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = (
    ('image_topic', 'image', 'camera topic (sensor_msgs/Image)'),
    ('command_topic', 'command', 'command topic (std_msgs/String)'),
    ('model', '', 'model registry name or directory (default: from params_file)'),
    ('backend', '', 'torch, onnxruntime, tensorrt or auto (default: from params_file)'),
    ('compressed', '', 'true: read <image_topic>/compressed (default: from params_file)'),
    ('log_level', 'info', 'ROS log level of the node'),
)
TRUE_WORDS = ('true', '1', 'yes', 'on')


def parameter_overrides(context: LaunchContext) -> dict:
    """Return the node parameters given as launch arguments (empty ones are left out)."""
    overrides = {}
    for name in ('model', 'backend'):
        value = LaunchConfiguration(name).perform(context)
        if value:
            overrides[name] = value
    compressed = LaunchConfiguration('compressed').perform(context)
    if compressed:
        overrides['compressed'] = compressed.strip().lower() in TRUE_WORDS
    return overrides


def segcap_node(context: LaunchContext) -> list:
    """Build the segcap_node action once the launch arguments are known."""
    image_topic = LaunchConfiguration('image_topic').perform(context)
    parameters = [LaunchConfiguration('params_file').perform(context)]
    overrides = parameter_overrides(context)
    if overrides:
        parameters.append(overrides)  # later entries win over the file
    return [Node(
        package='ros_segcap',
        executable='segcap_node',
        name='segcap_node',
        output='screen',
        emulate_tty=True,
        parameters=parameters,
        remappings=[
            ('image', image_topic),
            ('image/compressed', image_topic + '/compressed'),
            ('command', LaunchConfiguration('command_topic').perform(context)),
        ],
        ros_arguments=['--log-level', LaunchConfiguration('log_level').perform(context)],
    )]


def generate_launch_description() -> LaunchDescription:
    """Declare the launch arguments and the segcap_node action."""
    default_params = PathJoinSubstitution(
        [FindPackageShare('ros_segcap'), 'config', 'segcap.yaml'])
    arguments = [DeclareLaunchArgument(name, default_value=default, description=description)
                 for name, default, description in ARGUMENTS]
    arguments.append(DeclareLaunchArgument(
        'params_file', default_value=default_params,
        description='node parameter YAML (default: share/ros_segcap/config/segcap.yaml)'))
    return LaunchDescription(arguments + [OpaqueFunction(function=segcap_node)])
