"""Learning-curve experiments in simulation: `coirl bench learn` (actor and learner in one process).

For one task: scripted demonstrations (ee_delta actions) → the local chunked BC base → for every
method and seed, a fresh store holding the demos, a `Learner`, and an actor that rolls the composed
policy (frozen base + residual) out in MuJoCo, records each episode into the store exactly as the
recorder node would, and hands the learner its updates (UTD ratio × new env steps). Every
`eval_every` env steps the deterministic policy is evaluated on the same fixed seeds for every
method, so the curves differ by method only. Rows are appended to the CSV as they are measured (an
interrupted run keeps what it measured); the plot shows mean and min-max over seeds.

`base` and `bc` do not learn online: they are evaluated once and drawn as flat lines.

`image_size` > 0 renders both cameras at that size, in the demos and in every rollout, and the residual,
reward and critic learn from the cameras' keypoints + robot state (`LearnerConfig.observation:
images`) instead of the privileged object state; the base still acts on state + object state (it is a
stand-in for π0.5). Such runs get their own demo cache, run directories and CSV (`_img<N>` suffix).

`base_offset_m` deploys the base miscalibrated (it sees the object that far off in +y, as `make demo`
does): a base trained on the same demonstrations as the residual leaves the residual little to
correct, whereas π0.5 on a robot was trained elsewhere. Its CSV and run directories get `_off<N>cm`.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from coirl_ros.configs import LearnerConfig
from coirl_ros.constants import (
    ACTION,
    ACTION_BASE,
    ACTION_RESIDUAL,
    DONE,
    OBS_ENV_STATE,
    OBS_STATE,
    REWARD,
    TIMESTAMP,
    image_key,
)
from coirl_ros.control.demo_base import demo_base_filler
from coirl_ros.data import EpisodeStore
from coirl_ros.learning.image_policy import ImageResidualPolicy
from coirl_ros.learning.learner import Learner
from coirl_ros.learning.residual_policy import ResidualPolicy
from coirl_ros.policies.base_policy import check_calibration_offset
from coirl_ros.policies.composition import ChunkedBaseRunner, ComposedPolicy
from coirl_ros.policies.local_bc_base import LocalBCBase, LocalBCConfig, miscalibrated, train_local_bc_base
from coirl_ros.sim.demos import EXPERT_NOISE_M, generate_demos
from coirl_ros.sim.env import EnvConfig, ManipulationEnv
from coirl_ros.sim.tasks import make_task

log = logging.getLogger(__name__)

METHODS = ("base", "bc", "csil", "sparse")
EVAL_SEED0 = 10_000  # evaluation seeds, disjoint from the demo seeds 0..N-1
TRAIN_SEED0 = 1_000_000  # training-episode seeds: TRAIN_SEED0 * (seed + 1) + episode
CSV_FIELDS = (
    "task", "method", "seed", "demos", "scale", "env_steps", "actual_env_steps", "updates", "success_rate",
    "eval_episodes", "wall_s",
)  # fmt: skip


@dataclass(frozen=True)
class ExperimentConfig:
    """One task, several methods and seeds; see `coirl bench learn --help` for each field."""

    task: str = "square"
    methods: tuple[str, ...] = METHODS
    seeds: int = 3
    first_seed: int = 0  # runs seeds first_seed .. first_seed + seeds - 1 (add seeds to an existing CSV)
    env_steps: int = 50_000
    demos: int = 25
    eval_every: int = 5_000
    eval_episodes: int = 50
    requery_every: int = 10
    composition: str = "residual"
    scale: float = 0.5  # the local base's per-step error is 0.1-0.3: at 0.1, 85% of demo residuals clip
    base: LocalBCConfig = field(default_factory=LocalBCConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    out_dir: Path = Path("runs/bench_learn")
    image_size: int = 0  # > 0: both cameras at NxN and an image-based residual (0: state + object state)
    # Exploration spread of training rollouts, as a fraction of the policy's own std (TanhNormal.sample).
    explore_temperature: float = 1.0
    # > 0: the frozen base is deployed seeing the object this far off in +y (`miscalibrated`), the
    # product's case of a base trained elsewhere; 0: the base is matched to the demonstrations.
    base_offset_m: float = 0.0
    # Continue every run from its checkpoint (saved after pre-training and at every evaluation) up
    # to `env_steps`, instead of refusing its existing run directory: a longer budget, or a run that
    # was killed, without repeating its pre-training. Runs without a directory start fresh. A resumed
    # run's wall_s goes on from its checkpoint's (run_dir/elapsed.json).
    resume: bool = False
    # The scripted expert's noise for the demonstrations (`generate_demos`); other values than the
    # default get their own cache (`demos_<N>_noise<mm>mm.zarr`).
    demo_noise_m: float = EXPERT_NOISE_M
    # A store of further demonstrations, copied into every run's store after the scripted ones: the
    # operator takeovers of `bench/takeover_rounds.py` (HG-DAgger). The base never sees them (it is
    # the frozen π0.5 stand-in); the residual's π_BC, reward and critic do.
    extra_demos: Path | None = None
    # Copies of `extra_demos` in the store (> 1 weights the corrections against the far more numerous
    # scripted frames in every uniformly drawn batch, as IWR balances interventions).
    extra_demos_weight: int = 1

    def __post_init__(self) -> None:
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")
        if min(self.seeds, self.env_steps, self.demos, self.eval_every, self.eval_episodes) <= 0:
            raise ValueError("seeds, env_steps, demos, eval_every and eval_episodes must all be positive")
        if self.image_size < 0:
            raise ValueError(f"image_size must be >= 0, got {self.image_size}")
        if self.demo_noise_m < 0:
            raise ValueError(f"demo_noise_m is a standard deviation in metres, got {self.demo_noise_m}")
        if not 0.0 <= self.explore_temperature <= 1.0:
            raise ValueError(f"explore_temperature must be in [0, 1], got {self.explore_temperature}")
        check_calibration_offset(self.base_offset_m)
        if self.extra_demos is not None and not (Path(self.extra_demos) / "zarr.json").is_file():
            raise ValueError(f"extra_demos {self.extra_demos} is not an episode store (no zarr.json)")
        if self.extra_demos_weight < 1:
            raise ValueError(
                f"extra_demos_weight is a number of copies (>= 1), got {self.extra_demos_weight}"
            )

    @property
    def task_dir(self) -> Path:
        return self.out_dir / self.task

    @property
    def tag(self) -> str:
        """Demo count, image size and base offset: names the run directories and the CSV."""
        tag = f"d{self.demos}" + (f"_img{self.image_size}" if self.image_size else "")
        tag += f"_off{self.base_offset_m * 100:g}cm" if self.base_offset_m else ""
        if self.extra_demos is not None:
            tag += f"_plus{len(EpisodeStore.open(self.extra_demos).episode_indices())}"
            tag += f"x{self.extra_demos_weight}" if self.extra_demos_weight != 1 else ""
        return tag

    @property
    def csv_path(self) -> Path:
        return self.task_dir / f"curves_{self.tag}.csv"

    @property
    def env_image_size(self) -> tuple[int, int] | None:
        return (self.image_size, self.image_size) if self.image_size else None


# ---- data and base ---------------------------------------------------------------------------------
def demo_noise_tag(noise_m: float) -> str:
    """ "_noise<mm>mm" for demonstrations from an expert noisier (or quieter) than the default; "" else."""
    return f"_noise{noise_m * 1000:g}mm" if noise_m != EXPERT_NOISE_M else ""


def prepare_demos(config: ExperimentConfig) -> EpisodeStore:
    """The task's scripted ee_delta demonstrations, generated once and reused by every run."""
    suffix = f"_img{config.image_size}" if config.image_size else ""
    suffix += demo_noise_tag(config.demo_noise_m)
    root = config.task_dir / f"demos_{config.demos}{suffix}.zarr"
    if root.exists():
        cached = EpisodeStore.open(root)
        if len(cached.episode_indices()) == config.demos:
            return cached
        # An interrupted generation: regenerating would append duplicates of the same seeds.
        shutil.rmtree(root)
    report = generate_demos(
        config.task,
        config.demos,
        root,
        image_size=config.env_image_size,
        noise=config.demo_noise_m,
        action_mode="ee_delta",
        progress=True,
    )
    log.info("%s", report)
    store = EpisodeStore.open(root)
    if len(store.episode_indices()) != config.demos:
        raise RuntimeError(f"{root}: expected {config.demos} demos, the expert produced {report}")
    return store


