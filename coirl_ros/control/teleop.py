"""Teleoperation devices as control-loop actors: a Joy device (gamepad, SpaceMouse) or terminal keys.

Both produce ee_delta actions: TCP translation and rotation in [-1, 1] plus the gripper (-1 open,
+1 closed, latched: it stays where the last button or key put it, and opens at each episode start).
The action goes through the same control loop as the policy's (limits, watchdog, holds), and is
recorded as the executed action with zero base and residual.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from coirl_ros.configs.policy import EE_DELTA_DIM
from coirl_ros.configs.teleop import JoyConfig, KeyboardConfig
from coirl_ros.control.loop import ActorOutput

OPEN, CLOSED = -1.0, 1.0

# key -> (action dimension, direction): x, y, z, roll, pitch, yaw.
KEY_BINDINGS: dict[str, tuple[int, float]] = {
    "w": (0, 1.0), "s": (0, -1.0),
    "a": (1, 1.0), "d": (1, -1.0),
    "r": (2, 1.0), "f": (2, -1.0),
    "j": (3, 1.0), "l": (3, -1.0),
    "i": (4, 1.0), "k": (4, -1.0),
    "q": (5, 1.0), "e": (5, -1.0),
}  # fmt: skip
GRIPPER_KEYS = {"c": CLOSED, "v": OPEN}  # and space toggles
KEY_HELP = "keys: w/s x, a/d y, r/f z, j/l roll, i/k pitch, q/e yaw; c close, v open, space toggle gripper"


class JoyMapper:
    """The latest sensor_msgs/Joy axes and buttons to an ee_delta action."""

    def __init__(self, config: JoyConfig) -> None:
        self.config = config
        self.gripper = OPEN
        self._motion = np.zeros(6)
        self._stamp: float | None = None

    def update(self, axes: Sequence[float], buttons: Sequence[int], stamp: float) -> None:
        """A Joy message received at `stamp` (monotonic seconds)."""
        cfg = self.config
        motion = np.zeros(6)
        for dim, (axis, scale) in enumerate(zip(cfg.axes, cfg.scale, strict=True)):
            if 0 <= axis < len(axes):
                value = float(axes[axis])
                if np.isfinite(value) and abs(value) > cfg.deadzone:
                    # Rescale past the deadzone so motion starts at 0 rather than jumping to `deadzone`.
                    value = np.sign(value) * (abs(value) - cfg.deadzone) / (1.0 - cfg.deadzone)
                    motion[dim] = scale * value
        self._motion = np.clip(motion, -1.0, 1.0)
        if 0 <= cfg.close_button < len(buttons) and buttons[cfg.close_button]:
            self.gripper = CLOSED
        elif 0 <= cfg.open_button < len(buttons) and buttons[cfg.open_button]:
            self.gripper = OPEN
        self._stamp = stamp

    def action(self, now: float) -> np.ndarray:
        """No motion when the device has been silent for `timeout_s` (unplugged, driver died)."""
        fresh = self._stamp is not None and now - self._stamp <= self.config.timeout_s
        motion = self._motion if fresh else np.zeros(6)
        return np.append(motion, self.gripper)


class KeyboardMapper:
    """Terminal key presses to an ee_delta action (KEY_BINDINGS); a press moves for `key_hold_s`."""

    def __init__(self, config: KeyboardConfig) -> None:
        self.config = config
        self.gripper = OPEN
        self._pressed: dict[str, float] = {}

    def press(self, key: str, now: float) -> bool:
        """One key event at `now` (monotonic seconds); False for an unbound key."""
        key = key.lower() if key != " " else key
        if key in KEY_BINDINGS:
            self._pressed[key] = now
        elif key in GRIPPER_KEYS:
            self.gripper = GRIPPER_KEYS[key]
        elif key == " ":
            self.gripper = OPEN if self.gripper == CLOSED else CLOSED
        else:
            return False
        return True

    def action(self, now: float) -> np.ndarray:
        motion = np.zeros(6)
        for key, when in list(self._pressed.items()):  # a copy: keys arrive on another thread
            if now - when <= self.config.key_hold_s:
                dim, sign = KEY_BINDINGS[key]
                motion[dim] += sign * self.config.speed
        return np.append(np.clip(motion, -1.0, 1.0), self.gripper)


class DeviceActor:
    """A Joy or keyboard mapper as the control loop's actor."""

    def __init__(
        self, device: JoyMapper | KeyboardMapper, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.device = device
        self.clock = clock

    def required_inputs(self) -> tuple[str, ...]:
        return ()

    def before_tick(self) -> None:
        """Nothing is prepared off the loop."""

    def reset(self) -> None:
        self.device.gripper = OPEN  # every demonstration starts with the gripper open, as the sim resets

    def resume(self) -> None:
        """Devices are stateless apart from the latched gripper."""

    def act(self, observation: dict[str, np.ndarray]) -> ActorOutput:
        action = self.device.action(self.clock())
        zeros = np.zeros(EE_DELTA_DIM)
        return ActorOutput(action, zeros, zeros.copy(), 0)
