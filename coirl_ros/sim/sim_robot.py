"""The MuJoCo task as a robot: joint targets in; joint, camera and object state out; its own clock.

`SimRobot` wraps `ManipulationEnv` in `joint` action mode (so targets are clipped to the joint
limits and rate-limited exactly as for any other user of the env) and adds what a robot driver and
its cameras provide: a clock that never runs backwards (it keeps counting across resets), joint
positions and velocities for the arm and the gripper, camera renders at each camera's own size and
rate, intrinsics for CameraInfo, and the full MuJoCo state for mirrors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import mujoco
import numpy as np

from coirl_ros.sim.env import ARM_DOFS, FINGER_OPEN, EnvConfig, ManipulationEnv
from coirl_ros.sim.kinematics import HOME_QPOS
from coirl_ros.sim.tasks import make_task

# ROS reads time 0 as "no clock yet": the sim clock starts one second in.
START_TIME_S = 1.0


@dataclass(frozen=True)
class SimCamera:
    """A MuJoCo camera rendered at (height, width), `fps` times per simulated second."""

    name: str
    height: int
    width: int
    fps: float


class SimRobot:
    """See module docstring. Not thread-safe: one thread uses it (renders must stay on one thread)."""

    def __init__(
        self, task: str, control_hz: float, cameras: Sequence[SimCamera] = (), seed: int = 0
    ) -> None:
        self.env = ManipulationEnv(make_task(task), EnvConfig(control_hz=control_hz, action_mode="joint"))
        self.task_name = task
        self.model, self.data = self.env.model, self.env.data
        self.dt = self.env.dt
        self.home = np.append(HOME_QPOS, FINGER_OPEN).astype(float)
        names = [self.model.camera(i).name for i in range(self.model.ncam)]
        unknown = [c.name for c in cameras if c.name not in names]
        if unknown:
            raise ValueError(f"cameras {unknown} are not in the {task} scene; it has {names}")
        self.cameras = {c.name: c for c in cameras}
        vis = self.model.vis.global_
        if cameras:
            vis.offwidth = max(vis.offwidth, *(c.width for c in cameras))
            vis.offheight = max(vis.offheight, *(c.height for c in cameras))
        # Made on first use: a GL context belongs to the thread that creates it, so rendering and
        # closing must happen on that thread (sim_node's loop thread).
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self._next_render = {c.name: -math.inf for c in cameras}
        self._finger = self.model.joint("panda_finger_joint1")
        self.base_seed = seed
        self.episode = 0
        self.seed = seed
        self.time = START_TIME_S
        self.steps = 0
        self.env.reset(seed=seed)

    def reset(self) -> int:
        """A new scene from the next seed; the clock moves on one step (stamps never repeat)."""
        self.episode += 1
        self.seed = self.base_seed + self.episode
        self.env.reset(seed=self.seed)
        self.time += self.dt
        self._next_render = dict.fromkeys(self._next_render, -math.inf)
        return self.seed

    def step(self, target: np.ndarray) -> None:
        """One control step toward the joint targets [7 arm (rad), finger (m)]."""
        self.env.step(np.asarray(target, dtype=np.float32))
        self.time += self.dt
        self.steps += 1

    # ---- what a robot driver publishes -----------------------------------------------------------
    def joint_positions(self) -> np.ndarray:
        return np.append(self.data.qpos[:ARM_DOFS], self.data.qpos[self._finger.qposadr[0]])

    def joint_velocities(self) -> np.ndarray:
        return np.append(self.data.qvel[:ARM_DOFS], self.data.qvel[self._finger.dofadr[0]])

    def object_state(self) -> np.ndarray:
        return self.env.task.object_state(self.model, self.data)

    def success(self) -> bool:
        return bool(self.env.task.success(self.model, self.data))

    def mujoco_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """qpos, qvel, mocap positions [m, 3], mocap quaternions [m, 4] (copies)."""
        return (
            self.data.qpos.copy(),
            self.data.qvel.copy(),
            self.data.mocap_pos.copy(),
            self.data.mocap_quat.copy(),
        )

    # ---- cameras ---------------------------------------------------------------------------------
    def cameras_due(self) -> list[str]:
        """Cameras whose next frame is due at the current sim time; marks them rendered."""
        due = []
        for name, cam in self.cameras.items():
            if self.time >= self._next_render[name] - 1e-9:
                due.append(name)
                period = 1.0 / cam.fps
                nxt = self._next_render[name] + period
                self._next_render[name] = nxt if nxt > self.time else self.time + period
        return due

    def render(self, camera: str) -> np.ndarray:
        cam = self.cameras[camera]
        size = (cam.height, cam.width)
        if size not in self._renderers:
            self._renderers[size] = mujoco.Renderer(self.model, cam.height, cam.width)
        renderer = self._renderers[size]
        renderer.update_scene(self.data, camera=camera)
        return renderer.render()

    def intrinsics(self, camera: str) -> tuple[float, float, float, float]:
        """fx, fy, cx, cy of the rendered image (square pixels; MuJoCo's fovy is vertical)."""
        cam = self.cameras[camera]
        fovy = math.radians(float(self.model.cam_fovy[self.model.camera(camera).id]))
        f = 0.5 * cam.height / math.tan(0.5 * fovy)
        return f, f, 0.5 * cam.width, 0.5 * cam.height

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()  # explicit: EGL complains at exit otherwise
        self._renderers.clear()
        self.env.close()
