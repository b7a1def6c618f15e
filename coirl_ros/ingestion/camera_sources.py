"""Camera sources (RealSense, OpenCV/V4L2) and the capture loop that survives unplugging.

A source opens a device, hands out its newest frame and closes it again; it never queues frames:
RealSense frames go through a one-slot `rs.frame_queue` (the SDK drops older frames), OpenCV
captures ask V4L2 for a single buffer. `CameraStream` runs a source on its own thread: a missing or
lost device is reported with a clear message and reopened after an exponentially growing wait,
never by crashing the process (a crash loop under a supervisor helps nobody). `FrameGate` decides
which frames are published: at most the configured rate, never an old one.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from coirl_ros.ingestion.image_codec import resize_rgb

RECORDING_SUFFIXES = (".db3", ".bag")  # RealSense recordings (rosbag2 sqlite, ROS 1 bag)


class CameraUnavailable(RuntimeError):
    """The device cannot be opened (not connected, wrong serial, busy, no matching stream)."""


class CameraLost(RuntimeError):
    """An open device stopped delivering frames (unplugged, driver error)."""


@dataclass(frozen=True)
class CameraFrame:
    """One RGB frame: [H, W, 3] uint8, capture time in seconds since the epoch, device sequence."""

    image: np.ndarray
    stamp: float
    sequence: int


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics for CameraInfo; `calibrated=False` publishes K = 0 (ROS: uncalibrated)."""

    width: int
    height: int
    fx: float = 0.0
    fy: float = 0.0
    cx: float = 0.0
    cy: float = 0.0
    distortion_model: str = "plumb_bob"
    coeffs: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)
    calibrated: bool = False


class CameraSource(Protocol):
    """What `CameraStream` drives."""

    description: str

    def open(self) -> Intrinsics: ...

    def read(self, timeout_s: float) -> CameraFrame | None: ...

    def close(self) -> None: ...


# ---- OpenCV / V4L2 -------------------------------------------------------------------------------
class OpenCVSource:
    """A V4L2 device (index or /dev/videoN) or a video file, through cv2.VideoCapture.

    A file plays at the configured fps and loops, so it behaves like a live camera (tests, replays).
    Frames of another size than configured are resized (the first time is noted in `resized_from`).
    """

    def __init__(self, device: str, width: int, height: int, fps: float) -> None:
        self.device = device.strip()
        self.width, self.height, self.fps = width, height, fps
        # Anything but an index or a /dev node is a video file.
        self.is_file = bool(self.device) and not self.device.isdigit() and not self.device.startswith("/dev/")
        self.description = f"OpenCV camera {self.device or '0'!r}"
        self.resized_from: tuple[int, int] | None = None
        self._cap: Any = None
        self._sequence = 0
        self._next_due = 0.0

    def open(self) -> Intrinsics:
        import cv2

        target: int | str = (
            int(self.device or "0") if not self.device or self.device.isdigit() else self.device
        )
        if self.is_file and not Path(self.device).is_file():
            raise CameraUnavailable(f"{self.description}: video file {self.device} does not exist")
        if isinstance(target, int) and not Path(f"/dev/video{target}").exists():
            raise CameraUnavailable(
                f"{self.description}: /dev/video{target} does not exist (camera not plugged in?)"
            )
        if isinstance(target, str) and target.startswith("/dev/") and not Path(target).exists():
            raise CameraUnavailable(f"{self.description}: {target} does not exist (camera not plugged in?)")
        cap = cv2.VideoCapture(target)
        if not cap.isOpened():
            cap.release()
            raise CameraUnavailable(
                f"{self.description}: cv2.VideoCapture could not open {target!r}"
                " (busy, no permission or not a camera)"
            )
        if not self.is_file:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            cap.set(cv2.CAP_PROP_FPS, self.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a backlog
        self._cap = cap
        self._next_due = time.monotonic()
        return Intrinsics(self.width, self.height)  # a plain V4L2 device carries no calibration

    def read(self, timeout_s: float) -> CameraFrame | None:
        import cv2

        if self._cap is None:
            raise CameraLost(f"{self.description}: not open")
        if self.is_file:  # pace a file like a live camera
            wait = self._next_due - time.monotonic()
            if wait > timeout_s:
                time.sleep(timeout_s)
                return None
            if wait > 0:
                time.sleep(wait)
            self._next_due = max(self._next_due + 1.0 / self.fps, time.monotonic() - 1.0 / self.fps)
        ok, bgr = self._cap.read()
        if not ok and self.is_file:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)  # loop the file
            ok, bgr = self._cap.read()
        stamp = time.time()
        if not ok or bgr is None:
            raise CameraLost(f"{self.description}: read failed (unplugged or driver error)")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if rgb.shape[:2] != (self.height, self.width):
            self.resized_from = self.resized_from or (rgb.shape[0], rgb.shape[1])
            rgb = resize_rgb(rgb, self.height, self.width)
        self._sequence += 1
        return CameraFrame(rgb, stamp, self._sequence)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


