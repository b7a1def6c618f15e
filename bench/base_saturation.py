"""Does the base drive the failures? Base saturation, residual size and the object, per evaluation episode.

A success rate says how often the composed policy fails, not why. This replays a finished
`coirl bench learn` run's acting policy (its `learner.pt`) on the run's evaluation seeds and records
per episode what separates the failures from the successes:

- `base_saturated`: share of steps where the base's translation command sits at its bound
  (|a_base| >= 0.98 in x, y or z): a base driving off on its own;
- `residual_mean`: mean |residual| over the translation dimensions, in action units (what the
  residual does against it; its reach is the residual scale);
- `object_max_z` / `object_end`: the first object's highest point and final position (the task's
  object state starts with it), which tells a missed grasp (never lifted) from a dropped or thrown one.

Writes `base_saturation_<episodes>.csv` in the run directory (one row per episode) and prints the
means of each column over successes and over failures.

    python bench/base_saturation.py --run runs/mug_d200 --task mug_cleanup --demos 200 \\
        --learner-config docs/results/threading_d200_off4cm/learner_csil_ens5_beta1.yaml --episodes 100
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch
from bench_common import write_csv  # bench/ is on sys.path when run as a script
from critic_guided_eval import add_run_arguments, load_run

from coirl_ros.experiment import EVAL_SEED0
from coirl_ros.policies import composition

SATURATED = 0.98  # |a_base| at or above this in a translation dimension counts as at the bound
TRANSLATION = slice(0, 3)  # ee_delta actions: x, y, z first


class EpisodeTrace:
    """Collects, step by step, what the composed policy proposed and where the object went."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.base: list[np.ndarray] = []
        self.residual: list[np.ndarray] = []
        self.object: list[np.ndarray] = []

    def summary(self) -> dict[str, Any]:
        base, residual = np.array(self.base), np.array(self.residual)
        obj = np.array(self.object)
        return {
            "base_saturated": round(float(np.mean(np.any(np.abs(base[:, TRANSLATION]) >= SATURATED, -1))), 4),
            "residual_mean": round(float(np.mean(np.abs(residual[:, TRANSLATION]))), 4),
            "object_max_z": round(float(obj[:, 2].max()), 4),
            "object_end": np.round(obj[-1, :3], 3).tolist(),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(ap)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    learner, actor, run_dir, env_steps = load_run(args)

    trace = EpisodeTrace()
    act = composition.ComposedPolicy.act

    def traced_act(self: composition.ComposedPolicy, obs: dict[str, np.ndarray]) -> Any:
        action, base, residual = act(self, obs)
        trace.base.append(base)
        trace.residual.append(residual)
        trace.object.append(np.asarray(obs["object"], np.float64))
        return action, base, residual

    composition.ComposedPolicy.act = traced_act  # this process only: the Actor's policy is traced
    rows = []
    for k in range(args.episodes):
        trace.reset()
        success, steps = actor.run_episode(EVAL_SEED0 + k, learner.acting_policy, explore=False)
        rows.append({"seed": EVAL_SEED0 + k, "success": success, "steps": steps, **trace.summary()})
        print(f"{EVAL_SEED0 + k}: {'ok ' if success else 'FAIL'} {rows[-1]}", flush=True)
    actor.close()

    print(f"\n{run_dir} at {env_steps} env steps, {args.episodes} episodes")
    write_csv(rows, run_dir / f"base_saturation_{args.episodes}.csv")
    print("| episodes | n | steps | base saturated | mean abs residual | object max z |")
    print("|---|---:|---:|---:|---:|---:|")
    columns = ("steps", "base_saturated", "residual_mean", "object_max_z")
    for name, wanted in (("successes", True), ("failures", False)):
        if group := [r for r in rows if r["success"] == wanted]:
            mean = {key: np.mean([r[key] for r in group]) for key in columns}
            print(
                f"| {name} | {len(group)} | {mean['steps']:.0f} | {mean['base_saturated']:.1%}"
                f" | {mean['residual_mean']:.3f} | {mean['object_max_z']:.3f} |"
            )


if __name__ == "__main__":
    main()