def prepare_base(config: ExperimentConfig, demos: EpisodeStore) -> LocalBCBase:
    """The local chunked BC base trained on the demos (cached next to them).

    Shared by state and image runs: the same seeds give the same expert trajectories (rendering does
    not change the physics) and the base reads state + object state only.
    """
    directory = config.task_dir / f"base_{config.demos}"
    if (directory / "model.safetensors").exists():
        base = LocalBCBase.load(directory)
        if base.config == config.base:
            return base
        log.warning("%s was trained with %s; retraining with %s", directory, base.config, config.base)
    base = train_local_bc_base(demos, config.base)
    base.save(directory)
    return base


def copy_episodes(src: EpisodeStore, dst: EpisodeStore) -> None:
    """Write every episode of `src` into `dst` through the writer (metadata preserved)."""
    with dst.writer() as writer:
        for episode in src.iter_episodes():
            writer.begin_episode(episode.meta.task, episode.meta.source)
            for t in range(episode.meta.num_frames):
                writer.add_frame({k: v[t] for k, v in episode.data.items()})
            writer.save_episode(success=episode.meta.success)


# ---- acting ----------------------------------------------------------------------------------------
Policy = ResidualPolicy | ImageResidualPolicy


class Actor:
    """Rolls the composed policy out in the sim; optionally records each episode into a store."""

    def __init__(self, config: ExperimentConfig, base: LocalBCBase) -> None:
        env_config = EnvConfig(action_mode="ee_delta", image_size=config.env_image_size)
        self.env = ManipulationEnv(make_task(config.task), env_config)
        self.runner = ChunkedBaseRunner(base, config.requery_every)
        self.config = config
        self.cameras = env_config.cameras if config.image_size else ()

    def close(self) -> None:
        self.env.close()

    def composed(self, policy: Policy | None, explore: bool) -> ComposedPolicy:
        """The base (through this actor's chunk runner) composed with `policy`'s residual."""
        small = None
        if policy is not None:

            def small(obs: dict[str, np.ndarray], base_action: np.ndarray) -> np.ndarray:
                if isinstance(policy, ImageResidualPolicy):  # raw frames + robot state, no object state
                    raw = {OBS_STATE: obs["state"], **{image_key(c): obs[c] for c in self.cameras}}
                    u = policy.act(raw, base_action, not explore, self.config.explore_temperature)
                else:
                    x = np.concatenate([obs["state"], obs["object"], base_action]).astype(np.float32)
                    u = policy.act(x, not explore, self.config.explore_temperature)
                if self.config.composition == "ensemble":
                    return u  # executed as (a_base + u) / 2
                # ComposedPolicy applies scale * tanh(raw): hand it atanh(u) so the executed action is
                # exactly clip(a_base + scale * u), the map the learner inverts.
                return np.arctanh(np.clip(u, -1 + 1e-6, 1 - 1e-6))

        return ComposedPolicy(self.runner, small, self.config.composition, self.config.scale)

    def run_episode(
        self, seed: int, policy: Policy | None, explore: bool, store: EpisodeStore | None = None
    ) -> tuple[bool, int]:
        """One episode; returns (success, steps). Recorded as a "policy" episode when `store` is given."""
        composed = self.composed(policy, explore)
        composed.reset()
        obs, info = self.env.reset(seed=seed)
        frames = []
        success, steps = False, 0
        for t in range(self.env.horizon):
            action, base_action, residual = composed.act(obs)
            next_obs, reward, terminated, truncated, info = self.env.step(action)
            frames.append({
                OBS_STATE: obs["state"], OBS_ENV_STATE: obs["object"],
                ACTION: action.astype(np.float32), ACTION_BASE: base_action.astype(np.float32),
                ACTION_RESIDUAL: residual.astype(np.float32),
                REWARD: reward, DONE: terminated, TIMESTAMP: t * self.env.dt,
                **{image_key(c): obs[c] for c in self.cameras},
            })  # fmt: skip
            obs, steps, success = next_obs, t + 1, bool(info["success"])
            if terminated or truncated:
                break
        if store is not None:
            with store.writer() as writer:
                writer.begin_episode(self.config.task, "policy")
                for frame in frames:
                    writer.add_frame(frame)
                writer.save_episode(success=success)
        return success, steps

    def evaluate(self, policy: Policy | None, episodes: int) -> float:
        """Success rate of the deterministic policy on the fixed evaluation seeds."""
        wins = sum(self.run_episode(EVAL_SEED0 + k, policy, explore=False)[0] for k in range(episodes))
        return wins / episodes


