"""ROS 2 side of goodpoint_ros: the only package that imports rclpy (``layout`` stays ROS-free)."""
