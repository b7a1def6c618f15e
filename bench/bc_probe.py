"""How hard is each task for plain behaviour cloning? (issue: tasks must not be trivial for BC)

For each task and demo count: record N scripted demos through the episode store (state +
privileged object state, joint-target actions), fit an MLP policy by MSE on (state, object
state) -> (joint-target delta, gripper target), and evaluate it on held-out seeds. This is a
probe, not the product's BC base (that comes with the learning core): a well-tuned policy may
do better, a task where this probe already reaches ~100% is too easy to show fine-tuning.

    .venv/bin/python bench/bc_probe.py --tasks lift square --demos 10 25 50 --eval 50
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import torch
from bench_common import write_csv  # bench/ is on sys.path when run as a script
from torch import nn

from coirl_ros.constants import ACTION, OBS_ENV_STATE, OBS_STATE
from coirl_ros.data import EpisodeStore
from coirl_ros.sim.demos import generate_demos
from coirl_ros.sim.env import ManipulationEnv
from coirl_ros.sim.tasks import available_tasks, make_task

EVAL_SEED0 = 10_000  # far from the demo seeds
torch.set_num_threads(1)  # small MLP: threads only fight the simulator for the 2 cores


def load_dataset(store: EpisodeStore) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for ep in store.iter_episodes(keys=[OBS_STATE, OBS_ENV_STATE, ACTION]):
        state, env_state, action = ep.data[OBS_STATE], ep.data[OBS_ENV_STATE], ep.data[ACTION]
        xs.append(np.concatenate([state, env_state], axis=1))
        ys.append(np.concatenate([action[:, :7] - state[:, :7], action[:, 7:]], axis=1))
    return np.concatenate(xs), np.concatenate(ys)


def fit(x: np.ndarray, y: np.ndarray, steps: int, seed: int) -> tuple[nn.Module, dict[str, np.ndarray]]:
    torch.manual_seed(seed)
    stats = {"x_mu": x.mean(0), "x_sd": x.std(0) + 1e-6, "y_mu": y.mean(0), "y_sd": y.std(0) + 1e-6}
    xt = torch.as_tensor((x - stats["x_mu"]) / stats["x_sd"], dtype=torch.float32)
    yt = torch.as_tensor((y - stats["y_mu"]) / stats["y_sd"], dtype=torch.float32)
    net = nn.Sequential(
        nn.Linear(x.shape[1], 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 8)
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(xt), (256,), generator=gen)
        loss = ((net(xt[idx]) - yt[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval(), stats


def evaluate(task: str, net: nn.Module, stats: dict[str, np.ndarray], episodes: int) -> float:
    env = ManipulationEnv(make_task(task))
    wins = 0
    for k in range(episodes):
        obs, info = env.reset(seed=EVAL_SEED0 + k)
        for _ in range(env.horizon):
            x = np.concatenate([obs["state"], obs["object"]])
            with torch.no_grad():
                out = net(torch.as_tensor((x - stats["x_mu"]) / stats["x_sd"], dtype=torch.float32)).numpy()
            y = out * stats["y_sd"] + stats["y_mu"]
            action = np.concatenate([obs["state"][:7] + y[:7], y[7:]])
            obs, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                break
        wins += bool(info["success"])
    env.close()
    return wins / episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="*", default=None)
    parser.add_argument("--demos", nargs="*", type=int, default=[10, 25, 50])
    parser.add_argument("--eval", type=int, default=50, help="evaluation episodes per setting")
    parser.add_argument("--steps", type=int, default=3000, help="gradient steps")
    parser.add_argument("--csv", type=Path, default=Path("bench/results/bc_probe.csv"))
    args = parser.parse_args()
    rows = []
    print("| task | demos | BC success | eval episodes | fit+eval s |\n|---|---:|---:|---:|---:|")
    for task in args.tasks or available_tasks():
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "demos.zarr"
            generate_demos(task, max(args.demos), root, progress=False)
            store = EpisodeStore.open(root)
            indices = store.episode_indices()
            for n in args.demos:
                start = time.perf_counter()
                subset = Path(tmp) / f"subset_{n}.zarr"
                sub = EpisodeStore.create(subset, store.spec)
                with sub.writer() as w:  # the first n demos, through the same writer API
                    for ep in (store.read_episode(i) for i in indices[:n]):
                        w.begin_episode(ep.meta.task, ep.meta.source)
                        for t in range(ep.meta.num_frames):
                            w.add_frame({k: v[t] for k, v in ep.data.items()})
                        w.save_episode(success=ep.meta.success)
                x, y = load_dataset(sub)
                net, stats = fit(x, y, args.steps, seed=0)
                rate = evaluate(task, net, stats, args.eval)
                row = {
                    "task": task,
                    "demos": n,
                    "success_rate": rate,
                    "eval_episodes": args.eval,
                    "seconds": time.perf_counter() - start,
                }
                rows.append(row)
                print(f"| {task} | {n} | {rate:.0%} | {args.eval} | {row['seconds']:.0f} |", flush=True)
    write_csv(rows, args.csv)


if __name__ == "__main__":
    main()