# ---- RealSense -----------------------------------------------------------------------------------
class RealSenseSource:
    """The colour stream of a RealSense camera through pyrealsense2's sensor API.

    `device` is a serial number, a recording (.db3/.bag, replayed in a loop) or "" for the first
    camera found. `device_factory` hands in an already made `rs.device` (e.g. the SDK's
    `rs.software_device()` in tests); everything after it is the same code path. Frames stamped in
    the system or global time domain keep the camera's timestamp; others (and replays, whose
    timestamps are from when they were recorded) are stamped on arrival.
    """

    def __init__(
        self,
        device: str,
        width: int,
        height: int,
        fps: float,
        device_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.device = device.strip()
        self.width, self.height, self.fps = width, height, fps
        self.device_factory = device_factory
        self.is_recording = Path(self.device).suffix in RECORDING_SUFFIXES
        what = "recording" if self.is_recording else "serial"
        self.description = f"RealSense {what} {self.device!r}" if self.device else "RealSense (first found)"
        self._sensor: Any = None
        self._queue: Any = None
        self._playback: Any = None
        self._device: Any = None

    def _find_device(self) -> Any:
        import pyrealsense2 as rs

        if self.device_factory is not None:
            return self.device_factory()
        ctx = rs.context()
        if self.is_recording:
            if not Path(self.device).is_file():
                raise CameraUnavailable(f"{self.description}: file does not exist")
            dev = ctx.load_device(os.fspath(self.device))
            self._playback = dev.as_playback()
            self._playback.set_real_time(True)
            return dev
        devices = list(ctx.query_devices())
        serials = [d.get_info(rs.camera_info.serial_number) for d in devices]
        if not devices:
            raise CameraUnavailable(f"{self.description}: no RealSense camera connected (check USB)")
        if not self.device:
            return devices[0]
        if self.device not in serials:
            raise CameraUnavailable(f"{self.description}: not found; connected cameras: {', '.join(serials)}")
        return devices[serials.index(self.device)]

    def open(self) -> Intrinsics:
        import pyrealsense2 as rs

        try:
            dev = self._find_device()
        except RuntimeError as err:
            if isinstance(err, CameraUnavailable):
                raise
            raise CameraUnavailable(f"{self.description}: {err}") from None
        available = []
        for sensor in dev.query_sensors():
            for profile in sensor.get_stream_profiles():
                if profile.stream_type() != rs.stream.color or not profile.is_video_stream_profile():
                    continue
                video = profile.as_video_stream_profile()
                available.append(f"{video.width()}x{video.height()}@{profile.fps()} {profile.format()}")
                if (
                    video.width() == self.width
                    and video.height() == self.height
                    and profile.fps() == round(self.fps)
                    and profile.format() == rs.format.rgb8
                ):
                    return self._start(sensor, profile, dev)
        raise CameraUnavailable(
            f"{self.description}: no colour stream {self.width}x{self.height}@{round(self.fps)} rgb8;"
            f" available: {', '.join(available) or 'none'}"
        )

    def _start(self, sensor: Any, profile: Any, dev: Any) -> Intrinsics:
        import pyrealsense2 as rs

        if sensor.supports(rs.option.global_time_enabled):
            with contextlib.suppress(RuntimeError):  # hardware timestamps mapped to the host clock
                sensor.set_option(rs.option.global_time_enabled, 1)
        queue = rs.frame_queue(1, keep_frames=True)  # capacity 1: the SDK drops stale frames
        sensor.open(profile)
        sensor.start(queue)
        self._sensor, self._queue, self._device = sensor, queue, dev
        intr = profile.as_video_stream_profile().get_intrinsics()
        return Intrinsics(
            intr.width,
            intr.height,
            intr.fx,
            intr.fy,
            intr.ppx,
            intr.ppy,
            "plumb_bob",
            tuple(float(c) for c in intr.coeffs),
            calibrated=intr.fx > 0,
        )

    def read(self, timeout_s: float) -> CameraFrame | None:
        import pyrealsense2 as rs

        if self._queue is None:
            raise CameraLost(f"{self.description}: not open")
        ok, frame = self._queue.try_wait_for_frame(max(1, int(timeout_s * 1000)))
        if not ok:
            if self._playback is not None and self._playback.current_status() == rs.playback_status.stopped:
                self.close()  # end of the recording: replay it from the start
                self.open()
            return None
        arrival = time.time()
        image = np.asanyarray(frame.get_data()).copy()  # the SDK reuses its buffers
        domain = frame.get_frame_timestamp_domain()
        live_clock = domain in (rs.timestamp_domain.system_time, rs.timestamp_domain.global_time)
        stamp = frame.get_timestamp() / 1000.0 if live_clock and self._playback is None else arrival
        if image.shape != (self.height, self.width, 3):
            raise CameraLost(
                f"{self.description}: frame of shape {image.shape}, expected {(self.height, self.width, 3)}"
            )
        return CameraFrame(image, stamp, int(frame.get_frame_number()))

    def close(self) -> None:
        sensor, self._sensor, self._queue = self._sensor, None, None
        if sensor is not None:
            for action in (sensor.stop, sensor.close):
                with contextlib.suppress(RuntimeError):  # already stopped, or the device is gone
                    action()
        self._device = None
        self._playback = None


# ---- retry, gating, the capture thread -----------------------------------------------------------
class RetryBackoff:
    """initial, 2x, 4x, ... capped at `maximum`; `reset()` after a success."""

    def __init__(self, initial_s: float, maximum_s: float) -> None:
        self.initial_s, self.maximum_s = initial_s, maximum_s
        self.attempt = 0

    def next_delay(self) -> float:
        self.attempt += 1
        return min(self.maximum_s, self.initial_s * 2 ** (self.attempt - 1))

    def reset(self) -> None:
        self.attempt = 0


class FrameGate:
    """Admits frames at (on average) `fps` and never one older than `max_age_s` or not newer than the
    last one admitted; returns the reason a frame is dropped, or None to publish it."""

    def __init__(self, fps: float, max_age_s: float) -> None:
        self.period = 1.0 / fps
        self.max_age_s = max_age_s
        self._last: float | None = None
        self._next_due = -np.inf

    def admit(self, stamp: float, now: float) -> str | None:
        if self.max_age_s > 0 and now - stamp > self.max_age_s:
            return "stale"
        if self._last is not None and stamp <= self._last:
            return "not_newer"
        # Slack of a third of a period: a camera at the configured rate loses no frame to timing jitter,
        # one at twice the rate still loses every other frame.
        if stamp < self._next_due - 0.35 * self.period:
            return "rate"
        self._last = stamp
        # Keep the long-run rate at fps; after a gap, restart from this frame instead of bursting.
        self._next_due = max(self._next_due + self.period, stamp + 0.5 * self.period)
        return None


class CameraStream:
    """Runs a source on a thread: open (retrying with backoff), read, hand frames on, reopen on loss.

    `on_frame(frame, intrinsics)` runs on the capture thread; `on_status(report)` is called on every
    state change and retry with {"status": "streaming"|"retrying", "error", "attempt", "retry_in_s"}.
    """

    def __init__(
        self,
        source: CameraSource,
        on_frame: Callable[[CameraFrame, Intrinsics], None],
        on_status: Callable[[dict[str, Any]], None],
        backoff: RetryBackoff,
        frame_timeout_s: float,
    ) -> None:
        self.source = source
        self.on_frame = on_frame
        self.on_status = on_status
        self.backoff = backoff
        self.frame_timeout_s = frame_timeout_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="camera-capture", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def _retry(self, error: str) -> None:
        delay = self.backoff.next_delay()
        self.on_status(
            {"status": "retrying", "error": error, "attempt": self.backoff.attempt, "retry_in_s": delay}
        )
        self._stop.wait(delay)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                intrinsics = self.source.open()
            except CameraUnavailable as err:
                self._retry(str(err))
                continue
            except Exception as err:  # an SDK error we did not foresee must not end the thread
                self._retry(f"{self.source.description}: {type(err).__name__}: {err}")
                continue
            self.backoff.reset()
            self.on_status({"status": "streaming", "error": "", "attempt": 0, "retry_in_s": 0.0})
            error = self._stream(intrinsics)
            self.source.close()
            if error and not self._stop.is_set():
                self._retry(error)

    def _stream(self, intrinsics: Intrinsics) -> str:
        last = time.monotonic()
        while not self._stop.is_set():
            try:
                frame = self.source.read(min(0.25, self.frame_timeout_s))
            except CameraLost as err:
                return str(err)
            except Exception as err:
                return f"{self.source.description}: {type(err).__name__}: {err}"
            if frame is None:
                if time.monotonic() - last > self.frame_timeout_s:
                    return f"{self.source.description}: no frame for {self.frame_timeout_s} s (unplugged?)"
                continue
            last = time.monotonic()
            try:
                self.on_frame(frame, intrinsics)
            except Exception as err:  # a consumer error is not a device error: keep the device open
                if self._stop.is_set():
                    break
                self.on_status(
                    {
                        "status": "streaming",
                        "error": f"frame handler failed: {err}",
                        "attempt": 0,
                        "retry_in_s": 0.0,
                    }
                )
        return ""
