"""Camera ingestion: RealSense through the SDK's own software device and recordings, OpenCV on a video
file, and a missing device that is reported and retried until it appears."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from ros_probe import NodeProcess, RosProbe, assert_paced, robot_config_file
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from coirl_ros.ingestion.camera_sources import CameraUnavailable, OpenCVSource, RealSenseSource
from coirl_ros.nodes.interfaces import CAMERA_DIAGNOSTICS_TOPIC, SENSOR_QOS

rs = pytest.importorskip("pyrealsense2")


class SoftwareCamera:
    """A RealSense colour sensor made with the SDK's rs.software_device(), fed frames by a thread."""

    def __init__(self, width: int, height: int, fps: int) -> None:
        self.width, self.height, self.fps = width, height, fps
        self.device = rs.software_device()
        self.device.register_info(rs.camera_info.serial_number, "000042")
        self.sensor = self.device.add_sensor("Color")
        stream = rs.video_stream()
        stream.type, stream.index, stream.uid = rs.stream.color, 0, 0
        stream.width, stream.height, stream.fps, stream.bpp, stream.fmt = (
            width,
            height,
            fps,
            3,
            rs.format.rgb8,
        )
        intr = rs.intrinsics()
        intr.width, intr.height, intr.fx, intr.fy, intr.ppx, intr.ppy = width, height, 20.0, 21.0, 8.0, 6.0
        intr.model, intr.coeffs = rs.distortion.none, [0.0] * 5
        stream.intrinsics = intr
        self.profile = self.sensor.add_video_stream(stream).as_video_stream_profile()
        self.pushed = 0

    def push(self, value: int, sensor=None) -> None:
        pixels = np.full((self.height, self.width, 3), value % 256, np.uint8)
        frame = rs.software_video_frame()
        frame.pixels, frame.bpp, frame.stride = pixels, 3, 3 * self.width
        frame.timestamp, frame.domain = time.time() * 1000.0, rs.timestamp_domain.system_time
        frame.frame_number, frame.profile = self.pushed, self.profile
        (sensor or self.sensor).on_video_frame(frame)
        self.pushed += 1


def test_realsense_source_on_software_device_hands_out_the_newest_frame() -> None:
    cam = SoftwareCamera(16, 12, 30)
    source = RealSenseSource("", 16, 12, 30.0, device_factory=lambda: cam.device)
    intr = source.open()
    assert (intr.width, intr.height, intr.fx, intr.fy, intr.calibrated) == (16, 12, 20.0, 21.0, True)
    try:
        for i in range(5):  # five frames before anyone reads: only the last may come out
            cam.push(10 * i)
        frame = source.read(1.0)
        assert frame is not None and frame.sequence == 4 and frame.image.shape == (12, 16, 3)
        assert int(frame.image[0, 0, 0]) == 40 and abs(frame.stamp - time.time()) < 1.0
        assert source.read(0.05) is None  # nothing new: no frame, not an old one again
    finally:
        source.close()
    with pytest.raises(CameraUnavailable, match="no colour stream 640x480@30"):
        RealSenseSource("", 640, 480, 30.0, device_factory=lambda: cam.device).open()
    with pytest.raises(CameraUnavailable, match="RealSense serial '999'"):
        RealSenseSource("999", 16, 12, 30.0).open()  # no camera on this machine
    with pytest.raises(CameraUnavailable, match="/dev/video7 does not exist"):
        OpenCVSource("7", 16, 12, 30.0).open()


def record_realsense(path: Path, frames: int) -> None:
    """A RealSense recording of a software device (what a replayed .db3 from a real camera is)."""
    cam = SoftwareCamera(16, 12, 30)
    recorder = rs.recorder(str(path), cam.device)
    sensor = recorder.query_sensors()[0]
    queue = rs.frame_queue(1)
    sensor.open(cam.profile)
    sensor.start(queue)
    for i in range(frames):
        cam.push(10 * i, cam.sensor)
        time.sleep(1 / 30)
    sensor.stop()
    sensor.close()
    del recorder  # closes the file


def write_video(path: Path, frames: int, size: tuple[int, int] = (32, 24)) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, size)
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), (20 * i) % 256, np.uint8))
    writer.release()


