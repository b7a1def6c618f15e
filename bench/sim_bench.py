"""Simulation throughput: our `ManipulationEnv` against LeRobot's reference MuJoCo env, gym_hil.

What is measured
----------------
Env steps per wall-clock second of two gymnasium environments, side by side in one run, for
three observation settings: state only, and two RGB cameras (front + wrist) at 84x84 and at
128x128:

- ours: `ManipulationEnv(make_task("lift"), EnvConfig(image_size=...))`, joint action mode,
  stepped with a fixed joint-target action (the state at reset: the arm holds its pose). One env
  step = 25 physics steps of 2 ms (20 Hz control).
- gym_hil: `gymnasium.make("gym_hil/PandaPickCubeBase-v0", image_obs=..., render_spec=
  GymRenderingSpec(height, width))`, LeRobot's pick-cube env: Panda + Robotiq 2F-85 in mesh
  geometry, an operational-space controller evaluated in Python every physics step, actions
  sampled from its action space (pre-drawn, seeded). One env step = 50 physics steps of 2 ms
  (10 Hz control), as it ships. Its renderer draws both cameras with one mujoco.Renderer.

Both envs are reset whenever an episode terminates or is truncated (ours: horizon 100; gym_hil:
TimeLimit 100 and termination when the cube leaves its bounds or is lifted), and resets are
inside the timed region, as in an RL or evaluation loop. The two envs of a setting are timed in
alternating rounds (ours, gym_hil, ours, ...) so load from other processes hits both alike;
each gets at least `--seconds` of wall time after a warm-up. Reported per env: env steps/s,
simulated seconds per wall second (steps/s x control period: our step covers half the physics
time of gym_hil's), process CPU seconds per wall second (above 1 when the renderer runs on
several threads, below 1 when other processes take the CPU), and the spread over rounds.

The issue's targets compare env steps/s: ours >= 3x gym_hil state-only and >= 10x with images at
the same resolution. gym_hil's renders are expensive mainly because its scene casts shadows from
two lights (4096-pixel shadow maps), with 8x multisampling and ~190k mesh triangles; on a CPU
renderer (Mesa llvmpipe) that dominates. Extra rows (no target) time gym_hil rendering as our
scene does (no shadows, MuJoCo's default 4x multisampling), to show how much of the gap those
settings alone explain; the rest is its meshes and its heavier physics step.

How to run
----------
    .venv/bin/python bench/sim_bench.py            # full, about 1.5 min
    .venv/bin/python bench/sim_bench.py --quick    # smoke run, about 20 s
    .venv/bin/python bench/sim_bench.py --seconds 10 --rounds 5 --csv out.csv
"""

from __future__ import annotations

import os

# Before anything imports mujoco: headless offscreen rendering.
os.environ.setdefault("MUJOCO_GL", "egl")

import argparse
import csv
import importlib.metadata
import itertools
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gym_hil
import gymnasium as gym
import mujoco
import numpy as np
from bench_common import machine_info

from coirl_ros.sim.env import EnvConfig, ManipulationEnv
from coirl_ros.sim.tasks import make_task

GYM_HIL_ID = "gym_hil/PandaPickCubeBase-v0"
OUR_TASK = "lift"
SETTINGS: tuple[tuple[str, tuple[int, int] | None], ...] = (
    ("state only", None),
    ("2 cams 84x84", (84, 84)),
    ("2 cams 128x128", (128, 128)),
)
TARGET_STATE_X = 3.0  # ours / gym_hil env steps/s, state only
TARGET_IMAGE_X = 10.0  # ... with images at the same resolution

DEFAULT_CSV = Path(__file__).resolve().parent / "results" / "sim_bench.csv"


@dataclass
class Sizes:
    """Time budgets; `--quick` swaps in a tiny set so a smoke run takes seconds."""

    seconds: float  # timed wall time per env and setting (at least)
    rounds: int  # alternating rounds the time is split into
    warmup_s: float  # untimed stepping after construction and the first reset
    min_steps: int  # per round and warm-up, however slow the env


FULL = Sizes(seconds=6.0, rounds=3, warmup_s=1.0, min_steps=2)
QUICK = Sizes(seconds=0.4, rounds=1, warmup_s=0.1, min_steps=1)


