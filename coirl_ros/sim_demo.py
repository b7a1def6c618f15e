"""`make demo` / `coirl demo`: the whole loop in MuJoCo, through the node graph, in minutes on a CPU.

Six phases, each a graph from coirl_ros/graph.py started by coirl_ros/launcher.py (as `coirl
launch` does), except the base training, which is a function call:

1. record    teleop_node's scripted source drives the sim; recorder_node writes the demonstrations
             (episode_driver runs them): the path a person teleoperating would use.
2. base      the local chunked BC base (`train_local_bc_base`), the CPU stand-in for pi0.5, trained on
             the demonstrations and deployed seeing the cube `base_offset_m` off (a calibration
             error: a frozen base in a new cell, with something for the residual to correct).
3. eval base policy_node with the base alone, deterministic, on fixed evaluation seeds.
4. finetune  policy_node (base + residual, exploring at a temperature) + learner_node (CSIL, CPU-sized
             `config/learner_sim.yaml`): the learner pretrains on the demos, publishes weights, the
             policy swaps them in, rollouts are recorded and trained on. Every published version
             is kept on disk (learner_node `keep_snapshots`).
5. eval      policy_node with the residual's start: the learner's first published version (π_BC
             after pretraining, before any online update), deterministic, on the same seeds as 3.
6. eval      policy_node with the learner's final weights (a snapshot exported from its
             checkpoint), deterministic, on the same seeds as 3.

Writes under `out` (default runs/demo): results.csv (one row per evaluation), training.csv (one row
per training rollout), success.png, report.json, the stores, the base, the learner checkpoint, the
exported weights and every node's log (logs/<phase>/).
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from coirl_ros.configs import LearnerConfig, PolicyConfig, load_config
from coirl_ros.data import EpisodeStore
from coirl_ros.graph import build_graph, resolve_config
from coirl_ros.launcher import launch_environment, run_graph
from coirl_ros.policies.base_policy import check_calibration_offset

MARKER = ".coirl_demo"  # marks an output folder this demo may clear on the next run


@dataclass(frozen=True)
class DemoConfig:
    """What `coirl demo` runs; the defaults fit 15 minutes on a 2-core CPU (README "make demo")."""

    out: Path = Path("runs/demo")
    task_config: str = "task_lift.yaml"
    demos: int = 20  # with 10, what the residual learns to correct varies too much between draws (README)
    eval_episodes: int = 30
    train_episodes: int = 20
    base_steps: int = 3000
    # The base sees the cube this far (metres, +y) from where it is: a calibration error, standing in
    # for a frozen generalist deployed in a new cell (README "make demo"). 0 = the matched base, which
    # learned from the same demonstrations as the residual and leaves it almost nothing to correct.
    base_offset_m: float = 0.04
    bc_steps: int = 4000  # the learner's pi_BC (the residual's start); learner_sim.yaml has 5000
    critic_pretrain_steps: int = 1000
    explore_temperature: float = 0.3
    # Sim speed: evaluations at 2x real time; demonstrations and fine-tuning at real time (fewer ticks
    # acting on a state a step older or newer than usual, README "make demo"; the learner keeps up).
    real_time_factor: float = 2.0
    record_real_time_factor: float = 1.0
    finetune_real_time_factor: float = 1.0
    # One torch thread each: on two cores shared by five processes, more threads only spin (measured:
    # the base's 3000 steps took 5 min with 2 threads on a loaded machine).
    learner_threads: int = 1
    demo_seed: int = 0
    eval_seed: int = 10_000
    train_seed: int = 1_000_000

    def __post_init__(self) -> None:
        if min(self.demos, self.eval_episodes, self.train_episodes, self.base_steps) <= 0:
            raise ValueError("demos, eval_episodes, train_episodes and base_steps must be positive")
        check_calibration_offset(self.base_offset_m)


class DemoError(RuntimeError):
    """A phase failed; the message says which and where its logs are."""


# ---- phases -------------------------------------------------------------------------------------------
def _echo(name: str, line: str) -> bool:
    """Which node lines the demo shows (every line is in logs/<phase>/<node>.log)."""
    if any(k in line for k in ("[ERROR]", "[FATAL]", "Traceback", "configuration error")):
        return True
    if name == "episode_driver":
        return line.startswith("episode ")
    if name == "dashboard_node":
        return line.startswith("dashboard: http")
    if name == "learner_node":
        return any(k in line for k in ("pretrained in", "published weights", "resumed from"))
    return False


class Demo:
    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        self.out = config.out.resolve()
        self.env = launch_environment()
        self.timings: dict[str, float] = {}
        self.store = self.out / "episodes.zarr"

    def phase(self, title: str) -> None:
        print(f"\n==== {title}", flush=True)

    def graph(self, name: str, kind: str, overrides: dict[str, Any]) -> None:
        """Run one sim graph to its end (episode_driver's last episode)."""
        values = {
            "robot_config": "robot_sim_state.yaml",
            "task_config": self.config.task_config,
            "store": str(self.store),
            "real_time_factor": str(self.config.real_time_factor),
            "dashboard": "false",
            **{k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in overrides.items()},
        }
        nodes = build_graph(kind, True, values)  # type: ignore[arg-type]
        start = time.monotonic()
        code = run_graph(nodes, env=self.env, log_dir=self.out / "logs" / name, echo=_echo)
        self.timings[name] = round(time.monotonic() - start, 1)
        if code != 0:
            raise DemoError(
                f"phase {name}: the graph ended with exit code {code}; logs in {self.out / 'logs' / name}"
            )

    def run(self) -> dict[str, Any]:
        cfg = self.config
        started = time.monotonic()
        self.phase(f"1/6 record {cfg.demos} demonstrations: scripted expert -> teleop_node -> recorder_node")
        self.graph(
            "1_record",
            "record",
            {"episodes": cfg.demos, "seed": cfg.demo_seed, "real_time_factor": cfg.record_real_time_factor},
        )
        demos = outcomes(self.store)
        used = sum(1 for d in demos if d["success"])
        print(f"{used}/{len(demos)} demonstrations successful (the base learns from those)")
        if not used:
            raise DemoError("no successful demonstration was recorded; see logs/1_record")

        offset = f", deployed seeing the cube {cfg.base_offset_m * 100:g} cm off" if cfg.base_offset_m else ""
        self.phase(f"2/6 train the local BC base ({cfg.base_steps} steps){offset}")
        start = time.monotonic()
        self._train_base()
        self.timings["2_base"] = round(time.monotonic() - start, 1)

        self.phase(f"3/6 evaluate the base alone: {cfg.eval_episodes} deterministic episodes")
        eval_args = {
            "episodes": cfg.eval_episodes,
            "seed": cfg.eval_seed,
            "explore": False,
            "base_checkpoint": self.out / "base",
        }
        self.graph(
            "3_eval_base",
            "finetune",
            {**eval_args, "residual": False, "record_store": self.out / "eval_base.zarr"},
        )

        self.phase(
            f"4/6 fine-tune: policy_node + learner_node (CSIL), {cfg.train_episodes} exploring episodes"
            f" (temperature {cfg.explore_temperature}); the learner pretrains first"
            f" (BC {cfg.bc_steps} + critic {cfg.critic_pretrain_steps} steps, a few minutes)"
        )
        learner_file = self._learner_config()
        params = self.out / "learner_params.yaml"
        node_params = {"torch_threads": cfg.learner_threads, "keep_snapshots": True}
        params.write_text(yaml.safe_dump({"learner_node": {"ros__parameters": node_params}}))
        checkpoint = self.out / "learner" / "learner.pt"
        self.graph(
            "4_finetune",
            "finetune",
            {
                "episodes": cfg.train_episodes,
                "seed": cfg.train_seed,
                "explore": True,
                "explore_temperature": cfg.explore_temperature,
                "base_checkpoint": self.out / "base",
                "learner_config": learner_file,
                "checkpoint": checkpoint,
                "params_file": params,
                "real_time_factor": cfg.finetune_real_time_factor,
                "dashboard": True,  # open the printed URL to watch the episodes and the learner
            },
        )

        start_weights = checkpoint.parent / "snapshots" / "v1.weights"
        if not start_weights.is_file():
            raise DemoError(f"the learner kept no first version at {start_weights}; see logs/4_finetune")
        self.phase(
            f"5/6 evaluate the residual's start (v1: pi_BC, before online updates): {cfg.eval_episodes}"
            " deterministic episodes"
        )
        self.graph(
            "5_eval_start",
            "finetune",
            {
                **eval_args,
                "learner": False,
                "learner_config": learner_file,
                "initial_weights": start_weights,
                "record_store": self.out / "eval_start.zarr",
            },
        )
        self.phase(f"6/6 evaluate the fine-tuned residual: {cfg.eval_episodes} deterministic episodes")
        weights, learner_state = export_weights(
            learner_file, self.store, checkpoint, self._policy(), self.out / "finetuned.weights"
        )
        self.graph(
            "6_eval_finetuned",
            "finetune",
            {
                **eval_args,
                "learner": False,
                "learner_config": learner_file,
                "initial_weights": weights,
                "record_store": self.out / "eval_finetuned.zarr",
            },
        )
        self.timings["total"] = round(time.monotonic() - started, 1)
        return self._report(demos, learner_state)

    # ---- pieces -------------------------------------------------------------------------------------------
    def _train_base(self) -> None:
        import torch

        from coirl_ros.policies.local_bc_base import LocalBCConfig, miscalibrated, train_local_bc_base

        torch.set_num_threads(1)
        base = train_local_bc_base(
            EpisodeStore.open(self.store), LocalBCConfig(steps=self.config.base_steps), log_every=1000
        )
        if self.config.base_offset_m:
            base = miscalibrated(base, (0.0, self.config.base_offset_m, 0.0))
        base.save(self.out / "base")
        info = base.info
        print(
            f"base: {info.episodes} episodes, {info.frames} frames, loss {info.loss_first:.3f} ->"
            f" {info.loss_last:.3f} in {info.seconds:.0f} s"
        )

    def _policy(self) -> PolicyConfig:
        return load_config(resolve_config("policy_sim.yaml", "policy_config"), PolicyConfig)

    def _learner_config(self) -> Path:
        """learner_sim.yaml with the demo's store and pretraining budget, as a file both the learner node
        and the weight export read (so both build the same configuration)."""
        base = load_config(resolve_config("learner_sim.yaml", "learner_config"), LearnerConfig)
        data = base.model_dump(mode="json")
        data["store"] = str(self.store)
        data["bc"]["steps"] = self.config.bc_steps
        data["critic"]["pretrain_steps"] = self.config.critic_pretrain_steps
        path = self.out / "learner.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def _report(self, demos: list[dict], learner_state: dict[str, Any]) -> dict[str, Any]:
        cfg = self.config
        base = outcomes(self.out / "eval_base.zarr")
        start = outcomes(self.out / "eval_start.zarr")
        tuned = outcomes(self.out / "eval_finetuned.zarr")
        rows = [
            evaluation_row("base", "base only", 0, 0, base, self.timings["3_eval_base"]),
            evaluation_row(
                "start", "base + residual start (pi_BC)", 1, 0, start, self.timings["5_eval_start"]
            ),
            evaluation_row(
                "finetuned",
                "base + fine-tuned residual",
                learner_state["version"],
                learner_state["updates"],
                tuned,
                self.timings["6_eval_finetuned"],
            ),
        ]
        write_rows(self.out / "results.csv", rows)
        training = [o for o in outcomes(self.store) if o["source"] == "policy"]
        write_rows(
            self.out / "training.csv",
            training or [{"index": "", "success": "", "frames": "", "policy_version": "", "source": ""}],
        )
        png = plot(rows, training, self.out / "success.png")
        report = {
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
            "demonstrations": {"recorded": len(demos), "successful": sum(d["success"] for d in demos)},
            "evaluation": rows,
            "training_rollouts": {
                "episodes": len(training),
                "successes": sum(o["success"] for o in training),
                "env_steps": sum(o["frames"] for o in training),
            },
            "learner": learner_state,
            "seconds": self.timings,
        }
        (self.out / "report.json").write_text(json.dumps(report, indent=1))
        print_summary(report, png)
        return report


# ---- results ------------------------------------------------------------------------------------------
def outcomes(path: Path) -> list[dict[str, Any]]:
    """Per committed episode: index, success, frames, policy version, source."""
    store = EpisodeStore.open(path)
    return [
        {
            "index": m.index,
            "success": bool(m.success),
            "frames": m.num_frames,
            "policy_version": m.policy_version or 0,
            "source": m.source,
        }
        for m in store.list_episodes()
    ]


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (sensible at 0 and n, unlike the normal one)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def evaluation_row(
    phase: str, policy: str, version: int, updates: int, episodes: list[dict], seconds: float
) -> dict[str, Any]:
    k, n = sum(e["success"] for e in episodes), len(episodes)
    low, high = wilson(k, n)
    return {
        "phase": phase,
        "policy": policy,
        "weights_version": version,
        "learner_updates": updates,
        "episodes": n,
        "successes": k,
        "success_rate": round(k / n, 4) if n else 0.0,
        "ci95_low": round(low, 4),
        "ci95_high": round(high, 4),
        "wall_s": seconds,
    }


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def export_weights(
    learner_file: Path, store: Path, checkpoint: Path, policy: PolicyConfig, out: Path
) -> tuple[Path, dict[str, Any]]:
    """The learner's last checkpoint as a snapshot file policy_node can load (`initial_weights`)."""
    import torch

    from coirl_ros.learning.learner import Learner
    from coirl_ros.learning.weight_snapshot import write_snapshot

    if not checkpoint.is_file():
        raise DemoError(
            f"the learner left no checkpoint at {checkpoint}; see logs/4_finetune/learner_node.log"
        )
    torch.set_num_threads(1)
    residual = policy.residual
    assert residual is not None, "policy_sim.yaml has a residual"
    learner = Learner(
        load_config(learner_file, LearnerConfig),
        EpisodeStore.open(store),
        residual.composition,
        residual.scale,
    )
    state = learner.load_checkpoint(checkpoint)
    snapshot = learner.snapshot()
    write_snapshot(out, snapshot)
    info = {
        "version": snapshot.version,
        "updates": state.updates,
        "env_steps": state.env_steps,
        "bc_steps": state.bc_steps,
        "critic_pretrain_steps": state.critic_pretrain_steps,
        "run_id": state.run_id,
    }
    print(
        f"exported the learner's weights after {state.updates} updates / {state.env_steps} env steps -> {out}"
    )
    return out, info


def plot(evaluations: list[dict], training: list[dict], png: Path) -> Path:
    """Left: success of base, residual start and fine-tuned (95% intervals, k/n); right: the training
    rollouts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [1.2, 1.5]})
    names = ["base\nalone", "+ residual\nstart (π_BC)", "+ fine-tuned\nresidual"]
    rates = [r["success_rate"] for r in evaluations]
    errors = np.array(
        [[r["success_rate"] - r["ci95_low"], r["ci95_high"] - r["success_rate"]] for r in evaluations]
    ).T
    bars = left.bar(names, rates, yerr=errors, capsize=6, color=["#999999", "#7fb2d9", "#2a7ab9"])
    for bar, row in zip(bars, evaluations, strict=True):
        left.text(
            bar.get_x() + bar.get_width() / 2,
            0.02,
            f"{row['successes']}/{row['episodes']}",
            ha="center",
            color="white",
            fontweight="bold",
        )
    left.set_ylim(0, 1)
    left.set_ylabel("success rate (deterministic, same seeds)")
    left.set_title("evaluation (95% Wilson intervals)")
    if training:
        success = np.array([o["success"] for o in training], dtype=float)
        steps = np.cumsum([o["frames"] for o in training])
        versions = np.array([o["policy_version"] for o in training])
        right.scatter(
            steps, success, c=versions, cmap="viridis", s=18, label="rollout (colour: weights version)"
        )
        right.plot(
            steps,
            np.cumsum(success) / np.arange(1, len(success) + 1),
            color="#2a7ab9",
            label="running success rate",
        )
        right.set_xlabel("environment steps of training rollouts")
        right.set_ylim(-0.05, 1.05)
        right.legend(loc="center right", fontsize=8)
    right.set_title("exploring rollouts while the learner trains")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def compare(row: dict[str, Any], reference: dict[str, Any], name: str) -> str:
    """'better than <name> by N points' / 'worse ...' / 'equal to <name>', and whether that is significant."""
    change = row["success_rate"] - reference["success_rate"]
    overlap = row["ci95_low"] <= reference["ci95_high"] and reference["ci95_low"] <= row["ci95_high"]
    verdict = "better than" if change > 0 else "worse than" if change < 0 else "equal to"
    by = f" by {abs(change) * 100:.0f} points" if change else ""
    note = "the 95% intervals overlap: not a significant difference" if overlap else "significant at 95%"
    return f"{verdict} {name}{by} ({note})"


def print_summary(report: dict[str, Any], png: Path) -> None:
    base, start, tuned = report["evaluation"]
    learner = report["learner"]
    print("\n==== results (lift in sim, through the node graph)")
    offset = float(report.get("config", {}).get("base_offset_m", 0.0))
    if offset:
        print(
            f"The base sees the cube {offset * 100:g} cm off (a calibration error for the residual to"
            " correct; --base-offset 0 for the matched base)."
        )
    print("| policy | episodes | successes | success rate | 95% interval |")
    print("|---|---:|---:|---:|---|")
    for row in (base, start, tuned):
        print(
            f"| {row['policy']} | {row['episodes']} | {row['successes']} | {row['success_rate']:.0%} |"
            f" {row['ci95_low']:.0%}-{row['ci95_high']:.0%} |"
        )
    training = report["training_rollouts"]
    print(
        f"fine-tuned residual: weights v{learner['version']} after {learner['bc_steps']} BC steps (the"
        f" residual's start), {learner['critic_pretrain_steps']} critic pre-training steps and"
        f" {learner['updates']} online"
        f" CSIL updates on {learner['env_steps']} env steps ({training['episodes']} exploring rollouts,"
        f" {training['successes']} successful)."
    )
    print(f"The residual's start (pi_BC) is {compare(start, base, 'the base alone')}.")
    print(f"The fine-tuned residual is {compare(tuned, base, 'the base alone')},")
    print(f"  and {compare(tuned, start, 'its start')}.")
    seconds = report["seconds"]
    print(f"wall time {seconds['total'] / 60:.1f} min; phases {json.dumps(seconds)}")
    print(
        f"results: {png.parent / 'results.csv'}, {png.parent / 'training.csv'}, {png},"
        f" {png.parent / 'report.json'}"
    )


def prepare_out(out: Path) -> None:
    """A fresh output folder; an earlier demo's is cleared, anything else is refused."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise DemoError(f"{out} exists and is not an earlier demo's output; pass another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by `coirl demo`; cleared by its next run\n")


def run_sim_demo(config: DemoConfig) -> int:
    """`coirl demo`: returns the process exit code."""
    try:
        prepare_out(config.out)
        Demo(config).run()
    except DemoError as err:
        print(f"coirl demo: {err}", file=sys.stderr)
        return 1
    return 0
