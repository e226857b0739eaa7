"""Launch the goodpoint_extractor node.

    ros2 launch goodpoint_ros extractor.launch.py namespace:=/robot1 input_mode:=rgbd params_file:=my.yaml

Thin on purpose: every decision (remaps per input mode, which arguments override the params file,
the Fast DDS profile, namespace, use_sim_time) is made by ``goodpoint_ros.node.launch_logic.node_setup``
when the launch runs, which the test suite covers without launch_ros. ``ros2 launch ... --show-args``
lists the arguments; an empty one leaves the params file's value alone.
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch_ros.actions import Node

from goodpoint_ros.node.launch_logic import EXECUTABLE, LAUNCH_ARGUMENTS, PACKAGE, node_setup
from launch import LaunchDescription


def _node(context, *args, **kwargs):
    """Runs at launch time: resolves the arguments and the environment, then builds the node."""
    setup = node_setup(context.launch_configurations, getattr(context, "environment", None))
    return [
        Node(
            package=PACKAGE,
            executable=EXECUTABLE,
            name=setup.name,
            namespace=setup.namespace or None,
            parameters=setup.parameters,
            remappings=setup.remappings,
            additional_env=setup.env,
            output="screen",
        )
    ]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description) for a in LAUNCH_ARGUMENTS]
        + [OpaqueFunction(function=_node)]
    )