@pytest.mark.ros
def test_camera_nodes_publish_opencv_realsense_and_survive_a_missing_device(
    ros_env: dict[str, str], tmp_path: Path
) -> None:
    video, late, recording = tmp_path / "front.avi", tmp_path / "late.avi", tmp_path / "wrist.db3"
    write_video(video, 10)
    record_realsense(recording, 20)
    cameras = [
        {"name": "front", "source": "opencv", "device": str(video), "width": 32, "height": 24, "fps": 10.0},
        {
            "name": "wrist",
            "source": "realsense",
            "device": str(recording),
            "width": 16,
            "height": 12,
            "fps": 30.0,
        },
        {"name": "side", "source": "opencv", "device": str(late), "width": 32, "height": 24, "fps": 10.0},
    ]
    robot = robot_config_file(tmp_path, cameras)
    common = {"robot_config": robot, "retry_initial_s": 0.2, "retry_max_s": 0.4}
    nodes = [
        NodeProcess("camera_node", ros_env, {**common, "camera": name}, name=f"camera_{name}")
        for name in ("front", "wrist", "side")
    ]
    try:
        with RosProbe(ros_env) as probe:
            for name in ("front", "wrist", "side"):
                probe.subscribe(Image, f"/cameras/{name}/image_raw", SENSOR_QOS)
                probe.subscribe(CameraInfo, f"/cameras/{name}/camera_info", SENSOR_QOS)
            probe.subscribe(String, CAMERA_DIAGNOSTICS_TOPIC)

            def diag(camera: str, where=lambda d: True, timeout: float = 20.0) -> dict:
                msgs = probe.wait_for(
                    CAMERA_DIAGNOSTICS_TOPIC,
                    where=lambda m: json.loads(m.data)["camera"] == camera and where(json.loads(m.data)),
                    timeout=timeout,
                )
                return json.loads(msgs[-1].data)

            # The missing device: a clear error naming it, retried with backoff, process up.
            retrying = diag("side", lambda d: d["status"] == "retrying" and d["attempt"] >= 2)
            assert str(late) in retrying["error"] and "does not exist" in retrying["error"]

            # OpenCV on a video file: the configured rate, fresh stamps, rgb8, uncalibrated info.
            front = probe.wait_for("/cameras/front/image_raw", 12)
            stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in front]
            assert all(b > a for a, b in itertools.pairwise(stamps))
            assert_paced(stamps, 1 / 10.0, "front camera (configured 10 Hz)")
            img = front[-1]
            assert (img.width, img.height, img.encoding) == (32, 24, "rgb8")
            info = probe.wait_for("/cameras/front/camera_info")[-1]
            assert info.k[0] == 0.0 and (info.width, info.height) == (32, 24)
            values = {int(np.frombuffer(bytes(m.data), np.uint8).mean().round(-1)) for m in front}
            assert len(values) >= 5  # successive frames of the file, not one frame repeated

            # RealSense recording through the SDK's playback device: frames and SDK intrinsics.
            wrist = probe.wait_for("/cameras/wrist/image_raw", 10)
            assert (wrist[-1].width, wrist[-1].height) == (16, 12)
            pixels = {int(np.frombuffer(bytes(m.data), np.uint8)[0]) for m in wrist}
            assert pixels <= {10 * i for i in range(20)} and len(pixels) >= 3
            wrist_info = probe.wait_for("/cameras/wrist/camera_info")[-1]
            assert (wrist_info.k[0], wrist_info.k[4]) == (20.0, 21.0)

            # The device appears: the node picks it up on its next retry.
            write_video(late, 10)
            probe.wait_for("/cameras/side/image_raw", 3, timeout=10.0)
            diag("side", lambda d: d["status"] == "streaming" and d["published"] >= 1 and d["error"] == "")
            assert all(n.alive() for n in nodes)
    finally:
        for n in nodes:
            n.__exit__()
    side = nodes[2].output
    assert "retry 1 in 0.2 s" in side and "retry 2 in 0.4 s" in side and "Traceback" not in side
    assert all("Traceback" not in n.output for n in nodes)
