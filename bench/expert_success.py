"""Success rate of every task's scripted expert over seeded episodes (the issue asks for >= 90%).

    .venv/bin/python bench/expert_success.py                 # all tasks, seeds 0..99
    .venv/bin/python bench/expert_success.py --tasks square --episodes 20
    .venv/bin/python bench/expert_success.py --action-mode ee_delta --episodes 30

Prints a markdown table (successes, rate, mean episode length, wall time) and writes a CSV
(default bench/results/expert_success.csv). Expert noise 0.002 m, state only: exactly what
`coirl demos generate` runs. `--action-mode ee_delta` measures the expert in the normalised TCP
delta mode the local BC base and residual act in (CSV default then expert_success_ee_delta.csv).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

from bench_common import write_csv  # bench/ is on sys.path when run as a script

from coirl_ros.sim.env import ActionMode, EnvConfig, ManipulationEnv
from coirl_ros.sim.expert import WaypointExpert, run_episode
from coirl_ros.sim.tasks import available_tasks, expert_plan, make_task


def evaluate(
    task: str, episodes: int, noise: float, action_mode: ActionMode = "joint"
) -> dict[str, float | int | str]:
    env = ManipulationEnv(make_task(task), EnvConfig(action_mode=action_mode))
    expert = WaypointExpert(env, expert_plan(task), noise=noise, seed=0)
    successes, steps = 0, 0
    start = time.perf_counter()
    for seed in range(episodes):
        successes += run_episode(env, expert, seed)
        steps += env._steps
    env.close()
    return {
        "task": task,
        "action_mode": action_mode,
        "episodes": episodes,
        "successes": successes,
        "success_rate": successes / episodes,
        "mean_steps": steps / episodes,
        "horizon": env.horizon,
        "wall_s": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="*", default=None, help="default: every available task")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--noise", type=float, default=0.002)
    parser.add_argument("--action-mode", choices=["joint", "ee_delta"], default="joint")
    parser.add_argument("--csv", type=Path, default=None, help="default: bench/results/expert_success*.csv")
    args = parser.parse_args()
    suffix = "" if args.action_mode == "joint" else f"_{args.action_mode}"
    csv_path = args.csv or Path(f"bench/results/expert_success{suffix}.csv")
    rows = []
    print("| task | successes | rate | mean steps / horizon | wall s |\n|---|---:|---:|---:|---:|")
    for task in args.tasks or available_tasks():
        row = evaluate(task, args.episodes, args.noise, args.action_mode)
        rows.append(row)
        print(
            f"| {task} | {row['successes']}/{row['episodes']} | {row['success_rate']:.0%} |"
            f" {row['mean_steps']:.0f} / {row['horizon']} | {row['wall_s']:.0f} |",
            flush=True,
        )
    write_csv(rows, csv_path)


if __name__ == "__main__":
    main()
