"""Where does the policy's mean action fail, and do its exploring samples succeed there?

The online phase learns from exploring rollouts (samples at temperature κ around the actor's mean)
and is evaluated with the mean alone. If the mean fails in states where exploration never succeeds
either, the rollouts carry no sign of how to fix those failures, whatever the critic; if exploration
often succeeds there, the signal exists and it is the learner that does not take it up.

For each of `--episodes` evaluation seeds (the learning curves' seeds, 10000 on): one episode acting
with the mean, `--samples` episodes with one sample per step at `--temperature`, and the cube's start
(x, y, yaw modulo 90°: the cube is symmetric). Prints

- the success of the mean and of the samples;
- for the seeds the mean fails and those it solves: the samples' success rate there, and the share
  of seeds where at least one sample succeeds;
- the mean's success by the cube's start y, in thirds of the range (the axis of the base's offset).

and writes `failure_seeds_t<κ>[_bc].csv` (one row per seed) in the run directory.

    python bench/failure_seeds.py --run runs/cql/frozen --proposer bc --episodes 200 --samples 5 \
        --learner-config docs/results/lift_d20_off4cm/learner_cql_frozen_actor.yaml
"""

from __future__ import annotations

import argparse
import itertools
import math
import time

import numpy as np
import torch
from bench_common import write_csv  # bench/ is on sys.path when run as a script
from critic_guided_eval import CriticChoice, add_run_arguments, load_run

from coirl_ros.experiment import EVAL_SEED0, Actor
from coirl_ros.sim.task import yaw_of


def cube_start(actor: Actor, seed: int) -> tuple[float, float, float]:
    """The object's start (x, y, yaw mod 90° in degrees) in the episode `seed` begins with."""
    obs, _ = actor.env.reset(seed=seed)
    pose = obs["object"]
    return float(pose[0]), float(pose[1]), math.degrees(yaw_of(pose[3:7])) % 90.0


def summarise(rows: list[dict]) -> list[str]:
    """The printed lines (see the module docstring) for per-seed `rows`."""
    mode = np.array([r["mode_success"] for r in rows], bool)
    samples = np.array([r["sample_successes"] for r in rows], float)
    k = rows[0]["samples"]
    lines = [f"mean action {mode.mean():.1%}, one sample {samples.mean() / k:.1%} ({len(rows)} seeds)"]
    for name, where in (("fails", ~mode), ("solves", mode)):
        if where.any():
            lines.append(
                f"seeds the mean {name} ({where.sum()}): samples succeed {samples[where].mean() / k:.1%},"
                f" at least one of {k} on {(samples[where] > 0).mean():.0%} of them"
            )
    y = np.array([r["cube_y"] for r in rows])
    for lo, hi in itertools.pairwise(np.quantile(y, [0.0, 1 / 3, 2 / 3, 1.0])):
        inside = (y >= lo) & (y <= hi)
        lines.append(f"cube y {lo:+.3f}..{hi:+.3f} m: mean {mode[inside].mean():.0%} of {inside.sum()}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(ap)
    ap.add_argument("--samples", type=int, default=5, help="sampled episodes per seed")
    ap.add_argument("--temperature", type=float, default=0.3)
    ap.add_argument("--proposer", choices=("actor", "bc"), default="actor", help="the trained actor or π_BC")
    args = ap.parse_args()
    if args.samples < 1 or args.episodes < 3:
        ap.error("--samples must be >= 1 and --episodes >= 3")
    torch.set_num_threads(1)
    torch.manual_seed(0)  # the samples' noise: reruns draw the same
    learner, actor, run_dir, env_steps = load_run(args)
    mode = CriticChoice(learner, "mode", 1, args.temperature, proposer=args.proposer)
    sample = CriticChoice(learner, "sample", 1, args.temperature, proposer=args.proposer)
    rows = []
    start = time.perf_counter()
    try:
        for i in range(args.episodes):
            seed = EVAL_SEED0 + i
            x, y, yaw = cube_start(actor, seed)
            solved = actor.run_episode(seed, mode, explore=False)[0]
            wins = sum(actor.run_episode(seed, sample, explore=False)[0] for _ in range(args.samples))
            rows.append({
                "seed": seed, "mode_success": int(solved), "sample_successes": wins, "samples": args.samples,
                "temperature": args.temperature, "proposer": args.proposer, "env_steps": env_steps,
                "cube_x": round(x, 4), "cube_y": round(y, 4), "cube_yaw_mod90": round(yaw, 1),
            })  # fmt: skip
            if (i + 1) % 20 == 0:
                print(f"{i + 1}/{args.episodes} seeds ({time.perf_counter() - start:.0f} s)", flush=True)
    finally:
        actor.close()
    print("\n".join(summarise(rows)))
    out = run_dir / f"failure_seeds_t{args.temperature:g}{'_bc' if args.proposer == 'bc' else ''}.csv"
    write_csv(rows, out)


if __name__ == "__main__":
    main()
