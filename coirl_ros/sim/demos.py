"""Scripted demonstrations into the episode store, through the same writer API a recorder uses."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from coirl_ros.constants import ACTION, DONE, OBS_ENV_STATE, OBS_STATE, REWARD, TIMESTAMP, image_key
from coirl_ros.data import EpisodeSpec, EpisodeStore, EpisodeWriter
from coirl_ros.sim.env import ActionMode, EnvConfig, ManipulationEnv
from coirl_ros.sim.expert import WaypointExpert
from coirl_ros.sim.tasks import expert_plan, make_task

CAMERAS = ("front", "wrist")
# Std of the expert's TCP target (metres), redrawn every step: the demonstrations' default spread.
EXPERT_NOISE_M = 0.002


@dataclass
class DemoReport:
    """What `generate_demos` did."""

    task: str
    attempts: int = 0
    successes: int = 0
    saved: list[int] = field(default_factory=list)

    def __str__(self) -> str:
        rate = self.successes / max(self.attempts, 1)
        return (
            f"{self.task}: {self.successes}/{self.attempts} expert episodes succeeded ({rate:.0%}),"
            f" {len(self.saved)} saved"
        )


def demo_spec(env: ManipulationEnv) -> EpisodeSpec:
    """Store spec for demos from `env`: 8-dim state, actions in the env's action mode (8 joint
    targets, or the 7-dim normalised ee_delta), its cameras, and the task's privileged object state
    (state-based learners and the local BC base train on it)."""
    size = env.config.image_size
    cams = tuple((c, size) for c in env.config.cameras) if size is not None else ()
    env_dim = env.observation_space["object"].shape[0]
    action_dim = env.action_space.shape[0]  # 8 (joint) or 7 (ee_delta)
    return EpisodeSpec(
        state_dim=8, action_dim=action_dim, cameras=cams, fps=env.config.control_hz, env_state_dim=env_dim
    )


def generate_demos(
    task: str,
    n: int,
    store_root: Path,
    image_size: tuple[int, int] | None = None,
    noise: float = EXPERT_NOISE_M,
    seed: int = 0,
    keep_failures: bool = False,
    progress: bool = True,
    action_mode: ActionMode = "joint",
) -> DemoReport:
    """Roll out the task's scripted expert until `n` episodes are saved (or `n` attempts with
    `keep_failures`), recording every step: state, action, reward, done.

    `action_mode` picks what is recorded as the action: absolute joint targets ("joint", 8-dim)
    or the normalised end-effector deltas ("ee_delta", 7-dim in [-1, 1]) that the local BC base
    and the residual policy act in. The expert emits whichever the env is in. A store holds one
    action mode: appending ee_delta demos to a joint-mode store fails (the specs differ).

    Seeds run `seed, seed + 1, ...`, so the same call reproduces the same demonstrations.
    Failed attempts are dropped unless `keep_failures` (they are saved with success=False).
    """
    env = ManipulationEnv(make_task(task), EnvConfig(image_size=image_size, action_mode=action_mode))
    try:
        store = EpisodeStore.create(store_root, demo_spec(env), exist_ok=True)
        expert = WaypointExpert(env, expert_plan(task), noise=noise, seed=seed)
        report = DemoReport(task)
        max_attempts = n if keep_failures else 3 * n  # a broken expert must not loop forever
        bar = tqdm(total=n, desc=f"demos {task}", unit="ep", disable=not progress)
        with store.writer() as writer:
            while len(report.saved) < n and report.attempts < max_attempts:
                ok = _record_one(env, expert, writer, task, seed + report.attempts)
                report.attempts += 1
                report.successes += ok
                if ok or keep_failures:
                    report.saved.append(writer.save_episode(success=ok).index)
                    bar.update(1)
                else:
                    writer.discard_episode()
                bar.set_postfix(success=f"{report.successes}/{report.attempts}")
        bar.close()
        return report
    finally:
        env.close()


def _record_one(
    env: ManipulationEnv, expert: WaypointExpert, writer: EpisodeWriter, task: str, seed: int
) -> bool:
    obs, info = env.reset(seed=seed)
    expert.reset(seed)
    writer.begin_episode(task, "scripted")
    success = False
    for t in range(env.horizon):
        action = expert.act(obs)
        next_obs, reward, terminated, truncated, info = env.step(action)
        frame = {
            OBS_STATE: obs["state"],
            OBS_ENV_STATE: obs["object"],
            ACTION: np.asarray(action, np.float32),
            REWARD: reward,
            DONE: terminated,
            TIMESTAMP: t * env.dt,
        }
        for cam in env.config.cameras if env.config.image_size is not None else ():
            frame[image_key(cam)] = obs[cam]
        writer.add_frame(frame)
        obs, success = next_obs, bool(info["success"])
        if terminated or truncated:
            break
    return success
