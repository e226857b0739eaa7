"""The ``goodpoint_extractor`` node: images in; keypoints, frame-to-frame matches, tracks out.

Callbacks decode nothing: they check each message in O(1) (``image_codec.check_message``: a
malformed one is counted in ``malformed`` and ``decode_errors`` and never stored) and store the
newest frame (or synchronised set) in a one-item slot. Two worker threads do the rest: the first
decodes whatever is newest and runs the network, the second matches it and publishes while the
first already runs the next frame's network (the matching and messages of one 640x480 frame cost
~25 ms that no longer add to the network's time). A slow model therefore never builds a backlog:
frames overwritten in the slot are counted as dropped. What only the whole stream shows (the model
falling behind the camera, stereo/RGB-D inputs that never pair, a camera_info or depth image of
another size, zero or repeated stamps) is a WARN on /diagnostics and a throttled log line.
Frames lost before the callback are counted from header-stamp gaps (``accounting.StampGaps``)
and, where the RMW reports it, its message-lost event. The ROS side runs on a
``SingleThreadedExecutor``: every callback is O(1) (the model runs on the worker threads), and
rclpy 9's ``MultiThreadedExecutor`` re-queues a ready callback in a busy loop while it waits for a
pool thread (rclpy #1452): with camera_info and every output subscribed the node fell to 1-2 Hz
in about half of all 10-second trials at 30 Hz (test_node_live.py). Matching, tracks and odometry
run only while an output that needs them has a subscriber; keypoints always.
Outputs carry the input header (same stamp, same frame_id). Topic layouts: ``layout.py``.
Once ``camera_info`` has arrived, ``~/tracks`` (VINS-Fusion layout) and ``~/odometry`` follow the
input mode (mono / RGB-D / stereo); tracking state and resets go to ``/diagnostics``. The per-frame
work is ``pipeline.FramePipeline`` (shared with goodpoint-bag): this node turns messages into its
inputs and its ``FrameResult`` into messages (``conversions.py``, ``vo.py``).
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField

from goodpoint_ros.device import keep_freed_memory, release_freed_memory
from goodpoint_ros.errors import one_line
from goodpoint_ros.io.cloud_layout import build_cloud, frame_records, stamp_ns, stamp_of
from goodpoint_ros.io.drawing import draw_debug
from goodpoint_ros.io.image_codec import (
    ImageDecodeError,
    UnsupportedEncodingError,
    check_message,
    decode_image,
    depth_to_meters,
)
from goodpoint_ros.node.accounting import RateCounter, StampGaps, TimeWindow
from goodpoint_ros.node.launch_logic import NODE_NAME, apply_fastdds_profile
from goodpoint_ros.node.startup import (
    StartupError,
)
from goodpoint_ros.node.sync import ApproxTimeSync
from goodpoint_ros.params import DYNAMIC, PARAMS, TABLE, first_problem
from goodpoint_ros.ros.conversions import numpy_to_image
from goodpoint_ros.ros.vo import OdometryPublisher
from goodpoint_ros.settings import ExtractorSettings, PipelineSettings, match_settings
from goodpoint_ros.vo.odometry import Calibration

try:  # qos_overrides.<topic>.subscription.* parameters (rclpy >= Galactic)
    from rclpy.qos_overriding_options import QoSOverridingOptions
except ImportError:  # pragma: no cover - older rclpy
    QoSOverridingOptions = None
try:  # the RMW's message-lost event: rclpy >= Iron here, rclpy.qos_event on Humble
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # pragma: no cover - Humble
    try:
        from rclpy.qos_event import SubscriptionEventCallbacks
    except ImportError:
        SubscriptionEventCallbacks = None


def descriptor_for(prm: Any) -> ParameterDescriptor:
    """A table entry as a typed ROS descriptor: read-only start-time parameters, ranges, choices."""
    d = ParameterDescriptor(
        name=prm.name,
        description=prm.description,
        read_only=prm.read_only,
        additional_constraints=prm.constraints(),
    )
    if prm.min is not None and prm.max is not None and prm.type is int:
        d.integer_range = [IntegerRange(from_value=int(prm.min), to_value=int(prm.max), step=0)]
    elif prm.min is not None and prm.max is not None and prm.type is float:
        d.floating_point_range = [FloatingPointRange(from_value=float(prm.min), to_value=float(prm.max), step=0.0)]
    return d


class ExtractorNode(Node):
    """GoodPoint / MD-Net keypoints, matches and track ids for a mono, stereo or RGB-D camera."""

    _POST_SET = True  # use rclpy's post-set callback where it exists (False: the Humble path)
    # qos auto: how long after the node's start a camera's publisher may take to be discovered
    # (Fast DDS between two processes on one machine, measured here: 0.6-2.6 s)
    DISCOVERY_WAIT_S = 3.0
    _discovery_deadline: float | None = None

    def __init__(self, **kwargs: Any) -> None:
        self._started = time.monotonic()
        super().__init__(NODE_NAME, **kwargs)  # the launch file may rename it
        self.params = p = self._declare_parameters()  # StartupError names a bad one
        settings = ExtractorSettings.from_params(p)  # the one settings path
        self.frontend, threads_note = settings.build(spare_cores=1)  # a core for the output stage
        self.get_logger().info(threads_note)
        self.extractor = self.frontend.extractor
        self.model_name = str(p["model"])
        self.device_name = str(getattr(self.extractor, "device", p["device"]))

        self._init_state(float(p["diagnostics_window"]))
        self._create_outputs(p)
        self._subscribe_inputs(p)
        self._start(p)

    def _init_state(self, window: float) -> None:
        """Locks, the keep-latest slot, the frame counters and the /diagnostics windows."""
        self._lock = threading.Lock()  # the input slot and counters
        self._model_lock = threading.Lock()  # parameters and the model's detection config
        self._slot: tuple[Any, float, Calibration] | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.received = 0  # frames (or synchronised sets) stored in the slot
        self.processed = 0
        self.dropped = 0  # valid frames replaced in the slot by a newer one (keep-latest, by design)
        self.malformed = 0  # messages refused on arrival (check_message), never stored
        self.unsupported_encoding = 0  # well-formed messages in an encoding the codec does not know
        self.decode_errors = 0  # every message that could not be decoded: malformed + unsupported + failed
        self.errors = 0
        self.lost_event = 0  # frames the RMW reported lost (message-lost event), where it reports any
        self.lost_event_support = "n/a"  # yes | unsupported (set per subscription in _subscribe)
        self.gaps: dict[str, StampGaps] = {}  # per input topic: frames missing from the stamps
        self.latencies, self.extract_times = TimeWindow(window), TimeWindow(window)
        self.overheads = TimeWindow(window)  # per frame: in-node latency minus extraction
        self.in_rate, self.out_rate = RateCounter(window), RateCounter(window)
        self.arrival_rate = RateCounter(window)  # the camera's (or left/colour) messages, valid or not
        self._last_arrival: dict[int, float] = {}  # input index -> monotonic time of its last message
        self._problems: dict[str, tuple[float, str]] = {}  # warning key -> (last time, text): /diagnostics
        self._sync_seen = (0, 0)  # (sets emitted, messages unpaired) at the last diagnostics
        self._peak_pixels = 0  # the largest frame since memory was last released
        self.outputs: dict[str, str] = {}  # output -> active | idle (no subscribers) | off (...), last frame
        self._warned: dict[str, float] = {}
        self.calib = Calibration()  # replaced whole by camera_info; each frame keeps its own

    def _create_outputs(self, p: dict[str, Any]) -> None:
        """Every publisher, and the frame pipeline behind them."""
        out_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        # the PointCloud2 outputs, by the names of cloud_layout.frame_records
        clouds = ("keypoints", "matches") + (
            ("right/keypoints", "stereo_matches") if p["input_mode"] == "stereo" else ()
        )
        self.clouds = {name: self.create_publisher(PointCloud2, f"~/{name}", out_qos) for name in clouds}
        self.pub_debug = self.create_publisher(Image, "~/debug_image", out_qos)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", out_qos)
        self.vo = OdometryPublisher(self, p, out_qos)
        self.mode = p["input_mode"]
        # extract_lock: a detection change lands between frames, never during one
        self.pipeline = PipelineSettings.from_params(p).build(self.extractor, extract_lock=self._model_lock)

    def _subscribe_inputs(self, p: dict[str, Any]) -> None:
        """The image input(s) of the input mode and camera_info."""
        img_type, suffix = (CompressedImage, "/compressed") if p["compressed"] else (Image, "")
        self.sync: ApproxTimeSync | None = None
        self.input_qos: dict[str, str] = {}  # resolved topic -> reliability chosen (log, tests)
        if self.mode == "mono":
            topic = self._image_topic("image", suffix)
            resolved = self._resolve(topic)
            self._subscribe(img_type, topic, lambda m: self._on_image(m, resolved))
            self.input_names = ("image",)
        elif self.mode in ("stereo", "rgbd"):
            self.sync = ApproxTimeSync(2, float(p["sync_slop"]), self._on_set, int(p["sync_queue_size"]))
            first, second = ("left/image", "right/image") if self.mode == "stereo" else ("image", "depth")
            second_type = img_type if self.mode == "stereo" else Image
            second_topic = self._image_topic(second, suffix if self.mode == "stereo" else "")
            first_topic = self._image_topic(first, suffix)
            t0, t1 = self._resolve(first_topic), self._resolve(second_topic)
            self.input_names = ("left image", "right image") if self.mode == "stereo" else ("image", "depth")
            self._subscribe(img_type, first_topic, lambda m: self._on_part(0, m, t0))
            self._subscribe(second_type, second_topic, lambda m: self._on_part(1, m, t1))
        self._subscribe(CameraInfo, "camera_info", self._on_info, overridable=False)
        if self.mode == "stereo":
            self._subscribe(CameraInfo, "right/camera_info", self._on_right_info, overridable=False)

    def _start(self, p: dict[str, Any]) -> None:
        """Parameter callbacks, warm-up, the diagnostics timer and the two worker threads."""
        # Validate in the on-set callback, apply after rclpy stored the values (post-set callback,
        # rclpy >= Iron); on Humble a one-shot timer applies them right after the set call returns.
        self.add_on_set_parameters_callback(self._on_params)
        if self._POST_SET and hasattr(self, "add_post_set_parameters_callback"):
            self.add_post_set_parameters_callback(self._apply_params)
        if p["warmup"]:
            self._warmup()
        self.create_timer(float(p["diagnostics_period"]), self._publish_diagnostics)
        self._handoff: queue.Queue = queue.Queue(maxsize=1)  # stage 1 (network) -> stage 2 (the rest)
        self._workers = [
            threading.Thread(target=self._work, name="goodpoint_network", daemon=True),
            threading.Thread(target=self._finish, name="goodpoint_outputs", daemon=True),
        ]
        for worker in self._workers:
            worker.start()
        self.get_logger().info(
            f"goodpoint_extractor ready: model={self.model_name} device={self.device_name} mode={self.mode} "
            f"input={'compressed' if p['compressed'] else 'raw'} qos={p['qos']} "
            + " ".join(f"{t}:{r}" for t, r in self.input_qos.items())
            + f" confident_score>{self.extractor.confident_score:g}"  # the fill's points score below
        )

    def _resolve(self, name: str) -> str:
        resolve = getattr(self, "resolve_topic_name", None)  # rclpy >= Humble
        if resolve is not None:
            return resolve(name)
        return name if name.startswith("/") else f"{self.get_namespace().rstrip('/')}/{name}"

    def _input_qos(self, topic: str) -> QoSProfile:
        """The subscription QoS for ``topic`` from the ``qos`` parameter.

        ``auto`` looks at the publishers already on the topic. A best-effort subscription receives
        from best-effort *and* reliable publishers, while a reliable one receives only from reliable
        publishers (DDS's request/offer rule). So: reliable only when every publisher found is
        reliable (the camera then retransmits lost fragments of large images for us, as
        image_pipeline's nodes match their publisher); best effort when any is best effort, and when
        none is found yet (discovery may lag the node's start): the one choice that receives from
        whatever camera appears later. Depth stays small: the node keeps only the newest frame.
        """
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        if self.params["qos"] == "reliable":
            return reliable
        if self.params["qos"] == "sensor_data":
            return qos_profile_sensor_data
        # A camera already running may not be discovered yet this soon after the node's participant
        # appeared: poll the graph (filled by the middleware's own thread) for a short while, once.
        if self._discovery_deadline is None:  # counted from the node's start: model loading counts too
            self._discovery_deadline = self._started + self.DISCOVERY_WAIT_S
        while True:
            try:
                infos = self.get_publishers_info_by_topic(topic)
            except Exception:  # an unresolvable name: the subscription itself will say so
                infos = []
            if infos or time.monotonic() >= self._discovery_deadline:
                break
            time.sleep(0.05)
        if infos and all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos):
            return reliable
        return qos_profile_sensor_data

    def _subscribe(self, msg_type: Any, name: str, callback: Any, overridable: bool = True) -> Any:
        """An input subscription with the ``qos`` rule; image topics also accept ``qos_overrides``
        (``qos_overrides./cam/image.subscription.reliability: reliable`` in the params file)."""
        topic = self._resolve(name)
        qos = self._input_qos(topic)
        kwargs: dict[str, Any] = {}
        if overridable and QoSOverridingOptions is not None:
            kwargs["qos_overriding_options"] = QoSOverridingOptions.with_default_policies()
        if overridable:  # image inputs: the loss counters below
            self.gaps[topic] = StampGaps()
        sub = None
        if overridable and SubscriptionEventCallbacks is not None:
            try:  # RMWs without the message-lost event refuse it when the subscription is made
                events = SubscriptionEventCallbacks(message_lost=self._on_lost)
                sub = self.create_subscription(msg_type, name, callback, qos, event_callbacks=events, **kwargs)
                self.lost_event_support = "yes"
            except Exception:
                self.lost_event_support = "unsupported"
        if sub is None:
            sub = self.create_subscription(msg_type, name, callback, qos, **kwargs)
        actual = getattr(sub, "qos_profile", qos)  # after overrides where rclpy exposes it
        self.input_qos[topic] = "reliable" if actual.reliability == ReliabilityPolicy.RELIABLE else "best_effort"
        return sub

    def _image_topic(self, name: str, suffix: str) -> str:
        """``name`` after remapping, plus image_transport's ``/compressed`` suffix when asked, so that
        ``-r image:=/camera/image_raw`` also moves the compressed input to ``/camera/image_raw/compressed``."""
        if not suffix:
            return name
        resolve = getattr(self, "resolve_topic_name", None)  # rclpy >= Humble; else remap <name>/compressed
        return resolve(name) + suffix if resolve is not None else name + suffix

    # --- parameters -------------------------------------------------------------------------
    def _declare_parameters(self) -> dict[str, Any]:
        """Declare every parameter of the table, typed; return the values, all checked."""
        values: dict[str, Any] = {}
        for prm in PARAMS:
            try:  # rclpy refuses an override of the wrong type or out of the descriptor's range
                values[prm.name] = self.declare_parameter(prm.name, prm.default, descriptor_for(prm)).value
            except Exception as e:  # InvalidParameterValueException / InvalidParameterTypeException
                text = one_line(e).removesuffix(f": {prm.name}")  # rclpy's wording, minus its frame
                raise StartupError(prm.name, text.split("Reason: ", 1)[-1]) from None
        bad = first_problem(values)  # choices and patterns (rclpy checks only ranges)
        if bad:
            raise StartupError(*bad)
        return values

    def _on_params(self, params: list) -> SetParametersResult:
        """Validate only: ranges, choices, read-only (rclpy checks the descriptors first; these
        checks hold the same rules wherever rclpy's do not). Nothing is applied here: another
        callback may still refuse the set, and rclpy has not stored the values yet."""
        for prm in params:
            spec = TABLE.get(prm.name)
            if spec is None:  # qos_overrides.* and rclpy's own (use_sim_time): not ours to judge
                continue
            if spec.read_only and prm.value != self.params[prm.name]:
                return SetParametersResult(
                    successful=False,
                    reason=f"{prm.name} is read-only (read once at start); restart the node to change it",
                )
            problem = spec.check(prm.value)
            if problem:
                return SetParametersResult(successful=False, reason=f"{prm.name}: {problem}")
        if not (self._POST_SET and hasattr(self, "add_post_set_parameters_callback")):
            self._apply_soon()  # Humble: no post-set callback
        return SetParametersResult(successful=True)

    def _apply_soon(self) -> None:
        """Humble fallback: a one-shot timer applies the values once rclpy has stored them."""
        holder: list = []

        def fire() -> None:
            self.destroy_timer(holder[0])
            self._apply_params()

        holder.append(self.create_timer(0.001, fire))

    def _apply_params(self, _params: list | None = None) -> None:
        """Apply the stored dynamic values (post-set callback, or the Humble timer)."""
        new = dict(self.params)
        new.update({name: self.get_parameter(name).value for name in DYNAMIC})
        with self._model_lock:  # the worker reads params/model conf under the same lock
            self.params = new
            self.frontend.apply(new)

    # --- input ------------------------------------------------------------------------------
    def _on_info(self, msg: CameraInfo) -> None:
        k = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
        d = np.asarray(msg.d, dtype=np.float64)
        self.calib = self.calib._replace(
            K=k if k[0, 0] > 0 else None,
            D=d if len(d) and np.any(d != 0) else None,
            size=(int(msg.width), int(msg.height)) if msg.width and msg.height else None,
        )  # callbacks run on one executor thread: no lost update between the two camera_infos

    def _on_right_info(self, msg: CameraInfo) -> None:
        self.calib = self.calib._replace(P_right=np.asarray(msg.p, dtype=np.float64).reshape(3, 4))

    def _on_lost(self, info: Any) -> None:
        """The RMW's message-lost event (Fast DDS reports some losses, not all: see accounting.py)."""
        self.lost_event += int(info.total_count_change)

    def _arrived(self, msg: Any, topic: str, index: int = 0, depth: bool = False) -> bool:
        """Arrival bookkeeping for one input message: the stamp-gap loss count, then the O(1)
        validity check. A refused message is counted here (never stored, so never 'dropped')."""
        now = time.monotonic()
        self._last_arrival[index] = now
        if index == 0:
            self.arrival_rate.tick(now)
        gaps = self.gaps.get(topic)
        if gaps is not None:
            gaps.add(stamp_ns(stamp_of(msg.header)))
        try:
            check_message(msg, max_pixels=int(self.params["max_pixels"]) or None, depth=depth)
        except ImageDecodeError as e:
            self._refused(e, on_arrival=True)
            return False
        return True

    def _refused(self, e: ImageDecodeError, on_arrival: bool) -> None:
        """Count and log (throttled) one message that cannot be decoded: an unknown encoding is
        its own counter, logged once per encoding; anything else on arrival is malformed."""
        with self._lock:
            self.decode_errors += 1
            if isinstance(e, UnsupportedEncodingError):
                self.unsupported_encoding += 1
            elif on_arrival:
                self.malformed += 1
        if isinstance(e, UnsupportedEncodingError):
            self._warn(f"encoding {e}", f"skipping every image in this encoding: {e}", period=float("inf"))
        else:
            self._warn("decode", f"skipping malformed image ({self.decode_errors} so far): {e}")

    def _store(self, item: Any) -> None:
        now = time.monotonic()
        with self._lock:
            self.received += 1
            if self._slot is not None:
                self.dropped += 1
            self._slot = (item, now, self.calib)
        self.in_rate.tick(now)
        self._wake.set()

    def _on_image(self, msg: Any, topic: str = "") -> None:
        if self._arrived(msg, topic):
            self._store(msg)

    def _on_part(self, index: int, msg: Any, topic: str = "") -> None:
        if self._arrived(msg, topic, index, depth=self.mode == "rgbd" and index == 1):
            self.sync.add(index, stamp_ns(stamp_of(msg.header)), msg)

    def _on_set(self, msgs: list) -> None:
        self._store(tuple(msgs))

    def _warn(self, key: str, text: str, period: float = 5.0) -> None:
        """Log ``text`` at most once per ``period`` per ``key``; /diagnostics shows it (level WARN)
        for ``diagnostics_window`` seconds after its last occurrence."""
        now = time.monotonic()
        self._problems[key] = (now, text)
        if now - self._warned.get(key, -1e9) >= period:
            self._warned[key] = now
            log = self.get_logger()
            (log.warning if hasattr(log, "warning") else log.warn)(text)

    # --- processing -------------------------------------------------------------------------
    def _warmup(self) -> None:
        dummy = (np.random.default_rng(0).uniform(0, 1, (240, 320)) * 255).astype(np.uint8)
        for _ in range(2):
            self.extractor.extract_many([dummy] * (2 if self.mode == "stereo" else 1))

    def _work(self) -> None:
        """Stage 1: the newest frame from the slot, decoded and through the network; handed to
        stage 2 (``_finish``), which matches and publishes it while this stage runs the next frame's
        network. The hand-off holds one frame and blocks, so frames still leave in order and a slow
        stage 2 holds stage 1 back instead of queueing."""
        while not self._stop.is_set():
            if not self._wake.wait(0.1):
                continue
            with self._lock:
                item, t_recv, calib = self._slot if self._slot is not None else (None, 0.0, None)
                self._slot = None
                self._wake.clear()
            if item is None:
                continue
            with self._guard():
                frame = self._extract(item, t_recv, calib)
                while not self._stop.is_set():
                    try:
                        self._handoff.put(frame, timeout=0.1)
                        break
                    except queue.Full:
                        continue

    def _finish(self) -> None:
        """Stage 2: matching, tracks, odometry and every message of one extracted frame."""
        while not self._stop.is_set():
            try:
                frame = self._handoff.get(timeout=0.1)
            except queue.Empty:
                continue
            with self._guard():
                self._process(*frame)

    @contextmanager
    def _guard(self):
        """One bad frame never stops the node: decode errors and failures are counted and logged."""
        try:
            yield
        except ImageDecodeError as e:
            self._refused(e, on_arrival=False)
        except Exception as e:
            if self.context.ok():  # else shutting down (Ctrl-C): publishers are gone, stop quietly
                self.errors += 1
                self._warn("error", f"frame failed ({type(e).__name__}: {e}); continuing")

    def _extract(self, item: Any, t_recv: float, calib: Calibration) -> tuple:
        """Decode one frame (or synchronised set) and run the network on it (stage 1)."""
        main = item[0] if isinstance(item, tuple) else item
        with self._model_lock:
            p = dict(self.params)
        limit = int(p["max_pixels"]) or None
        images = [decode_image(main, max_pixels=limit)]
        depth = None
        if self.mode == "stereo":
            images.append(decode_image(item[1], max_pixels=limit))
        elif self.mode == "rgbd":
            depth = depth_to_meters(item[1], max_pixels=limit)
        return item, t_recv, calib, p, images, depth, self.pipeline.extract(images)

    def _process(self, item: Any, t_recv: float, calib: Calibration, p: dict, images: list, depth, extracted) -> None:
        """One extracted frame: ``FramePipeline.step`` on its features, messages out (stage 2)."""
        main = item[0] if isinstance(item, tuple) else item
        header = main.header
        want = self._wanted(p)
        r = self.pipeline.step(
            images, stamp_of(header), calib, depth, match=match_settings(p), extracted=extracted, **want
        )
        for key, text in r.warnings:
            self._warn(key, text)
        right_header = item[1].header if self.mode == "stereo" else None
        for output, rec in frame_records(r, stamp_of(right_header) if right_header else None).items():
            out_header = right_header if output == "right/keypoints" else header
            self.clouds[output].publish(build_cloud(rec, out_header, PointCloud2, PointField))
        self.vo.publish(header, r.odometry, r.calibration)
        if p["publish_debug_image"] and self.pub_debug.get_subscription_count() > 0:
            prev_kp = r.previous_keypoints if r.previous_keypoints is not None else np.zeros((0, 2), np.float32)
            pts0, pts1 = prev_kp[r.matches[:, 0]], r.keypoints[r.matches[:, 1]]
            canvas = draw_debug(images[0], r.keypoints, r.track_ids, pts0, pts1, r.inliers)
            self.pub_debug.publish(numpy_to_image(canvas, "rgb8", header))
        self._record(t_recv, r.extract_seconds)
        self._release_after_burst(images[0].shape[0] * images[0].shape[1])

    def _release_after_burst(self, pixels: int) -> None:
        """Give freed memory back once frames are at most half the size of the largest seen
        (after a burst of 4K frames a 640x480 stream would otherwise keep the burst's peak)."""
        if pixels > self._peak_pixels:
            self._peak_pixels = pixels
        elif 2 * pixels <= self._peak_pixels:
            release_freed_memory()
            self._peak_pixels = pixels

    def _wanted(self, p: dict[str, Any]) -> dict[str, bool]:
        """Which outputs someone subscribes to now (``pipeline.step``'s want_* flags); keypoints
        are always computed. Matching runs while ~/matches, the debug image or (stereo)
        ~/stereo_matches has a subscriber, or tracks/odometry need it; records the states for
        /diagnostics."""
        debug = bool(p["publish_debug_image"]) and self.pub_debug.get_subscription_count() > 0
        matches = self.clouds["matches"].get_subscription_count() > 0 or debug
        if self.mode == "stereo":
            matches = matches or self.clouds["stereo_matches"].get_subscription_count() > 0
        tracks = self.vo.pub_tracks is not None and self.vo.pub_tracks.get_subscription_count() > 0
        odometry = self.vo.pub_odom is not None and self.vo.pub_odom.get_subscription_count() > 0
        idle = "idle (no subscribers)"
        self.outputs = {
            "output_matching": "active" if matches or tracks or odometry else idle,
            "output_tracks": "active" if tracks else (idle if self.vo.pub_tracks else "off (publish_tracks false)"),
            "output_odometry": "active" if odometry else (idle if self.vo.pub_odom else "off (publish_odometry false)"),
        }
        return {"want_matches": matches, "want_tracks": tracks, "want_odometry": odometry}

    def _record(self, t_recv: float, t_extract: float) -> None:
        """Per-frame figures for /diagnostics: rate, extraction time, latency and node overhead."""
        self.processed += 1
        self.out_rate.tick()
        self.extract_times.add(t_extract)
        latency = time.monotonic() - t_recv
        self.latencies.add(latency)
        self.overheads.add(latency - t_extract)

    # --- diagnostics ------------------------------------------------------------------------
    def stats(self) -> dict[str, float]:
        """The counters and, over the last ``diagnostics_window`` seconds, rates and percentiles.

        Every input frame ends in exactly one of: processed, dropped (replaced in the keep-latest
        slot), decode_errors (malformed on arrival, or failed to decode), errors, or lost before
        the callback (lost_stamp_gaps, inferred from the camera's stamps; lost_rmw_event where the
        RMW reports losses)."""
        with self._lock:
            counts = {"received": self.received, "dropped": self.dropped, "malformed": self.malformed}
            counts["unsupported_encoding"] = self.unsupported_encoding
            counts["decode_errors"] = self.decode_errors
        return {
            "arrival_rate_hz": self.arrival_rate.rate(),
            "input_rate_hz": self.in_rate.rate(),
            "processed_rate_hz": self.out_rate.rate(),
            "processed": self.processed,
            **counts,
            "sync_dropped": sum(self.sync.dropped) if self.sync else 0,
            "errors": self.errors,
            "lost_stamp_gaps": sum(g.missing for g in self.gaps.values()),
            "stamps_repeated": sum(g.repeats for g in self.gaps.values()),
            "lost_rmw_event": self.lost_event,
            "lost_rmw_event_support": self.lost_event_support,
            "window_s": self.latencies.seconds,
            "latency_p50_ms": self.latencies.percentile(50) * 1e3,
            "latency_p95_ms": self.latencies.percentile(95) * 1e3,
            "extract_p50_ms": self.extract_times.percentile(50) * 1e3,
            "overhead_p50_ms": self.overheads.percentile(50) * 1e3,
        }

    def _check_health(self, s: dict[str, Any]) -> None:
        """The conditions only the whole stream shows, as warnings (logged, throttled, and WARN on
        /diagnostics): the model falling behind the camera, and stereo/RGB-D sets that never pair."""
        arrivals = s["arrival_rate_hz"]
        if len(self.arrival_rate.times) >= 10 and s["processed_rate_hz"] < 0.5 * arrivals:
            self._warn(
                "slow",
                f"processing {s['processed_rate_hz']:.1f} Hz of a {arrivals:.1f} Hz input (extraction p50 "
                f"{s['extract_p50_ms']:.0f} ms): keep-latest drops the rest; a smaller image, model or "
                "max_keypoints would keep up",
            )
        if self.sync is None:
            return
        seen = (self.sync.emitted, sum(self.sync.dropped))
        sets, unpaired = seen[0] - self._sync_seen[0], seen[1] - self._sync_seen[1]
        self._sync_seen = seen
        if unpaired <= sets or self.sync.last_unpaired is None:  # e.g. depth at half the colour rate
            return
        first, second = self.input_names
        index, offset = self.sync.last_unpaired
        if offset is None:  # the other queue was empty: one input is missing altogether
            missing = self.input_names[1 - index]
            last = self._last_arrival.get(1 - index)
            age = "never received" if last is None else f"none for {time.monotonic() - last:.1f} s"
            text = f"no {missing} to pair with the {self.input_names[index]} ({age})"
        else:  # offset: the nearest partner's stamp minus the dropped one's; say it as second - first
            offset = offset if index == 0 else -offset
            text = (
                f"no {second} within sync_slop {self.sync.slop_ns * 1e-9:.3f} s of its {first}; "
                f"nearest {offset * 1e-9:+.3f} s"
            )
        self._warn("unpaired", f"{text} ({sets} sets, {unpaired} unpaired since the last diagnostics)")

    def _publish_diagnostics(self) -> None:
        s = self.stats()
        self._check_health(s)
        status = DiagnosticStatus()
        status.name = f"{self.get_fully_qualified_name()}: extraction"
        status.hardware_id = self.device_name
        bad = s["decode_errors"] + s["errors"]
        status.level = DiagnosticStatus.WARN if bad else DiagnosticStatus.OK
        status.message = f"{s['processed_rate_hz']:.1f} Hz processed, {s['dropped']} dropped, {bad} bad frames"
        if s["lost_stamp_gaps"] or s["lost_rmw_event"]:
            status.message += f", {max(s['lost_stamp_gaps'], s['lost_rmw_event'])} lost before the callback"
        vo = self.pipeline.stats()
        if vo["tracking"] == "lost":
            status.level = DiagnosticStatus.WARN
            status.message += ", tracking lost"
        idle = [k.removeprefix("output_") for k, v in self.outputs.items() if v.startswith("idle")]
        if idle:
            status.message += f", {'/'.join(idle)} idle (no subscribers)"
        now = time.monotonic()
        recent = [text for t, text in list(self._problems.values()) if now - t <= self.latencies.seconds]
        if recent:  # every warning of the last window, whatever logged it
            status.level = DiagnosticStatus.WARN
            status.message += "; " + "; ".join(sorted(recent))
        values = {"model": self.model_name, "device": self.device_name, "input_mode": self.mode, **s, **vo}
        values.update(self.outputs)
        status.values = [
            KeyValue(key=k, value=f"{v:.3f}" if isinstance(v, float) else str(v)) for k, v in values.items()
        ]
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [status]
        self.pub_diag.publish(msg)

    def destroy_node(self) -> None:
        # also called by rclpy's shutdown on a node whose __init__ failed half-way: no worker yet
        if hasattr(self, "_stop"):
            self._stop.set()
            self._wake.set()
        for worker in getattr(self, "_workers", []):
            if worker.is_alive():
                worker.join(timeout=5.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    """Entry point (``extractor`` / ``ros2 run goodpoint_ros extractor``), after the rclpy demos' talker."""
    apply_fastdds_profile()
    keep_freed_memory()  # before rclpy.init starts DDS threads: every thread then shares the main arena
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = ExtractorNode()
        executor = SingleThreadedExecutor()  # why not multi-threaded: the module docstring
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except StartupError as e:  # a bad parameter, weights file, device or torch: one clear line
        print(f"goodpoint_extractor: {e}", file=sys.stderr)
        code = 2
    except (KeyError, ValueError, RuntimeError) as e:  # anything else refused while starting
        print(
            f"goodpoint_extractor: {one_line(e.args[0] if isinstance(e, KeyError) and e.args else e)}", file=sys.stderr
        )
        code = 2
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