# ---- the two environments ----------------------------------------------------------------------
@dataclass
class Subject:
    """One env under test, with its policy and the running totals of its timed rounds."""

    name: str
    env: gym.Env
    control_dt: float  # s of simulated time per env step
    physics_dt: float
    substeps: int
    act: Callable[[], np.ndarray]
    scene: str
    steps: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    resets: int = 0
    round_rates: list[float] = field(default_factory=list)

    def reset(self, seed: int) -> None:
        self.env.reset(seed=seed)

    def _run(self, budget_s: float, min_steps: int) -> tuple[int, int, float, float]:
        env, act, clock = self.env, self.act, time.perf_counter
        steps = resets = 0
        cpu0, t0 = time.process_time(), clock()
        while True:
            _obs, _rew, terminated, truncated, _info = env.step(act())
            steps += 1
            if terminated or truncated:
                env.reset()
                resets += 1
            elapsed = clock() - t0
            if elapsed >= budget_s and steps >= min_steps:
                return steps, resets, elapsed, time.process_time() - cpu0

    def warm_up(self, sizes: Sizes) -> None:
        self._run(sizes.warmup_s, sizes.min_steps)

    def timed_round(self, budget_s: float, min_steps: int) -> None:
        steps, resets, wall, cpu = self._run(budget_s, min_steps)
        self.steps += steps
        self.resets += resets
        self.wall_s += wall
        self.cpu_s += cpu
        self.round_rates.append(steps / wall)

    @property
    def rate(self) -> float:
        return self.steps / self.wall_s

    def close(self) -> None:
        self.env.close()  # releases the EGL renderer now, not at interpreter exit


def scene_summary(model: mujoco.MjModel) -> str:
    shadows = int(np.sum(model.light_castshadow)) if model.vis.quality.shadowsize > 0 else 0
    return (
        f"{model.ngeom} geoms, {model.nmeshface:,} mesh triangles, {model.nv} dofs, "
        f"{shadows} shadow-casting lights (map {model.vis.quality.shadowsize}), "
        f"MSAA {model.vis.quality.offsamples}x, noslip iterations {model.opt.noslip_iterations}"
    )


def make_ours(size: tuple[int, int] | None) -> Subject:
    env = ManipulationEnv(make_task(OUR_TASK), EnvConfig(image_size=size))
    obs, _ = env.reset(seed=0)
    hold = obs["state"].copy()  # joint targets = the current joints: the arm holds its pose
    return Subject(
        name=f"ours ({OUR_TASK}, joint targets held)",
        env=env,
        control_dt=env.dt,
        physics_dt=env.model.opt.timestep,
        substeps=env.n_substeps,
        act=lambda: hold,
        scene=scene_summary(env.model),
    )


def make_gym_hil(size: tuple[int, int] | None, like: mujoco.MjModel | None = None) -> Subject:
    """gym_hil as shipped; with `like`, rendering with that model's shadow and MSAA settings."""
    kwargs: dict = {"image_obs": size is not None}
    if size is not None:
        kwargs["render_spec"] = gym_hil.GymRenderingSpec(height=size[0], width=size[1])
    # No passive env checker: it only checks the first calls, but is not the env's own cost.
    env = gym.make(GYM_HIL_ID, disable_env_checker=True, **kwargs)
    base = env.unwrapped
    name = "gym_hil (PandaPickCubeBase-v0, random actions)"
    if like is not None:
        # Render as our scene does (no shadows; its multisampling). The renderer is made in the
        # env's constructor, so it is remade after changing the model's visual settings.
        base.model.vis.quality.shadowsize = like.vis.quality.shadowsize
        base.model.vis.quality.offsamples = like.vis.quality.offsamples
        if like.vis.quality.shadowsize == 0 or not np.any(like.light_castshadow):
            base.model.light_castshadow[:] = 0
        spec = base._render_specs
        base._viewer.close()
        base._viewer = mujoco.Renderer(base.model, height=spec.height, width=spec.width)
        name = "gym_hil, shadows + MSAA as ours (not as shipped)"
    env.reset(seed=0)
    env.action_space.seed(0)
    pool = [env.action_space.sample() for _ in range(1024)]  # drawn before timing
    return Subject(
        name=name,
        env=env,
        control_dt=base.control_dt,
        physics_dt=base.physics_dt,
        substeps=int(getattr(base, "_n_substeps", round(base.control_dt / base.physics_dt))),
        act=itertools.cycle(pool).__next__,
        scene=scene_summary(base.model),
    )


