"""The node started with the launch logic's decisions, over real DDS: namespace, params file plus
only the given overrides, and ``qos: auto`` receiving from best-effort and reliable cameras alike."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("rclpy")

from goodpoint_ros.node.launch_logic import apply_fastdds_profile, node_setup  # noqa: E402

apply_fastdds_profile()  # before any participant exists in this process

import rclpy  # noqa: E402
from rcl_interfaces.srv import GetParameters  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image, PointCloud2  # noqa: E402

DOMAIN = 73
pytestmark = pytest.mark.slow  # node processes
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


class Client:
    """A camera and a listener in a private context of this process."""

    def __init__(self) -> None:
        self.context = Context()
        rclpy.init(context=self.context, domain_id=DOMAIN)
        self.node = rclpy.create_node("qos_probe", context=self.context)
        self.ex = SingleThreadedExecutor(context=self.context)
        self.ex.add_node(self.node)
        self.stamps: list[int] = []

    def listen(self, topic: str) -> None:
        self.node.create_subscription(PointCloud2, topic, lambda m: self.stamps.append(m.header.stamp.sec), RELIABLE)

    def spin_until(self, pred, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end and not pred():
            self.ex.spin_once(timeout_sec=0.05)
        return pred()

    def send(self, pub, sec: int) -> None:
        img = (np.random.default_rng(sec).uniform(0, 255, (120, 160))).astype(np.uint8)
        msg = Image(height=120, width=160, encoding="mono8", step=160, data=img.tobytes())
        msg.header.stamp.sec = sec
        pub.publish(msg)

    def close(self) -> None:
        self.ex.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def start_node(args: dict[str, str]) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("extractor")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "goodpoint_ros.ros.extractor_node"]
    setup = node_setup(args)
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN), PYTHONWARNINGS="ignore", **setup.env)
    return subprocess.Popen(
        cmd + setup.ros_args(), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=15)[0] or ""
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[0] or ""


@pytest.fixture
def my_yaml(tmp_path):
    f = tmp_path / "my.yaml"
    f.write_text(
        yaml.safe_dump({"/**": {"ros__parameters": {"warmup": False, "max_keypoints": 123, "model": "mdnet"}}})
    )
    return str(f)


def test_namespace_params_file_overrides_and_both_reliabilities_reach_the_node(my_yaml):
    client = Client()
    proc = start_node({"namespace": "/robot1", "camera": "/cam", "params_file": my_yaml, "model": "orb"})
    try:
        client.listen("/robot1/goodpoint_extractor/keypoints")
        best_effort = client.node.create_publisher(Image, "/cam/image_raw", qos_profile_sensor_data)
        reliable = client.node.create_publisher(Image, "/cam/image_raw", RELIABLE)
        ok = client.spin_until(
            lambda: (
                best_effort.get_subscription_count() > 0
                and reliable.get_subscription_count() > 0
                or proc.poll() is not None
            ),
            90,
        )
        assert ok and proc.poll() is None, stop(proc)[-3000:]
        # the launch argument model:=orb overrode my.yaml's mdnet; max_keypoints came from my.yaml
        cli = client.node.create_client(GetParameters, "/robot1/goodpoint_extractor/get_parameters")
        assert cli.wait_for_service(timeout_sec=10.0)
        fut = cli.call_async(GetParameters.Request(names=["model", "max_keypoints", "qos"]))
        client.ex.spin_until_future_complete(fut, timeout_sec=10.0)
        model, max_kp, qos = fut.result().values
        assert (model.string_value, max_kp.integer_value, qos.string_value) == ("orb", 123, "auto")
        # qos auto with no camera at start: best effort, so both cameras reach it
        for i in range(20):
            client.send(best_effort if i % 2 == 0 else reliable, 1000 + i)
            client.spin_until(lambda: False, 0.1)
        got = lambda: {s % 2 for s in client.stamps}  # noqa: E731
        assert client.spin_until(lambda: got() == {0, 1}, 20), (client.stamps, stop(proc)[-3000:])
    finally:
        out = stop(proc)
        client.close()
    assert "Traceback" not in out, out[-3000:]


def _extractor_subscriptions(client: Client, topic: str) -> list:
    return [i for i in client.node.get_subscriptions_info_by_topic(topic) if i.node_name == "goodpoint_extractor"]


def test_auto_matches_a_reliable_camera_found_at_start(my_yaml):
    client = Client()
    client.node.create_publisher(Image, "/cam2/image_raw", RELIABLE)
    client.spin_until(lambda: False, 1.0)  # the camera exists before the node starts
    proc = start_node({"camera": "/cam2", "params_file": my_yaml, "model": "orb"})
    try:
        found = lambda: _extractor_subscriptions(client, "/cam2/image_raw") or proc.poll() is not None  # noqa: E731
        assert client.spin_until(found, 90) and proc.poll() is None, stop(proc)[-3000:]
        infos = _extractor_subscriptions(client, "/cam2/image_raw")
        assert [i.qos_profile.reliability for i in infos] == [ReliabilityPolicy.RELIABLE]
    finally:
        stop(proc)
        client.close()


def test_qos_overrides_parameter_wins_over_auto(my_yaml, tmp_path):
    f = tmp_path / "override.yaml"
    conf = yaml.safe_load(Path(my_yaml).read_text())
    conf["/**"]["ros__parameters"]["qos_overrides"] = {"/cam3/image_raw": {"subscription": {"reliability": "reliable"}}}
    f.write_text(yaml.safe_dump(conf))
    client = Client()  # no camera yet: auto alone would choose best effort
    proc = start_node({"camera": "/cam3", "params_file": str(f), "model": "orb"})

    def infos():
        return [
            i
            for i in client.node.get_subscriptions_info_by_topic("/cam3/image_raw")
            if i.node_name == "goodpoint_extractor"
        ]

    try:
        assert client.spin_until(lambda: infos() or proc.poll() is not None, 90)
        assert proc.poll() is None, stop(proc)[-3000:]
        assert [i.qos_profile.reliability for i in infos()] == [ReliabilityPolicy.RELIABLE]
    finally:
        stop(proc)
        client.close()
