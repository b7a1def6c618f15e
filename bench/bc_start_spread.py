"""How much the residual's start (π_BC, before any online update) varies with its training seed.

Every learning-curve claim compares a run with its own start, so the spread of that start across
training seeds (π_BC's initialisation and batches; same demonstrations, same base) is the noise
floor any online gain must clear. This trains `--seeds` π_BC the way `coirl bench learn` does
(`run_one`'s learner, method bc, the same cached demonstrations and base under `--out`), evaluates
each on the same deterministic evaluation seeds, and with `--ensemble` also the mean of their modes
(one policy acting with the average residual).

`--residual-demos` trains π_BC on more (or fewer) scripted demonstrations than the base saw
(expert seeds 0..N-1, so they include the base's); `--residual-demo-noise` gives π_BC's demonstrations
a noisier expert (the base keeps the default's: DART-style demonstrations that show corrections);
`--bc-steps` overrides bc.steps. A learner config with `bc.ensemble: K` measures the distilled π_BC
(each seed then distils its own K fits).

Writes `--out`/<task>/bc_start_spread_base<base steps>_d<demos>_b<bc steps>[_ens<K>][_noise<mm>mm].csv
(one row per policy) and prints a table. One torch thread, about 40 s per seed at 20 demonstrations
and 100 evaluation episodes on this 2-core machine.

    python bench/bc_start_spread.py --seeds 5 --ensemble
    python bench/bc_start_spread.py --residual-demos 200 --bc-steps 40000 --seeds 1
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from bench_common import write_csv

from coirl_ros.configs import LearnerConfig, load_config
from coirl_ros.control.demo_base import demo_base_filler
from coirl_ros.data import EpisodeStore
from coirl_ros.experiment import (
    Actor,
    ExperimentConfig,
    copy_episodes,
    demo_noise_tag,
    prepare_base,
    prepare_demos,
)
from coirl_ros.learning.learner import Learner
from coirl_ros.learning.residual_policy import ResidualPolicy
from coirl_ros.policies.local_bc_base import LocalBCConfig, miscalibrated
from coirl_ros.sim.demos import EXPERT_NOISE_M


class MeanResidual:
    """Acts with the mean of several residual policies' modes (what `Actor` calls `act` on)."""

    def __init__(self, policies: list[ResidualPolicy]) -> None:
        self.policies = policies

    def act(self, x: np.ndarray, deterministic: bool = True, temperature: float = 1.0) -> np.ndarray:
        return np.mean([p.act(x, deterministic=True) for p in self.policies], axis=0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="lift")
    p.add_argument("--demos", type=int, default=20, help="demonstrations the base is trained on")
    p.add_argument("--residual-demos", type=int, default=None, help="π_BC's demonstrations (default --demos)")
    p.add_argument(
        "--residual-demo-noise",
        type=float,
        default=EXPERT_NOISE_M,
        help="std (m) of the expert's TCP target in π_BC's demonstrations",
    )
    p.add_argument(
        "--base-offset", type=float, default=0.04, help="the base sees the object this far off in +y"
    )
    p.add_argument("--base-steps", type=int, default=3000, help="the base's training steps, as bench learn")
    p.add_argument("--seeds", type=int, default=5, help="π_BC training seeds first-seed..")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--bc-steps", type=int, default=None, help="override bc.steps")
    p.add_argument("--ensemble", action="store_true", help="also evaluate the mean of the seeds' modes")
    p.add_argument("--episodes", type=int, default=100, help="deterministic evaluation episodes per policy")
    p.add_argument("--learner-config", type=Path, default=Path("bench/learner_cpu.yaml"))
    p.add_argument("--out", type=Path, default=Path("runs/bench_learn"), help="as coirl bench learn --out")
    args = p.parse_args()

    torch.set_num_threads(1)
    learner_cfg = load_config(args.learner_config, LearnerConfig)
    if args.bc_steps:
        learner_cfg = learner_cfg.model_copy(
            update={"bc": learner_cfg.bc.model_copy(update={"steps": args.bc_steps})}
        )
    config = ExperimentConfig(
        task=args.task,
        demos=args.demos,
        base=LocalBCConfig(steps=args.base_steps),
        base_offset_m=args.base_offset,
        learner=learner_cfg,
        out_dir=args.out,
    )
    base = prepare_base(config, prepare_demos(config))
    if args.base_offset:
        base = miscalibrated(base, (0.0, args.base_offset, 0.0))
    residual_demos = args.residual_demos or args.demos
    noise = args.residual_demo_noise
    noise_tag = demo_noise_tag(noise)
    demos = prepare_demos(replace(config, demos=residual_demos, demo_noise_m=noise))
    actor = Actor(config, base)
    rows, policies = [], []

    def record(seed: str, policy: ResidualPolicy | MeanResidual, seconds: float) -> None:
        rate = actor.evaluate(policy, args.episodes)
        rows.append({
            "task": args.task, "base_demos": args.demos, "base_steps": args.base_steps,
            "residual_demos": residual_demos, "demo_noise_m": noise,
            "base_offset_m": args.base_offset,
            "bc_steps": learner_cfg.bc.steps, "bc_ensemble": learner_cfg.bc.ensemble, "seed": seed,
            "success": round(rate, 4), "episodes": args.episodes, "seconds": round(seconds, 1),
        })  # fmt: skip
        print(f"| {seed} | {rate:.0%} |", flush=True)

    print(
        f"{args.task}: base on {args.demos} demos, {args.base_offset * 100:g} cm off;"
        f" π_BC on {residual_demos} (expert noise {noise * 1000:g} mm)"
    )
    print("| π_BC seed | success |\n|---|---:|")
    try:
        base_start = time.perf_counter()
        rate = actor.evaluate(None, args.episodes)
        print(f"| base alone | {rate:.0%} |", flush=True)
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            start = time.perf_counter()
            name = f"bc_start_d{residual_demos}{noise_tag}_b{learner_cfg.bc.steps}_s{seed}"
            run_dir = args.out / args.task / name
            shutil.rmtree(run_dir, ignore_errors=True)  # a fresh copy: the learner records nothing here
            store = EpisodeStore.create(run_dir / "episodes.zarr", demos.spec)
            copy_episodes(demos, store)
            cfg = learner_cfg.model_copy(update={"method": "bc", "seed": seed})
            learner = Learner(
                cfg, store, "residual", config.scale, on_load=demo_base_filler(base, config.requery_every)
            )
            torch.manual_seed(seed)  # as run_one
            learner.pretrain()
            policy = learner.acting_policy
            assert isinstance(policy, ResidualPolicy)
            policies.append(policy)
            record(str(seed), policy, time.perf_counter() - start)
        if args.ensemble and len(policies) > 1:
            record(f"mean of {len(policies)}", MeanResidual(policies), 0.0)
    finally:
        actor.close()
    singles = np.array([r["success"] for r in rows if r["seed"].isdigit()])
    print(
        f"single seeds: mean {singles.mean():.1%}, std {singles.std(ddof=1) if len(singles) > 1 else 0:.1%},"
        f" {singles.min():.0%}-{singles.max():.0%}; {args.episodes} episodes each"
        f" ({time.perf_counter() - base_start:.0f} s)"
    )
    variant = (f"_ens{learner_cfg.bc.ensemble}" if learner_cfg.bc.ensemble > 1 else "") + noise_tag
    name = f"bc_start_spread_base{args.base_steps}_d{residual_demos}_b{learner_cfg.bc.steps}{variant}.csv"
    write_csv(rows, args.out / args.task / name)


if __name__ == "__main__":
    main()