# ---- measurement --------------------------------------------------------------------------------
@dataclass
class SettingResult:
    setting: str
    subjects: list[Subject]  # [ours, gym_hil, (gym_hil plain render)]
    target: float

    @property
    def ours(self) -> Subject:
        return self.subjects[0]

    @property
    def reference(self) -> Subject:
        return self.subjects[1]

    def ratio(self, other: Subject | None = None) -> float:
        return self.ours.rate / (other or self.reference).rate

    def sim_ratio(self, other: Subject | None = None) -> float:
        other = other or self.reference
        return (self.ours.rate * self.ours.control_dt) / (other.rate * other.control_dt)

    def round_ratios(self) -> list[float]:
        return [a / b for a, b in zip(self.ours.round_rates, self.reference.round_rates, strict=True)]

    @property
    def passed(self) -> bool:
        return self.ratio() >= self.target


def bench_setting(
    setting: str, size: tuple[int, int] | None, sizes: Sizes, plain: bool, log: Callable[[str], None]
) -> SettingResult:
    subjects: list[Subject] = []
    makers: list[Callable[[], Subject]] = [lambda: make_ours(size), lambda: make_gym_hil(size)]
    if plain and size is not None:
        makers.append(lambda: make_gym_hil(size, like=subjects[0].env.unwrapped.model))
    try:
        for make in makers:
            subjects.append(make())
        for s in subjects:
            s.warm_up(sizes)
        per_round = sizes.seconds / sizes.rounds
        for _ in range(sizes.rounds):
            for s in subjects:  # alternate, so a burst of outside load hits every env
                s.timed_round(per_round, sizes.min_steps)
    finally:
        for s in subjects:
            s.close()
    for s in subjects:
        log(
            f"  {s.name}: {s.steps:,} steps in {s.wall_s:.1f} s = {s.rate:,.1f} steps/s, "
            f"{s.resets} resets, CPU {s.cpu_s / s.wall_s:.2f} s/s"
        )
    target = TARGET_STATE_X if size is None else TARGET_IMAGE_X
    return SettingResult(setting, subjects, target)


# ---- reporting ------------------------------------------------------------------------------------
def gl_renderer() -> str:
    """The OpenGL renderer MuJoCo's offscreen context gets (llvmpipe = software, on the CPU)."""
    try:
        ctx = mujoco.GLContext(16, 16)
        ctx.make_current()
        try:
            from OpenGL import GL

            return GL.glGetString(GL.GL_RENDERER).decode() + ", " + GL.glGetString(GL.GL_VERSION).decode()
        finally:
            ctx.free()
    except Exception as exc:  # a benchmark should not die for a line of machine info
        return f"unknown ({type(exc).__name__})"


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def load_avg() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1/5/15 min)"
    except OSError:
        return "?"


def sim_machine_info() -> dict[str, str]:
    return machine_info(
        {
            "mujoco": mujoco.__version__,
            "gymnasium": gym.__version__,
            "gym_hil": version("gym_hil"),
            "MUJOCO_GL": os.environ.get("MUJOCO_GL", ""),
            "GL renderer": gl_renderer(),
            "platform": platform.platform(),
        }
    )


def hz(s: Subject) -> str:
    return f"{1 / s.control_dt:g} Hz ({s.substeps} x {1e3 * s.physics_dt:g} ms)"


def throughput_table(results: list[SettingResult]) -> str:
    lines = [
        "| observation | env | control (physics substeps) | env steps/s | sim s / wall s "
        "| rounds min-max steps/s | steps (resets) | CPU s / wall s |",
        "|---|---|---|---:|---:|---|---:|---:|",
    ]
    for r in results:
        for s in r.subjects:
            spread = f"{min(s.round_rates):,.1f}-{max(s.round_rates):,.1f}"
            lines.append(
                f"| {r.setting} | {s.name} | {hz(s)} | {s.rate:,.1f} | {s.rate * s.control_dt:,.2f} "
                f"| {spread} | {s.steps:,} ({s.resets}) | {s.cpu_s / s.wall_s:.2f} |"
            )
    return "\n".join(lines)


def ratio_table(results: list[SettingResult]) -> str:
    lines = [
        "| observation | ours / gym_hil env steps/s | per round | target | pass "
        "| ours / gym_hil sim s per wall s |",
        "|---|---:|---|---|---|---:|",
    ]
    for r in results:
        rounds = ", ".join(f"{x:.1f}" for x in r.round_ratios())
        lines.append(
            f"| {r.setting} | {r.ratio():.1f}x | {rounds} | >= {r.target:g}x "
            f"| {'PASS' if r.passed else 'FAIL'} | {r.sim_ratio():.1f}x |"
        )
    for r in results:
        for s in r.subjects[2:]:
            lines.append(f"| {r.setting}, vs {s.name} | {r.ratio(s):.1f}x | | | | {r.sim_ratio(s):.1f}x |")
    return "\n".join(lines)


