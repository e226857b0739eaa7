"""ROS 2 side of goodpoint_ros: every module here imports rclpy; the ROS-free core is the package above."""
