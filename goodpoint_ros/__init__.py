"""goodpoint_ros: learned keypoints (GoodPoint, MD-Net) for ROS 2.

The core (models, features, matching, geometry) never imports rclpy; the ROS layer lives in
``goodpoint_ros.ros``.
"""

__version__ = "0.1.0"
