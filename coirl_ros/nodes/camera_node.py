"""camera_node: one camera -> sensor_msgs/Image + CameraInfo, with capture stamps, never stale.

Sources (robot config `cameras[].source`, or the `source` parameter):
- `realsense`: pyrealsense2; `device` = serial number, a recording (.db3/.bag, replayed in a loop)
  or "" for the first camera; colour stream at width x height @ fps, rgb8; intrinsics from the SDK.
- `opencv`: cv2.VideoCapture on a V4L2 index (`"0"`), a device path (`/dev/video2`) or a video
  file (played at fps, looped); CameraInfo is uncalibrated (K = 0) since V4L2 knows no intrinsics.
- `sim`: republishes sim_node's renders (/sim/cameras/<name>/image_raw and its camera_info).

Publishes on the camera's `topic` (default /cameras/<name>/image_raw) and camera_info beside it,
sensor-data QoS, at most `fps`, dropping frames older than `max_frame_age_s` (never queueing). A
missing or lost device is reported (log + /coirl/cameras/diagnostics) and retried with exponential
backoff up to `retry_max_s`; the process stays up.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from typing import Any

from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from coirl_ros.configs.ingestion import IngestionConfig
from coirl_ros.configs.loading import ConfigError
from coirl_ros.configs.robot import CameraConfig, RobotConfig
from coirl_ros.ingestion.camera_sources import (
    CameraFrame,
    CameraSource,
    CameraStream,
    FrameGate,
    Intrinsics,
    OpenCVSource,
    RealSenseSource,
    RetryBackoff,
)
from coirl_ros.nodes.interfaces import (
    CAMERA_DIAGNOSTICS_TOPIC,
    COMMAND_QOS,
    SENSOR_QOS,
    camera_info_topic,
    sim_camera_topic,
)
from coirl_ros.nodes.node_runtime import run_node, seconds_stamp, stamp_seconds
from coirl_ros.nodes.ros_params import declare_config_file, declare_overrides

CAMERA_FIELDS = ("source", "device", "width", "height", "fps", "topic")
RETRY_FIELDS = ("retry_initial_s", "retry_max_s", "frame_timeout_s", "max_frame_age_s")


def make_source(camera: CameraConfig) -> CameraSource:
    """The device source for a camera config (not `sim`, which is a subscription)."""
    if camera.source == "realsense":
        return RealSenseSource(camera.device, camera.width, camera.height, camera.fps)
    if camera.source == "opencv":
        return OpenCVSource(camera.device, camera.width, camera.height, camera.fps)
    raise ValueError(f"camera source {camera.source!r} has no device")


class CameraNode(Node):
    """See module docstring."""

    def __init__(self) -> None:
        super().__init__("camera_node")
        self.exit_code: int | None = None
        robot = declare_config_file(self, "robot_config", "robot.yaml", RobotConfig)
        name = str(self.declare_parameter("camera", robot.cameras[0].name if robot.cameras else "").value)
        by_name = {c.name: c for c in robot.cameras}
        if name not in by_name:
            raise ConfigError(
                f"camera_node: camera {name!r} is not in the robot config (has {sorted(by_name)})"
            )
        camera = declare_overrides(self, by_name[name], CAMERA_FIELDS)
        ingestion = declare_config_file(self, "ingestion_config", "ingestion.yaml", IngestionConfig)
        cfg = declare_overrides(self, ingestion.camera, RETRY_FIELDS)
        self.camera, self.cfg = camera, cfg
        self.frame_id = str(self.declare_parameter("frame_id", f"{camera.name}_optical_frame").value)
        self.gate = FrameGate(camera.fps, cfg.max_frame_age_s)
        self.pub_image = self.create_publisher(Image, camera.image_topic, SENSOR_QOS)
        self.pub_info = self.create_publisher(CameraInfo, camera_info_topic(camera.image_topic), SENSOR_QOS)
        self.pub_diag = self.create_publisher(String, CAMERA_DIAGNOSTICS_TOPIC, COMMAND_QOS)
        self.published = 0
        self.dropped: dict[str, int] = {}
        self.status: dict[str, Any] = {"status": "waiting", "error": "", "attempt": 0, "retry_in_s": 0.0}
        self._rate_window: list[float] = []
        self._lock = threading.Lock()
        self._stream: CameraStream | None = None
        self._sim_info: CameraInfo | None = None
        self._last_sim_frame = time.monotonic()
        if camera.source == "sim":
            self._device = sim_camera_topic(camera.name)
            # Depth 1: only the newest render matters.
            sensor_latest = QoSProfile(
                depth=1, reliability=SENSOR_QOS.reliability, history=HistoryPolicy.KEEP_LAST
            )
            self.create_subscription(Image, self._device, self._on_sim_image, sensor_latest)
            self.create_subscription(
                CameraInfo, camera_info_topic(self._device), self._on_sim_info, sensor_latest
            )
            self.create_timer(1.0, self._check_sim_feed)
        else:
            source = make_source(camera)
            self._device = source.description
            self._stream = CameraStream(
                source,
                self._on_device_frame,
                self._on_status,
                RetryBackoff(cfg.retry_initial_s, cfg.retry_max_s),
                cfg.frame_timeout_s,
            )
            self._stream.start()
        self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(
            f"camera {camera.name}: {camera.source} {self._device} {camera.width}x{camera.height}"
            f" @ {camera.fps:g} Hz -> {camera.image_topic}"
        )

    # ---- time ----------------------------------------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _uses_sim_time(self) -> bool:
        return bool(self.get_parameter("use_sim_time").value)

    # ---- device sources (capture thread) ------------------------------------------------------------
    def _on_device_frame(self, frame: CameraFrame, intrinsics: Intrinsics) -> None:
        if not self.context.ok():
            return  # shutting down: the capture thread is about to be stopped
        # Device stamps are wall-clock capture times; under sim time the only comparable time is now.
        stamp = self._now() if self._uses_sim_time() else frame.stamp
        reason = self.gate.admit(stamp, self._now())
        if reason is not None:
            self._drop(reason)
            return
        h, w = frame.image.shape[:2]
        img = Image()
        img.header.stamp = seconds_stamp(stamp)
        img.header.frame_id = self.frame_id
        img.height, img.width, img.encoding, img.step = h, w, "rgb8", 3 * w
        img.data = frame.image.tobytes()
        self.pub_image.publish(img)
        self.pub_info.publish(self._camera_info(img, intrinsics))
        self._count_published()

    def _camera_info(self, img: Image, intr: Intrinsics) -> CameraInfo:
        info = CameraInfo()
        info.header = img.header
        info.height, info.width = img.height, img.width
        info.distortion_model = intr.distortion_model
        info.d = list(intr.coeffs)
        if intr.calibrated:
            sx, sy = img.width / intr.width, img.height / intr.height
            fx, fy, cx, cy = intr.fx * sx, intr.fy * sy, intr.cx * sx, intr.cy * sy
            info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
            info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
            info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        return info  # uncalibrated: K = 0, as ROS defines it

    def _on_status(self, status: dict[str, Any]) -> None:
        with self._lock:
            self.status = status
        if not self.context.ok():
            return
        if status["status"] == "retrying":
            self.get_logger().error(
                f"camera {self.camera.name}: {status['error']};"
                f" retry {status['attempt']} in {status['retry_in_s']:.1f} s"
            )
        else:
            self.get_logger().info(f"camera {self.camera.name}: streaming from {self._device}")
        self._publish_diagnostics()

    # ---- sim source ----------------------------------------------------------------------------------
    def _on_sim_info(self, msg: CameraInfo) -> None:
        self._sim_info = msg

    def _on_sim_image(self, msg: Image) -> None:
        self._last_sim_frame = time.monotonic()
        if self.status["status"] != "streaming":
            self._on_status({"status": "streaming", "error": "", "attempt": 0, "retry_in_s": 0.0})
        reason = self.gate.admit(stamp_seconds(msg.header.stamp), self._now())
        if reason is not None:
            self._drop(reason)
            return
        if (msg.width, msg.height) != (self.camera.width, self.camera.height):
            self.get_logger().warn(
                f"sim renders {self.camera.name} at {msg.width}x{msg.height}, configured"
                f" {self.camera.width}x{self.camera.height}: give sim_node the same robot config",
                throttle_duration_sec=30.0,
            )
        msg.header.frame_id = self.frame_id
        self.pub_image.publish(msg)
        if self._sim_info is not None:
            info = self._sim_info
            info.header = msg.header
            self.pub_info.publish(info)
        self._count_published()

    def _check_sim_feed(self) -> None:
        quiet = time.monotonic() - self._last_sim_frame
        if quiet > self.cfg.frame_timeout_s:
            self.get_logger().warn(
                f"camera {self.camera.name}: no frame on {self._device} for {quiet:.0f} s"
                " (is sim_node running?)",
                throttle_duration_sec=10.0,
            )
            with self._lock:
                self.status = {
                    "status": "waiting",
                    "error": f"no frame on {self._device}",
                    "attempt": 0,
                    "retry_in_s": 0.0,
                }

    # ---- bookkeeping ---------------------------------------------------------------------------------
    def _drop(self, reason: str) -> None:
        with self._lock:
            self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def _count_published(self) -> None:
        now = time.monotonic()
        with self._lock:
            self.published += 1
            self._rate_window = [t for t in self._rate_window if now - t < 2.0] + [now]

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        with self._lock:
            window = [t for t in self._rate_window if now - t < 2.0]
            report = {
                "camera": self.camera.name,
                "source": self.camera.source,
                "device": self._device,
                **self.status,
                "published": self.published,
                "dropped_stale": self.dropped.get("stale", 0),
                "dropped": dict(self.dropped),
                "rate_hz": round(len(window) / 2.0, 2),
                "stamp": self._now(),
            }
        self.pub_diag.publish(String(data=json.dumps(report)))

    def close(self) -> None:
        if self._stream is not None:
            self._stream.stop()


def main(args: Sequence[str] | None = None) -> None:
    raise SystemExit(run_node(CameraNode, args))


if __name__ == "__main__":
    main()
