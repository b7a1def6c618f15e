"""Does π_BC improve with operator takeovers (HG-DAgger) where more demonstrations did not?

Round 0 trains π_BC on the demonstrations (as `bench/bc_start_spread.py` does) and evaluates it.
Each further round lets that π_BC act on `--collect` fresh seeds with the simulated operator
watching (`coirl_ros.takeovers`: it takes over when the base saturates, or at `--deadline`), adds
the finished takeovers to the demonstrations as "takeover" episodes, retrains π_BC from scratch
with the same seed on everything, and evaluates it on the same evaluation seeds.

`--start-from` a previous run's directory goes on where it stopped: its takeovers are copied in, and
round and collection seeds continue from its last round (whose π_BC is retrained and evaluated
again, a check that the same data and seed give the same policy).

Writes under `--out`/<task>/takeovers_<trigger>_s<seed>/ (`--start-from`: <that name>_more/; a
`--scale` other than 0.5 adds `_scale<x>` to either, a `--takeover-weight` other than 1
`_w<k>`, a `--tag` `_<tag>`):
`rounds.csv` (one row per round: success, takeover episodes and frames so far) and `collection.csv`
(one row per collection episode: when and why the operator took over, whether the expert finished).
One torch thread; on this 2-core machine a mug_cleanup round at 200 demonstrations takes about 10
minutes (training and 100 evaluation episodes 7-8, collecting 100 episodes 2-3).

    python bench/takeover_rounds.py --task mug_cleanup --demos 200 --base-steps 5000 --rounds 2 \\
        --collect 100 --learner-config docs/results/threading_d200_off4cm/learner_csil_ens5_beta1.yaml \\
        --out runs/mug_d200
"""

from __future__ import annotations

import argparse
import collections
import shutil
import time
from pathlib import Path

import torch
from bench_common import read_csv, write_csv  # bench/ is on sys.path when run as a script

from coirl_ros.configs import LearnerConfig, load_config
from coirl_ros.control.demo_base import demo_base_filler
from coirl_ros.data import EpisodeStore
from coirl_ros.experiment import Actor, ExperimentConfig, copy_episodes, prepare_base, prepare_demos
from coirl_ros.learning.learner import Learner
from coirl_ros.learning.residual_policy import ResidualPolicy
from coirl_ros.policies.local_bc_base import LocalBCConfig, miscalibrated
from coirl_ros.takeovers import TakeoverTrigger, TakeoverWatch, run_with_takeover

COLLECT_SEED0 = 30000  # collection seeds: clear of the demonstrations' (0..) and the evaluation's (10000..)