# ---- one run -----------------------------------------------------------------------------------------
ELAPSED_FILE = "elapsed.json"  # beside learner.pt: the run's wall time when it was saved


def _save_checkpoint(learner: Learner, checkpoint: Path, wall_s: float) -> None:
    """learner.pt and the run's elapsed wall time, so that a resumed run's wall_s goes on from it."""
    learner.save_checkpoint(checkpoint)
    tmp = checkpoint.with_name(ELAPSED_FILE + ".tmp")
    tmp.write_text(json.dumps({"wall_s": round(wall_s, 1)}))
    tmp.replace(checkpoint.with_name(ELAPSED_FILE))


def _elapsed_at_checkpoint(checkpoint: Path) -> float:
    """The wall time saved with `checkpoint` (0 for a run saved before elapsed.json existed)."""
    path = checkpoint.with_name(ELAPSED_FILE)
    try:
        return float(json.loads(path.read_text())["wall_s"])
    except FileNotFoundError:
        log.warning("%s: no %s; wall_s of the resumed rows counts from the resume", path.parent, ELAPSED_FILE)
        return 0.0


def run_one(
    config: ExperimentConfig,
    method: str,
    seed: int,
    demos: EpisodeStore,
    base: LocalBCBase,
    emit: Callable[[dict], None],
) -> None:
    """Train and evaluate one (method, seed); every evaluation is passed to `emit` as a CSV row."""
    start = time.perf_counter()
    run_dir = config.task_dir / f"{method}_{config.tag}_s{seed}"
    checkpoint = run_dir / "learner.pt"
    resuming = config.resume and checkpoint.is_file()
    if run_dir.exists() and not resuming:
        raise ValueError(
            f"{run_dir} has no learner.pt to resume from (killed during its pre-training, or run by a"
            " version that saved none); move it away to start that run again"
            if config.resume
            else f"{run_dir} exists: continue it with --resume, or move it away to run it again"
        )
    extra = EpisodeStore.open(config.extra_demos) if config.extra_demos is not None else None
    if extra is not None and extra.spec != demos.spec:
        raise ValueError(f"{config.extra_demos}: spec {extra.spec} is not the demos' {demos.spec}")
    if resuming:
        store = EpisodeStore.open(run_dir / "episodes.zarr")
    else:
        store = EpisodeStore.create(run_dir / "episodes.zarr", demos.spec, exist_ok=False)
        copy_episodes(demos, store)
        for _ in range(config.extra_demos_weight if extra is not None else 0):
            copy_episodes(extra, store)
    observation = "images" if config.image_size else config.learner.observation
    learner_cfg = config.learner.model_copy(
        update={"method": method, "seed": seed, "observation": observation}
    )
    learner = Learner(
        learner_cfg,
        store,
        config.composition,
        config.scale,
        on_load=demo_base_filler(base, config.requery_every),
    )
    if resuming:
        # The checkpoint restores the RNGs too. Rollouts recorded after it (a killed run) stay in the
        # replay; the env-step count is the learner's, so the UTD schedule goes on where it saved.
        learner.load_checkpoint(checkpoint)
        start -= _elapsed_at_checkpoint(checkpoint)
        env_steps = learner.state.env_steps
        episode = sum(m.source == "policy" for m in store.list_episodes())
        if not learner.trains_online or env_steps >= config.env_steps:
            log.info("%s: already at %d env steps (asked %d); nothing to resume", run_dir, env_steps,
                     config.env_steps)  # fmt: skip
            return
        log.info("%s: resuming at %d env steps, %d rollouts", run_dir, env_steps, episode)
    else:
        torch.manual_seed(seed)
        learner.pretrain()
        env_steps, episode = 0, 0
    actor = Actor(config, base)

    def evaluate(env_steps: int, actual: int, rate: float | None = None) -> float:
        """Evaluate (or, for a method that does not learn, repeat its one result at `env_steps`).

        `env_steps` is the nominal grid point (a multiple of eval_every), which every seed and method
        shares; evaluation happens at the first episode boundary past it, `actual` env steps.
        """
        if rate is None:
            rate = actor.evaluate(learner.acting_policy, config.eval_episodes)
        emit({
            "task": config.task, "method": method, "seed": seed, "demos": config.demos,
            "scale": config.scale, "env_steps": env_steps, "actual_env_steps": actual,
            "updates": learner.state.updates, "success_rate": rate, "eval_episodes": config.eval_episodes,
            "wall_s": round(time.perf_counter() - start, 1),
        })  # fmt: skip
        return rate

    closers: list[Callable[[], None]] = []
    try:
        if not resuming:  # a resumed run's evaluations up to its checkpoint are in the CSV already
            rate = evaluate(0, 0)
            # From here on a killed run resumes without repeating its pre-training (the costly part);
            # for a method that does not learn online the checkpoint marks the run complete.
            if not learner.trains_online:
                evaluate(config.env_steps, 0, rate)  # drawn flat across the budget
                _save_checkpoint(learner, checkpoint, time.perf_counter() - start)
                return
            _save_checkpoint(learner, checkpoint, time.perf_counter() - start)
        bar = tqdm(total=config.env_steps, initial=env_steps, desc=f"{config.task} {method} s{seed}",
                   unit="step", leave=False)  # fmt: skip
        if not resuming:
            bar.set_postfix(success=f"{rate:.0%}")
        next_eval = (env_steps // config.eval_every + 1) * config.eval_every
        # One line per training episode: the learner's losses and the exploring policy's outcome, so a
        # flat success curve can be diagnosed (is the critic moving? the reward? the KL?).
        metrics_log = open(run_dir / "metrics.jsonl", "a")  # noqa: SIM115 (closed in finally)
        closers.append(metrics_log.close)
        while env_steps < config.env_steps:
            success, steps = actor.run_episode(
                TRAIN_SEED0 * (seed + 1) + episode, learner.acting_policy, explore=True, store=store
            )
            episode += 1
            env_steps += steps
            bar.update(steps)
            learner.refresh()
            metrics = learner.train(learner.add_env_steps(steps))
            record = {"episode": episode, "env_steps": env_steps, "updates": learner.state.updates,
                      "train_success": success, **{k: round(v, 5) for k, v in metrics.items()}}  # fmt: skip
            metrics_log.write(json.dumps(record) + "\n")
            metrics_log.flush()
            if env_steps >= next_eval or env_steps >= config.env_steps:
                rate = evaluate(min(next_eval, config.env_steps), env_steps)
                next_eval += config.eval_every
                q = metrics.get("critic/q_mean", float("nan"))
                bar.set_postfix(success=f"{rate:.0%}", q=f"{q:.2f}", updates=learner.state.updates)
                # At every evaluation, so that a run killed later resumes from its last CSV row.
                _save_checkpoint(learner, checkpoint, time.perf_counter() - start)
        bar.close()
    finally:
        actor.close()
        for close in closers:
            close()


# ---- the experiment ----------------------------------------------------------------------------------
def run_experiment(config: ExperimentConfig, csv_path: Path | None = None) -> list[dict]:
    """Every method × seed on one task; returns the rows (also appended to `csv_path` as they come)."""
    config.task_dir.mkdir(parents=True, exist_ok=True)
    csv_path = csv_path or config.csv_path
    demos = prepare_demos(config)
    base = prepare_base(config, demos)
    if config.base_offset_m:
        base = miscalibrated(base, (0.0, config.base_offset_m, 0.0))
    rows: list[dict] = []
    new_file = not csv_path.exists()
    with open(csv_path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        if new_file:
            writer.writeheader()

        def emit(row: dict) -> None:
            rows.append(row)
            writer.writerow(row)
            f.flush()

        for seed in range(config.first_seed, config.first_seed + config.seeds):
            for method in config.methods:
                run_one(config, method, seed, demos, base, emit)
    return rows


def read_rows(csv_path: Path, eval_every: int | None = None) -> list[dict]:
    """Rows of a curves CSV with numeric fields parsed.

    CSVs written before the nominal evaluation step existed hold the actual step in `env_steps`;
    with `eval_every` given it is snapped down to its grid point so that seeds line up.
    """
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        if not row.get("actual_env_steps"):
            row["actual_env_steps"] = row["env_steps"]
            if eval_every:
                row["env_steps"] = str(int(row["env_steps"]) // eval_every * eval_every)
        row["scale"] = row.get("scale") or "nan"
        for key in ("seed", "demos", "env_steps", "actual_env_steps", "updates", "eval_episodes"):
            row[key] = int(row[key])
        for key in ("success_rate", "wall_s", "scale"):
            row[key] = float(row[key])
    return rows


def curves(rows: list[dict]) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(method, env_steps [K], success [seeds, K]) per method, over the steps every seed reached.

    The four methods first, then any other label the rows carry (a CSV of variants, say "csil beta 1")
    in the order it first appears."""
    others = dict.fromkeys(r["method"] for r in rows if r["method"] not in METHODS)
    for method in [*METHODS, *others]:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        seeds = sorted({r["seed"] for r in mine})
        by_seed = {s: {r["env_steps"]: r["success_rate"] for r in mine if r["seed"] == s} for s in seeds}
        steps = sorted(set.intersection(*(set(v) for v in by_seed.values())))
        yield method, np.array(steps), np.array([[by_seed[s][k] for k in steps] for s in seeds])


def summarise(rows: list[dict], target: float = 0.9) -> list[dict]:
    """Per method: seeds, eval episodes, success at 0 and at the end (mean ± std), first step where
    the mean reaches `target`, and the largest drop below the base at any evaluation."""
    base_rate = None
    table = []
    all_curves = list(curves(rows))
    for method, _steps, success in all_curves:
        if method == "base":
            base_rate = float(success.mean())
    for method, steps, success in all_curves:
        mean = success.mean(axis=0)
        reached = np.flatnonzero(mean >= target)
        table.append({
            "method": method, "seeds": success.shape[0],
            "eval_episodes": next(r["eval_episodes"] for r in rows if r["method"] == method),
            "start": float(mean[0]), "final": float(mean[-1]), "final_std": float(success[:, -1].std()),
            "steps_to_target": int(steps[reached[0]]) if len(reached) else None,
            "max_drop_below_base": None if base_rate is None else float(max(0.0, base_rate - mean.min())),
            "last_step": int(steps[-1]),
        })  # fmt: skip
    return table


def plot_curves(rows: list[dict], png_path: Path, title: str) -> Path:
    """Success rate against env steps, all methods side by side (mean line, min-max band over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for method, steps, success in curves(rows):
        mean = success.mean(axis=0)
        style = "--" if method in ("base", "bc") else "-"
        n = success.shape[0]
        (line,) = ax.plot(steps, mean, style, marker="o", ms=3, label=f"{method} ({n} seed{'s' * (n > 1)})")
        if n > 1:
            ax.fill_between(
                steps, success.min(axis=0), success.max(axis=0), alpha=0.2, color=line.get_color()
            )
    ax.set_xlabel("environment steps")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return png_path


def config_summary(config: ExperimentConfig) -> dict:
    """A JSON-able record of what ran (stored next to the CSV)."""
    out = asdict(replace(config, learner=LearnerConfig()))
    out["learner"] = config.learner.model_dump(mode="json")
    out["out_dir"] = str(config.out_dir)
    return out
