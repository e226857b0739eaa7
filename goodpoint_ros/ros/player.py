"""``player``: a virtual camera moving over a real photo, published as sensor_msgs/Image at a fixed rate.

Each frame is the photo warped by a known homography (smooth pan, roll and zoom), so the demo and
the tests see real image content with exact ground truth. ``camera_sequence`` is ROS-free (rclpy is
imported only by the publisher) so tests and the bag tool can build the same frames offline.
"""

from __future__ import annotations

import argparse
import math
import time

import cv2
import numpy as np

from goodpoint_ros.io.image_files import sample_photo
from goodpoint_ros.node.launch_logic import apply_fastdds_profile
from goodpoint_ros.ros.conversions import numpy_to_image
from goodpoint_ros.vo.geometry import warp_image


def camera_homography(t: float, photo_size: tuple[int, int], size: tuple[int, int], motion: float = 1.0) -> np.ndarray:
    """Photo -> frame homography at time ``t`` (seconds): a slow pan/roll/zoom loop, 20 s period."""
    pw, ph = photo_size
    w, h = size
    phase = 2 * math.pi * t / 20.0
    scale = 0.9 * min(w / pw, h / ph) * 2.0 * (1.0 + 0.1 * motion * math.sin(phase * 2))
    theta = 0.15 * motion * math.sin(phase)
    cx = pw / 2 + motion * 0.14 * pw * math.sin(phase)
    cy = ph / 2 + motion * 0.1 * ph * math.sin(phase * 1.5)
    c, s = math.cos(theta) * scale, math.sin(theta) * scale
    A = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    T0 = np.array([[1.0, 0.0, -cx], [0.0, 1.0, -cy], [0.0, 0.0, 1.0]])
    T1 = np.array([[1.0, 0.0, w / 2], [0.0, 1.0, h / 2], [0.0, 0.0, 1.0]])
    P = np.eye(3)
    P[2, :2] = 1e-4 * motion * np.array([math.sin(phase), math.cos(phase)]) / max(scale, 1e-6)  # mild perspective
    return T1 @ A @ P @ T0


def camera_sequence(
    photo: np.ndarray, count: int, size: tuple[int, int] = (320, 240), rate: float = 10.0, motion: float = 1.0
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``count`` frames (RGB uint8) of the moving camera and their photo->frame homographies."""
    frames, hs = [], []
    for i in range(count):
        H = camera_homography(i / rate, (photo.shape[1], photo.shape[0]), size, motion)
        frames.append(warp_image(photo, H, size))
        hs.append(H)
    return frames, hs


def frame_to_frame(h0: np.ndarray, h1: np.ndarray) -> np.ndarray:
    """The homography that maps frame 0 pixels to frame 1 pixels."""
    return h1 @ np.linalg.inv(h0)


def camera_info(width: int, height: int, frame_id: str = "camera"):
    """A plain pinhole sensor_msgs/CameraInfo for the virtual camera (f = 0.9 width, centred, no
    distortion): what the player publishes, and what the node tests and benches send."""
    from sensor_msgs.msg import CameraInfo  # a ROS message: only where one is published

    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    f = 0.9 * width
    info.k = [f, 0.0, width / 2, 0.0, f, height / 2, 0.0, 0.0, 1.0]
    info.header.frame_id = frame_id
    return info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Publish a virtual camera moving over a real photo.")
    ap.add_argument("--photo", default="astronaut", help="scikit-image photo name (astronaut, coffee, rocket...)")
    ap.add_argument("--topic", default="image", help="Image topic (camera_info is published next to it)")
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--rate", type=float, default=10.0, help="frames per second")
    ap.add_argument("--frames", type=int, default=0, help="stop after this many frames (0: run until stopped)")
    ap.add_argument("--encoding", default="rgb8", choices=["rgb8", "bgr8", "mono8"])
    ap.add_argument("--motion", type=float, default=1.0, help="motion amplitude (0: static camera)")
    ap.add_argument("--qos", default="sensor_data", choices=["sensor_data", "reliable"])
    ap.add_argument("--frame-id", default="camera")
    ap.add_argument("--start-delay", type=float, default=0.0, help="seconds to wait for subscribers first")
    args, _ros = ap.parse_known_args(argv)
    return args


def main(argv: list[str] | None = None) -> None:
    # rclpy only here: camera_sequence above is used without ROS (bag tool tests, benches)
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image

    args = parse_args(argv)
    apply_fastdds_profile()  # before rclpy.init creates the participant

    rclpy.init()
    node = rclpy.create_node("goodpoint_player")
    qos = (
        qos_profile_sensor_data
        if args.qos == "sensor_data"
        else QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    )
    pub = node.create_publisher(Image, args.topic, qos)
    info_topic = args.topic.rsplit("/", 1)[0] + "/camera_info" if "/" in args.topic else "camera_info"
    pub_info = node.create_publisher(CameraInfo, info_topic, qos)
    photo = sample_photo(args.photo)
    size = (args.width, args.height)
    info = camera_info(args.width, args.height, args.frame_id)
    try:
        time.sleep(args.start_delay)
        period = 1.0 / args.rate
        start = time.monotonic()
        i = 0
        while rclpy.ok() and (args.frames <= 0 or i < args.frames):
            H = camera_homography(i / args.rate, (photo.shape[1], photo.shape[0]), size, args.motion)
            frame = warp_image(photo, H, size)
            if args.encoding == "mono8":
                frame = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
            elif args.encoding == "bgr8":
                frame = frame[..., ::-1]
            stamp = node.get_clock().now().to_msg()
            msg = numpy_to_image(frame, args.encoding)
            msg.header.stamp, msg.header.frame_id = stamp, args.frame_id
            info.header.stamp = stamp
            pub.publish(msg)
            pub_info.publish(info)
            i += 1
            delay = start + i * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
