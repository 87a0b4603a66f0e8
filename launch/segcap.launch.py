"""Launch segcap_node (a lifecycle node) with its parameter file and topic remappings.

    ros2 launch ros_segcap segcap.launch.py image_topic:=/camera/image_raw
    ros2 topic pub --once /command std_msgs/msg/String "{data: 'segment the red cup'}"

The answer is on /segcap/caption, the overlay (rgb8) on /segcap/overlay, the labels (mono8)
on /segcap/mask. With compressed:=true the node reads <image_topic>/compressed. The model,
backend and compressed arguments override params_file only when given.

segcap_node starts unconfigured. By default this launch file configures it (the model loads)
and, once it is inactive, activates it. With autostart:=false it stays unconfigured for a
lifecycle manager or for `ros2 lifecycle set /segcap_node configure` (then `activate`). The
node's own `autostart` parameter (an unmanaged start, for `ros2 run`) is always false here:
this file drives the transitions.
"""
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition

ARGUMENTS = (
    ('image_topic', 'image', 'camera topic (sensor_msgs/Image)'),
    ('command_topic', 'command', 'command topic (std_msgs/String)'),
    ('namespace', '', 'namespace of segcap_node'),
    ('model', '', 'model registry name or directory (default: from params_file)'),
    ('backend', '', 'torch, onnxruntime, tensorrt or auto (default: from params_file)'),
    ('compressed', '', 'true: read <image_topic>/compressed (default: from params_file)'),
    ('autostart', 'true', 'configure and activate segcap_node; false: leave it unconfigured '
                          'for a lifecycle manager'),
    ('log_level', 'info', 'ROS log level of the node'),
)
TRUE_WORDS = ('true', '1', 'yes', 'on')


def is_true(context: LaunchContext, name: str) -> bool:
    """Read a launch argument as a boolean."""
    return LaunchConfiguration(name).perform(context).strip().lower() in TRUE_WORDS


def parameter_overrides(context: LaunchContext) -> dict:
    """Return the node parameters given as launch arguments (empty ones are left out)."""
    overrides = {}
    for name in ('model', 'backend'):
        value = LaunchConfiguration(name).perform(context)
        if value:
            overrides[name] = value
    if LaunchConfiguration('compressed').perform(context):
        overrides['compressed'] = is_true(context, 'compressed')
    overrides['autostart'] = False  # the transitions below (or a manager) drive the node
    return overrides


def transitions(node: LifecycleNode) -> list:
    """Configure `node` now and activate it once it reaches inactive."""
    def change(transition_id: int) -> EmitEvent:
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                           transition_id=transition_id))

    activate = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=node, start_state='configuring', goal_state='inactive',
        entities=[change(Transition.TRANSITION_ACTIVATE)]))
    return [activate, change(Transition.TRANSITION_CONFIGURE)]  # the handler comes first


def segcap_node(context: LaunchContext) -> list:
    """Build the segcap_node action (and its transitions) once the arguments are known."""
    image_topic = LaunchConfiguration('image_topic').perform(context)
    parameters = [LaunchConfiguration('params_file').perform(context),
                  parameter_overrides(context)]  # later entries win over the file
    node = LifecycleNode(
        package='ros_segcap',
        executable='segcap_node',
        name='segcap_node',
        namespace=LaunchConfiguration('namespace').perform(context),
        output='screen',
        emulate_tty=True,
        parameters=parameters,
        remappings=[
            ('image', image_topic),
            ('image/compressed', image_topic + '/compressed'),
            ('command', LaunchConfiguration('command_topic').perform(context)),
        ],
        ros_arguments=['--log-level', LaunchConfiguration('log_level').perform(context)],
    )
    return [node] + (transitions(node) if is_true(context, 'autostart') else [])


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