def train_bc(
    learner_cfg: LearnerConfig,
    config: ExperimentConfig,
    base,
    stores: list[EpisodeStore],
    run_dir: Path,
    seed: int,
    repeats: list[int] | None = None,
) -> ResidualPolicy:
    """π_BC trained from scratch (seed `seed`) on every episode of `stores`, in a fresh `run_dir`;
    `repeats[i]` copies of store i's episodes (default one each), which weights them that much more
    in π_BC's uniformly drawn batches."""
    shutil.rmtree(run_dir, ignore_errors=True)
    store = EpisodeStore.create(run_dir / "episodes.zarr", stores[0].spec)
    for src, times in zip(stores, repeats or [1] * len(stores), strict=True):
        for _ in range(times):
            copy_episodes(src, store)
    cfg = learner_cfg.model_copy(update={"method": "bc", "seed": seed})
    learner = Learner(
        cfg, store, "residual", config.scale, on_load=demo_base_filler(base, config.requery_every)
    )
    torch.manual_seed(seed)  # as run_one
    learner.pretrain()
    policy = learner.acting_policy
    assert isinstance(policy, ResidualPolicy)
    return policy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="mug_cleanup")
    p.add_argument("--demos", type=int, default=200, help="demonstrations (base and π_BC)")
    p.add_argument(
        "--base-offset", type=float, default=0.04, help="the base sees the object this far off in +y"
    )
    p.add_argument("--base-steps", type=int, default=5000, help="the base's training steps, as bench learn")
    p.add_argument("--seed", type=int, default=0, help="π_BC's training seed (every round)")
    p.add_argument("--rounds", type=int, default=1, help="collection rounds after round 0")
    p.add_argument("--collect", type=int, default=100, help="episodes the operator watches per round")
    p.add_argument("--saturated-steps", type=int, default=TakeoverTrigger.saturated_steps)
    p.add_argument("--deadline", type=int, default=None, help="take over from a policy not done by this step")
    p.add_argument("--expert-noise", type=float, default=0.0, help="std (m) of the operator's TCP target")
    p.add_argument("--episodes", type=int, default=100, help="deterministic evaluation episodes per round")
    p.add_argument(
        "--scale", type=float, default=ExperimentConfig.scale,
        help="residual scale: at 0.5 a base at its bound can be slowed, not turned back",
    )  # fmt: skip
    p.add_argument("--start-from", type=Path, default=None, help="a previous run's directory to go on from")
    p.add_argument(
        "--takeover-weight", type=int, default=1,
        help="π_BC sees each takeover episode this many times (weighting the corrections against the"
        " far more numerous demonstration frames, as IWR balances interventions)",
    )  # fmt: skip
    p.add_argument(
        "--tag", default="", help="appended to the run directory's name: probes of one run side by side"
    )
    p.add_argument("--learner-config", type=Path, default=Path("bench/learner_cpu.yaml"))
    p.add_argument("--out", type=Path, default=Path("runs/bench_learn"), help="as coirl bench learn --out")
    args = p.parse_args()
    if args.rounds < 0 or args.collect < 1 or args.episodes < 1 or args.takeover_weight < 1:
        p.error("--rounds must be >= 0, --collect, --episodes and --takeover-weight >= 1")

    torch.set_num_threads(1)
    learner_cfg = load_config(args.learner_config, LearnerConfig)
    config = ExperimentConfig(
        task=args.task,
        demos=args.demos,
        base=LocalBCConfig(steps=args.base_steps),
        base_offset_m=args.base_offset,
        learner=learner_cfg,
        out_dir=args.out,
        scale=args.scale,
    )
    demos = prepare_demos(config)
    base = prepare_base(config, demos)
    if args.base_offset:
        base = miscalibrated(base, (0.0, args.base_offset, 0.0))
    trigger = TakeoverTrigger(saturated_steps=args.saturated_steps, deadline=args.deadline)
    tag = f"sat{args.saturated_steps}" + (f"_dl{args.deadline}" if args.deadline is not None else "")
    variant_tag = f"_scale{args.scale:g}" if args.scale != ExperimentConfig.scale else ""
    variant_tag += f"_w{args.takeover_weight}" if args.takeover_weight != 1 else ""
    variant_tag += f"_{args.tag}" if args.tag else ""
    out = args.out / args.task / f"takeovers_{tag}{variant_tag}_s{args.seed}"
    first_round = 0
    if args.start_from is not None:
        previous = read_csv(args.start_from / "rounds.csv")
        first_round = int(previous[-1]["round"])
        out = args.start_from.with_name(args.start_from.name + "_more" + variant_tag)
    shutil.rmtree(out, ignore_errors=True)
    takeovers = EpisodeStore.create(out / "takeovers.zarr", demos.spec)
    if args.start_from is not None:
        copy_episodes(EpisodeStore.open(args.start_from / "takeovers.zarr"), takeovers)
    actor = Actor(config, base)
    watch = TakeoverWatch(trigger)
    rounds, collection = [], []
    print(f"{args.task}: {args.demos} demos, base {args.base_offset * 100:g} cm off; trigger {trigger}")
    print(
        "| round | takeover episodes | takeover frames | π_BC success | minutes |\n|---:|---:|---:|---:|---:|"
    )
    try:
        for r in range(first_round, first_round + args.rounds + 1):
            start = time.perf_counter()
            policy = train_bc(
                learner_cfg, config, base, [demos, takeovers], out / f"round{r}", args.seed,
                repeats=[1, args.takeover_weight],
            )  # fmt: skip
            rate = actor.evaluate(policy, args.episodes)
            n_takeovers = len(takeovers.episode_indices())
            frames = sum(takeovers.read_meta(i).num_frames for i in takeovers.episode_indices())
            rounds.append({
                "task": args.task, "demos": args.demos, "seed": args.seed, "round": r,
                "takeover_episodes": n_takeovers, "takeover_frames": frames, "success": round(rate, 4),
                "episodes": args.episodes, "trigger": tag, "expert_noise_m": args.expert_noise,
                "scale": args.scale, "takeover_weight": args.takeover_weight,
                "seconds": round(time.perf_counter() - start, 1),
            })  # fmt: skip
            write_csv(rounds, out / "rounds.csv")
            print(
                f"| {r} | {n_takeovers} | {frames} | {rate:.0%} | {rounds[-1]['seconds'] / 60:.1f} |",
                flush=True,
            )
            if r == first_round + args.rounds:
                break
            for k in range(args.collect):
                seed = COLLECT_SEED0 + r * args.collect + k
                outcome = run_with_takeover(actor, seed, policy, watch, takeovers, args.expert_noise)
                collection.append({"round": r, **vars(outcome)})
            reasons = collections.Counter(row["reason"] for row in collection if row["round"] == r)
            done = [row for row in collection if row["round"] == r]
            print(
                f"  collection {r}: policy alone {sum(x['policy_success'] for x in done)}/{len(done)},"
                f" takeovers {dict(reasons)}, expert finished {sum(x['expert_success'] for x in done)},"
                f" {sum(x['env_steps'] for x in done)} env steps",
                flush=True,
            )
            write_csv(collection, out / "collection.csv")
    finally:
        actor.close()


if __name__ == "__main__":
    main()
