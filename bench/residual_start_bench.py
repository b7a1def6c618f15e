"""What the residual's start (the learner's pi_BC, before any online update) adds to the base, in process.

For each draw of demonstrations (the scripted expert from seed `draw`, `--demos` episodes, ee_delta
actions) the local chunked BC base is trained on them; for each base offset it is deployed seeing the
object that far off in +y (`local_bc_base.miscalibrated`: 0 is the matched base, 0.04 is what
`make demo` uses), the learner's pi_BC is trained on the same demonstrations with that base's
proposals filled in (the learner node's path), and both are evaluated on the same deterministic
evaluation seeds (`Actor.evaluate`). Also printed: how far each is from the demonstrated actions on
the demonstrations themselves (mean |a - a_demo|, normalised units), which says whether the residual
fits what it was shown.

Writes one CSV row per (draw, offset) to `--out`/residual_start.csv and prints a table. One torch
thread, about 100 s per row at 60 episodes on this 2-core machine.

    python bench/residual_start_bench.py --draws 0 100 200 --offsets 0 --episodes 60
    python bench/residual_start_bench.py --draws 0 --offsets 0.02 0.04 --episodes 40
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch

from coirl_ros.configs import LearnerConfig, load_config
from coirl_ros.constants import ACTION, OBS_ENV_STATE, OBS_STATE
from coirl_ros.control.demo_base import demo_base_filler, episode_observations
from coirl_ros.data import EpisodeStore
from coirl_ros.experiment import Actor, ExperimentConfig
from coirl_ros.graph import resolve_config
from coirl_ros.learning.learner import Learner
from coirl_ros.learning.residual_policy import ResidualPolicy
from coirl_ros.policies.composition import ChunkedBaseRunner, base_actions_along
from coirl_ros.policies.local_bc_base import LocalBCBase, LocalBCConfig, miscalibrated, train_local_bc_base
from coirl_ros.sim.demos import generate_demos

FIELDS = (
    "task", "demos", "draw", "offset_m", "episodes", "base_success", "start_success", "base_demo_error",
    "start_demo_error", "seconds",
)  # fmt: skip


def demo_errors(
    store: EpisodeStore, base: LocalBCBase, policy: ResidualPolicy, requery: int, scale: float
) -> tuple[float, float]:
    """Mean |a - a_demo| over the demonstrations' frames: base alone, and base + the residual's mode."""
    base_err, composed_err = [], []
    for index in store.episode_indices():
        episode = store.read_episode(index)
        proposals = base_actions_along(ChunkedBaseRunner(base, requery), episode_observations(episode))
        for t, a_base in enumerate(proposals):
            x = np.concatenate([episode.data[OBS_STATE][t], episode.data[OBS_ENV_STATE][t], a_base])
            u = policy.act(x.astype(np.float32), deterministic=True)
            demo = episode.data[ACTION][t]
            base_err.append(np.abs(demo - a_base).mean())
            # u is the residual's mode, already squashed: the executed action is clip(a_base + scale u).
            composed_err.append(np.abs(demo - np.clip(a_base + scale * u, -1.0, 1.0)).mean())
    return float(np.mean(base_err)), float(np.mean(composed_err))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="lift")
    p.add_argument("--demos", type=int, default=10)
    p.add_argument("--draws", type=int, nargs="+", default=[0, 100, 200], help="expert seeds of each draw")
    p.add_argument("--offsets", type=float, nargs="+", default=[0.0, 0.04], help="base offsets (metres, +y)")
    p.add_argument("--episodes", type=int, default=60, help="deterministic evaluation episodes per policy")
    p.add_argument("--base-steps", type=int, default=3000, help="as make demo")
    p.add_argument("--bc-steps", type=int, default=4000, help="the learner's pi_BC steps, as make demo")
    p.add_argument("--scale", type=float, default=0.5)
    p.add_argument("--requery", type=int, default=10)
    p.add_argument("--out", type=Path, default=Path("runs/residual_start_bench"))
    args = p.parse_args()

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    csv_path = args.out / "residual_start.csv"
    learner_cfg = load_config(resolve_config("learner_sim.yaml", "learner_config"), LearnerConfig)
    experiment = ExperimentConfig(task=args.task, composition="residual", scale=args.scale)
    print("| draw | offset | base | start | demo error base -> start |")
    print("|---:|---:|---:|---:|---|")
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for draw in args.draws:
            root = args.out / f"{args.task}_d{args.demos}_draw{draw}.zarr"
            if not root.exists():
                generate_demos(args.task, args.demos, root, action_mode="ee_delta", progress=False, seed=draw)
            store = EpisodeStore.open(root)
            torch.manual_seed(0)
            trained = train_local_bc_base(store, LocalBCConfig(steps=args.base_steps))
            for offset in args.offsets:
                start = time.perf_counter()
                base = miscalibrated(trained, (0.0, offset, 0.0)) if offset else trained
                bc = learner_cfg.bc.model_copy(update={"steps": args.bc_steps})
                cfg = learner_cfg.model_copy(update={"method": "bc", "store": str(root), "bc": bc})
                torch.manual_seed(0)
                learner = Learner(
                    cfg, store, "residual", args.scale, on_load=demo_base_filler(base, args.requery)
                )
                learner.pretrain()
                policy = learner.acting_policy
                assert isinstance(policy, ResidualPolicy)
                err_base, err_start = demo_errors(store, base, policy, args.requery, args.scale)
                actor = Actor(experiment, base)
                try:
                    base_rate = actor.evaluate(None, args.episodes)
                    start_rate = actor.evaluate(policy, args.episodes)
                finally:
                    actor.close()
                row = {
                    "task": args.task, "demos": args.demos, "draw": draw, "offset_m": offset,
                    "episodes": args.episodes, "base_success": round(base_rate, 4),
                    "start_success": round(start_rate, 4), "base_demo_error": round(err_base, 4),
                    "start_demo_error": round(err_start, 4), "seconds": round(time.perf_counter() - start, 1),
                }  # fmt: skip
                writer.writerow(row)
                f.flush()
                print(
                    f"| {draw} | {offset:g} m | {base_rate:.0%} | {start_rate:.0%} |"
                    f" {err_base:.3f} -> {err_start:.3f} |",
                    flush=True,
                )
    print(f"{args.episodes} evaluation episodes per policy; rows in {csv_path}")


if __name__ == "__main__":
    main()
