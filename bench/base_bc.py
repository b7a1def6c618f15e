"""Success of the local chunked BC base (the CPU stand-in for pi0.5) per task and demo count.

For each task: record max(--demos) scripted demos in ee_delta mode (seeds 0..N-1) into a temporary
episode store, train `LocalBCBase` on the first n of them for every n in --demos (and every
training seed in --seeds), and play it with `ChunkedBaseRunner(base, requery_every=k)` on --eval
held-out seeds starting at 10000. The fine-tuning experiments want tasks where this base is
decent but imperfect.

    .venv/bin/python bench/base_bc.py                                  # all tasks, 10 25 50 demos
    .venv/bin/python bench/base_bc.py --tasks lift square --demos 10 25 --eval 50 --requery 5

Prints a markdown table (success, eval episodes, train and eval seconds) and writes a CSV
(default bench/results/base_bc.csv).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import torch
from bench_common import write_csv  # bench/ is on sys.path when run as a script

from coirl_ros.data import EpisodeStore
from coirl_ros.policies.composition import ChunkedBaseRunner
from coirl_ros.policies.local_bc_base import LocalBCBase, LocalBCConfig, train_local_bc_base
from coirl_ros.sim.demos import generate_demos
from coirl_ros.sim.env import EnvConfig, ManipulationEnv
from coirl_ros.sim.tasks import available_tasks, make_task

EVAL_SEED0 = 10_000  # far from the demo seeds 0..N-1
torch.set_num_threads(1)  # small MLP: threads only fight the simulator for the cores


def evaluate(task: str, base: LocalBCBase, episodes: int, requery_every: int) -> tuple[int, float, int]:
    """(successes, mean episode length, horizon) of the base alone on held-out seeds."""
    env = ManipulationEnv(make_task(task), EnvConfig(action_mode="ee_delta"))
    runner = ChunkedBaseRunner(base, requery_every=requery_every)
    wins, steps = 0, 0
    try:
        for k in range(episodes):
            obs, info = env.reset(seed=EVAL_SEED0 + k)
            runner.reset()
            for _ in range(env.horizon):
                obs, _, terminated, truncated, info = env.step(runner.base_action(obs))
                steps += 1
                if terminated or truncated:
                    break
            wins += bool(info["success"])
    finally:
        env.close()
    return wins, steps / max(episodes, 1), env.horizon


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="*", default=None, help="default: every available task")
    parser.add_argument("--demos", nargs="*", type=int, default=[10, 25, 50])
    parser.add_argument("--eval", type=int, default=50, help="evaluation episodes per setting")
    parser.add_argument("--steps", type=int, default=LocalBCConfig.steps, help="Adam steps")
    parser.add_argument("--chunk", type=int, default=LocalBCConfig.chunk_size, help="chunk size H")
    parser.add_argument("--requery", type=int, default=5, help="re-query the base every k steps (k <= H)")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0], help="training seeds")
    parser.add_argument("--csv", type=Path, default=Path("bench/results/base_bc.csv"))
    args = parser.parse_args()
    rows = []
    header = "| task | demos | seed | success | eval episodes | mean steps / horizon | train s | eval s |"
    print(f"{header}\n|---|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    for task in args.tasks or available_tasks():
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "demos.zarr"
            start = time.perf_counter()
            report = generate_demos(task, max(args.demos), root, progress=False, action_mode="ee_delta")
            print(f"<!-- {report} in {time.perf_counter() - start:.0f} s -->", flush=True)
            store = EpisodeStore.open(root)
            indices = store.episode_indices()
            for n in args.demos:
                for seed in args.seeds:
                    config = LocalBCConfig(chunk_size=args.chunk, steps=args.steps, seed=seed)
                    start = time.perf_counter()
                    base = train_local_bc_base(store, config, episodes=indices[:n])
                    train_s = time.perf_counter() - start
                    start = time.perf_counter()
                    wins, mean_steps, horizon = evaluate(task, base, args.eval, args.requery)
                    eval_s = time.perf_counter() - start
                    row = {
                        "task": task,
                        "demos": n,
                        "seed": seed,
                        "successes": wins,
                        "eval_episodes": args.eval,
                        "success_rate": wins / args.eval,
                        "mean_steps": mean_steps,
                        "horizon": horizon,
                        "chunk_size": args.chunk,
                        "requery_every": args.requery,
                        "steps": args.steps,
                        "frames": base.info.frames,
                        "loss_last": base.info.loss_last,
                        "train_s": train_s,
                        "eval_s": eval_s,
                    }
                    rows.append(row)
                    print(
                        f"| {task} | {n} | {seed} | {wins / args.eval:.0%} | {args.eval} |"
                        f" {mean_steps:.0f} / {horizon} | {train_s:.1f} | {eval_s:.0f} |",
                        flush=True,
                    )
    write_csv(rows, args.csv)


if __name__ == "__main__":
    main()