def write_csv(path: Path, results: list[SettingResult], info: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["section", "metric", "value", "unit", "target", "pass"])
        for r in results:
            for s in r.subjects:
                out.writerow([r.setting, f"{s.name}: env steps/s", s.rate, "steps/s", "", ""])
                out.writerow([r.setting, f"{s.name}: control rate", 1 / s.control_dt, "Hz", "", ""])
                out.writerow([r.setting, f"{s.name}: physics substeps", s.substeps, "", "", ""])
                out.writerow([r.setting, f"{s.name}: sim s per wall s", s.rate * s.control_dt, "x", "", ""])
                out.writerow([r.setting, f"{s.name}: steps timed", s.steps, "steps", "", ""])
                out.writerow([r.setting, f"{s.name}: resets", s.resets, "", "", ""])
                out.writerow([r.setting, f"{s.name}: CPU s per wall s", s.cpu_s / s.wall_s, "x", "", ""])
            out.writerow(
                [
                    r.setting,
                    "ours / gym_hil env steps/s",
                    r.ratio(),
                    "x",
                    f">={r.target}",
                    str(r.passed).lower(),
                ]
            )
            out.writerow([r.setting, "ours / gym_hil sim s per wall s", r.sim_ratio(), "x", "", ""])
            for s in r.subjects[2:]:
                out.writerow([r.setting, f"ours / {s.name} env steps/s", r.ratio(s), "x", "", ""])
        for key, value in info.items():
            out.writerow(["machine", key, value, "", "", ""])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny time budgets: a smoke run in a few seconds")
    p.add_argument("--csv", type=Path, default=DEFAULT_CSV, help=f"CSV output (default {DEFAULT_CSV})")
    p.add_argument("--seconds", type=float, help="timed wall time per env and setting (default 6 s)")
    p.add_argument("--rounds", type=int, help="alternating rounds that time is split into (default 3)")
    p.add_argument(
        "--as-shipped-only",
        action="store_true",
        help="skip the extra rows timing gym_hil rendered without shadows, as ours",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    overrides = {"seconds": args.seconds, "rounds": args.rounds}
    sizes = Sizes(**{**sizes.__dict__, **{k: v for k, v in overrides.items() if v is not None}})

    def log(msg: str) -> None:
        print(msg, flush=True)

    t_start = time.perf_counter()
    info = sim_machine_info()
    info["load average at start"] = load_avg()
    log(
        f"simulation benchmark ({'quick' if args.quick else 'full'}): {sizes.seconds:g} s per env and "
        f"setting in {sizes.rounds} round(s), after {sizes.warmup_s:g} s of warm-up"
    )
    results: list[SettingResult] = []
    for i, (setting, size) in enumerate(SETTINGS, 1):
        log(f"{i}. {setting}")
        results.append(bench_setting(setting, size, sizes, not args.as_shipped_only, log))
    info["load average at end"] = load_avg()
    total_s = time.perf_counter() - t_start

    ours, ref = results[0].ours, results[0].reference
    print()
    print(throughput_table(results))
    print()
    print(ratio_table(results))
    print()
    print(
        f"- control rates: ours {hz(ours)}, gym_hil {hz(ref)}; both integrate with "
        f"{1e3 * ours.physics_dt:g} ms physics steps, so one gym_hil env step simulates "
        f"{ref.control_dt / ours.control_dt:g}x the time of ours: 'sim s / wall s' compares physics "
        "throughput, the targets compare env steps/s as the issue states them"
    )
    print(f"- scene, ours: {ours.scene}")
    print(f"- scene, gym_hil as shipped: {ref.scene}")
    print("- both render two cameras (front, wrist) per step with one offscreen renderer each")
    print("- resets are timed (ours: every 100 steps; gym_hil: TimeLimit 100 or cube out of bounds)")
    for key, value in info.items():
        print(f"- {key}: {value}")
    print(f"- total benchmark time: {total_s:.1f} s")
    write_csv(args.csv, results, info)
    print(f"- csv: {args.csv}")
    failed = [r.setting for r in results if not r.passed]
    if failed:
        print(f"\nmissed targets: {', '.join(failed)}", file=sys.stderr)


if __name__ == "__main__":
    main()
