"""Launch the goodpoint_extractor node: model/weights/device arguments, a params file, camera remaps.

    ros2 launch goodpoint_ros extractor.launch.py camera:=/camera model:=goodpoint_small device:=cpu

Subscribes to ``<camera>/image_raw`` (and ``<camera>/camera_info``); sets Fast DDS's profile to the
shipped 32 MB shared-memory one unless ``FASTDDS_DEFAULT_PROFILES_FILE`` is already set.
"""

import os

from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("goodpoint_ros")
    args = [
        DeclareLaunchArgument(
            "model", default_value="goodpoint_small", description="goodpoint | goodpoint_small | mdnet | mdnet_small"
        ),
        DeclareLaunchArgument(
            "weights", default_value="default", description="default | random | path to a .pt checkpoint"
        ),
        DeclareLaunchArgument("device", default_value="auto", description="auto | cpu | cuda"),
        DeclareLaunchArgument("camera", default_value="/camera", description="camera namespace: <camera>/image_raw"),
        DeclareLaunchArgument(
            "image_topic", default_value="image_raw", description="image topic inside the camera namespace"
        ),
        DeclareLaunchArgument(
            "input_mode", default_value="mono", description="mono | stereo | rgbd (odometry follows it)"
        ),
        DeclareLaunchArgument("odom_frame", default_value="odom", description="header.frame_id of ~/odometry"),
        DeclareLaunchArgument("child_frame", default_value="camera", description="child_frame_id of ~/odometry"),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([share, "config", "extractor.yaml"]),
            description="node parameters (YAML); the arguments above override it",
        ),
    ]
    actions = list(args)
    if not os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE"):
        actions.append(
            SetEnvironmentVariable(
                "FASTDDS_DEFAULT_PROFILES_FILE", PathJoinSubstitution([share, "config", "fastdds.xml"])
            )
        )
    camera = LaunchConfiguration("camera")
    actions.append(
        Node(
            package="goodpoint_ros",
            executable="extractor",
            name="goodpoint_extractor",
            output="screen",
            parameters=[
                LaunchConfiguration("params_file"),
                {
                    "model": LaunchConfiguration("model"),
                    "weights": LaunchConfiguration("weights"),
                    "device": LaunchConfiguration("device"),
                    "input_mode": LaunchConfiguration("input_mode"),
                    "odom_frame": LaunchConfiguration("odom_frame"),
                    "child_frame": LaunchConfiguration("child_frame"),
                },
            ],
            remappings=[
                ("image", [camera, "/", LaunchConfiguration("image_topic")]),
                ("camera_info", [camera, "/camera_info"]),
                ("left/image", [camera, "/left/", LaunchConfiguration("image_topic")]),
                ("right/image", [camera, "/right/", LaunchConfiguration("image_topic")]),
                ("right/camera_info", [camera, "/right/camera_info"]),
                ("depth", [camera, "/depth/image_raw"]),
            ],
        )
    )
    return LaunchDescription(actions)
