"""Learner throughput: gradient updates/s at batch 512 on this CPU, next to LeRobot's own SAC.

What is measured
----------------
All in one process, with every candidate timed in the same loop (interleaved: each repeat times
every candidate once, in a rotated order, so that load from other processes hits them alike).
Warm-up updates are excluded, and the repeat's median is reported. Per thread count
(`torch.set_num_threads`, `--threads`, default 1 and 2):

1. LeRobot 0.6.1 SAC (`lerobot.rl.algorithms.sac.SACAlgorithm.update`), built the way LeRobot's
   learner builds it: `GaussianActorConfig` with one state feature `observation.state` [40] and
   action [7], `GaussianActorPolicy(config)`, `SACAlgorithmConfig.from_policy_config(config)`,
   `make_algorithm(algo_config, policy)`, `algorithm.make_optimizers_and_scheduler()`, then
   `algorithm.update(batch_iterator)` with an iterator repeating one random in-memory batch in
   LeRobot's RL batch format ({"state": {...}, "next_state": {...}, "action", "reward", "done"}).
   Defaults otherwise: actor and both critics 256x256 (LayerNorm + SiLU), a shared 256-wide
   state encoder (Linear + LayerNorm + tanh) in front, target critics, learned temperature,
   gradient clipping at 40, UTD 1. No preprocessing (normalisation) step is timed.
2. A minimal plain-PyTorch SAC of the same sizes (`PlainSAC` below: actor 40-256-256-14, two
   critics 47-256-256-1 with targets, learned temperature, random in-memory batch): the
   reference point of what an update of this size costs in PyTorch on this CPU.
3. Our learner, `coirl_ros.learning.learner.Learner.train(n)`, on a synthetic episode store
   (state 8 + object state 25 + base action 7 = a 40-dim policy input, action 7; scripted demo
   episodes and "policy" rollout episodes so each batch is half demos, half replay). This
   includes sampling from the store and the numpy -> tensor conversion of every batch, which
   the two SACs do not pay. Variants: csil with the XQC critic, csil with the LayerNorm critic
   and sparse (XQC), each with the critic at 256x256 and at the default config (512x512);
   csil/XQC 256x256 also with HetStat num_features 64 and 128 (default 256).

A row "batch sampling only" times `Learner._sample(512)` alone (store -> tensors), the share of
our update that the SACs' in-memory batches do not pay.

Then one profile of a csil update (XQC, 256x256 critic, default HetStat; `--profile-threads`,
default 1): the top torch ops by self CPU time (torch.profiler) and the coirl functions by
cumulative time (cProfile). (torch.profiler may print a harmless "gpuGetDeviceCount failed" line
on a machine without a GPU.)

Prints a markdown table (method, critic, sizes, threads, updates/s, ms/update) and writes a CSV
(default bench/results/learner_bench.csv).

How to run
----------
    .venv/bin/python bench/learner_bench.py                  # ~3-5 min on 2 cores
    .venv/bin/python bench/learner_bench.py --quick          # smoke run, ~30 s
    .venv/bin/python bench/learner_bench.py --threads 2 --repeats 7 --block-seconds 2
    .venv/bin/python bench/learner_bench.py --no-lerobot --no-profile --csv out.csv
    python bench/learner_bench.py --device cuda --threads 1 --no-profile \
        --csv bench/results/learner_bench_cuda.csv     # on a GPU: every candidate on the device

With `--device cuda` every network, batch and optimiser lives on the GPU; each timed block ends
with `torch.cuda.synchronize()`, so it counts the kernels' work and not only their launch. Our
learner still samples its batches from the zarr-backed store on the CPU and copies them over,
as it does when it trains.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import itertools
import math
import platform
import pstats
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from bench_common import device_sync, machine_info, write_csv  # bench/ is on sys.path when run as a script
from torch import nn

from coirl_ros.configs import LearnerConfig
from coirl_ros.constants import ACTION, ACTION_BASE, DONE, OBS_ENV_STATE, OBS_STATE, REWARD, TIMESTAMP
from coirl_ros.data import EpisodeStore
from coirl_ros.data.episode_spec import EpisodeSpec
from coirl_ros.learning.learner import Learner

STATE_DIM = 8
ENV_STATE_DIM = 25
ACTION_DIM = 7
OBS_DIM = STATE_DIM + ENV_STATE_DIM + ACTION_DIM  # the residual policy's input: 40, like the SAC's obs
BATCH = 512
SCALE = 0.1  # residual scale
DEFAULT_CSV = Path(__file__).resolve().parent / "results" / "learner_bench.csv"


# ---- the candidates --------------------------------------------------------------------------------
@dataclass
class Candidate:
    name: str
    method: str
    critic: str
    sizes: str
    run: Callable[[int], Any]  # n updates
    speeds: dict[int, list[float]] = field(default_factory=dict)  # threads -> updates/s per repeat
    block: dict[int, int] = field(default_factory=dict)  # threads -> updates per timed block


def _mlp(inp: int, out: int, hidden: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Linear(inp, size), nn.ReLU()]
        inp = size
    return nn.Sequential(*layers, nn.Linear(inp, out))


class PlainSAC:
    """SAC in ~50 lines: tanh-Gaussian actor, twin critics + Polyak targets, learned temperature."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: list[int], batch_size: int) -> None:
        self.gamma, self.tau, self.target_entropy = 0.99, 0.005, -action_dim / 2
        self.actor = _mlp(obs_dim, 2 * action_dim, hidden)
        self.critics = nn.ModuleList(_mlp(obs_dim + action_dim, 1, hidden) for _ in range(2))
        self.targets = copy.deepcopy(self.critics).requires_grad_(False)
        self.log_alpha = torch.zeros(1, requires_grad=True)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=3e-4)
        self.critic_opt = torch.optim.Adam(self.critics.parameters(), lr=3e-4)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=3e-4)
        b = batch_size
        self.batch = (
            torch.randn(b, obs_dim),
            torch.rand(b, action_dim) * 2 - 1,
            torch.randn(b),
            torch.randn(b, obs_dim),
            torch.zeros(b),
        )

    def _pi(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.actor(obs).chunk(2, dim=-1)
        std = log_std.clamp(-5.0, 2.0).exp()
        x = mean + std * torch.randn_like(mean)
        log_n = -0.5 * ((x - mean) / std).square() - std.log() - 0.5 * math.log(2 * math.pi)
        log_jac = 2.0 * (math.log(2.0) - x - F.softplus(-2.0 * x))  # log(1 - tanh(x)^2)
        return torch.tanh(x), (log_n - log_jac).sum(-1)

    @staticmethod
    def _q(nets: nn.ModuleList, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, action], dim=-1)
        return torch.stack([net(x).squeeze(-1) for net in nets])

    def update(self) -> None:
        obs, act, rew, next_obs, done = self.batch
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            next_a, next_logp = self._pi(next_obs)
            next_q = self._q(self.targets, next_obs, next_a).min(0).values - alpha * next_logp
            y = rew + self.gamma * (1.0 - done) * next_q
        critic_loss = (self._q(self.critics, obs, act) - y).square().mean(1).sum()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        a, logp = self._pi(obs)
        actor_loss = (alpha * logp - self._q(self.critics, obs, a).min(0).values).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        alpha_loss = -(self.log_alpha.exp() * (logp.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()
        with torch.no_grad():
            for target, online in zip(self.targets.parameters(), self.critics.parameters(), strict=True):
                target.lerp_(online, self.tau)


def lerobot_sac(
    obs_dim: int, action_dim: int, hidden: list[int], batch_size: int, device: str = "cpu"
) -> tuple[Callable, str]:
    """LeRobot's SAC built as its learner builds it; returns (run(n), version)."""
    import lerobot
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.gaussian_actor.configuration_gaussian_actor import (
        ActorNetworkConfig,
        CriticNetworkConfig,
        GaussianActorConfig,
    )
    from lerobot.policies.gaussian_actor.modeling_gaussian_actor import GaussianActorPolicy
    from lerobot.rl.algorithms.factory import make_algorithm
    from lerobot.rl.algorithms.sac.configuration_sac import SACAlgorithmConfig

    policy_cfg = GaussianActorConfig(
        input_features={"observation.state": PolicyFeature(FeatureType.STATE, (obs_dim,))},
        output_features={"action": PolicyFeature(FeatureType.ACTION, (action_dim,))},
        device=device,
        actor_network_kwargs=ActorNetworkConfig(hidden_dims=list(hidden)),
    )
    policy = GaussianActorPolicy(policy_cfg).to(device)
    policy.train()
    algo_cfg = SACAlgorithmConfig.from_policy_config(policy_cfg)
    algo_cfg.critic_network_kwargs = CriticNetworkConfig(hidden_dims=list(hidden))
    algorithm = make_algorithm(algo_cfg, policy)
    algorithm.make_optimizers_and_scheduler()
    b = batch_size
    with torch.device(device):
        batch = {
            "state": {"observation.state": torch.randn(b, obs_dim)},
            "next_state": {"observation.state": torch.randn(b, obs_dim)},
            "action": torch.rand(b, action_dim) * 2 - 1,
            "reward": torch.randn(b),
            "done": torch.zeros(b),
        }
    batches = itertools.repeat(batch)

    def run(n: int) -> None:
        for _ in range(n):
            algorithm.update(batches)

    return run, getattr(lerobot, "__version__", "?")


# ---- our learner on a synthetic store ----------------------------------------------------------------
def build_store(root: Path, episodes: int, frames: int, seed: int = 0) -> EpisodeStore:
    """Half scripted demos, half policy rollouts; smooth random-walk states, actions in [-1, 1]."""
    rng = np.random.default_rng(seed)
    spec = EpisodeSpec(state_dim=STATE_DIM, action_dim=ACTION_DIM, env_state_dim=ENV_STATE_DIM)
    store = EpisodeStore.create(root, spec)
    with store.writer() as w:
        for ep in range(episodes):
            source = "scripted" if ep % 2 == 0 else "policy"
            w.begin_episode("bench", source)
            state = rng.normal(size=STATE_DIM).astype(np.float32)
            env_state = rng.normal(size=ENV_STATE_DIM).astype(np.float32)
            for t in range(frames):
                state += 0.05 * rng.normal(size=STATE_DIM).astype(np.float32)
                env_state += 0.02 * rng.normal(size=ENV_STATE_DIM).astype(np.float32)
                base = np.tanh(state[:ACTION_DIM] + 0.1 * rng.normal(size=ACTION_DIM)).astype(np.float32)
                residual = np.clip(0.3 * rng.normal(size=ACTION_DIM), -1, 1).astype(np.float32)
                w.add_frame(
                    {
                        OBS_STATE: state.copy(),
                        OBS_ENV_STATE: env_state.copy(),
                        ACTION: np.clip(base + SCALE * residual, -1, 1),
                        ACTION_BASE: base,
                        REWARD: float(t == frames - 1),
                        DONE: t == frames - 1,
                        TIMESTAMP: t / spec.fps,
                    }
                )
            w.save_episode(success=True)
    return store


def make_learner(
    store: EpisodeStore,
    method: str,
    critic: str,
    critic_hidden: int,
    features: int,
    n_step: int = 1,
    device: str = "cpu",
) -> Learner:
    cfg = LearnerConfig(
        method=method,
        batch_size=BATCH,
        n_step=n_step,
        bc={"hidden_sizes": [256, 256], "num_features": features, "steps": 5},
        critic={"kind": critic, "hidden_sizes": [critic_hidden, critic_hidden], "pretrain_steps": 3},
    )
    learner = Learner(cfg, store, composition="residual", scale=SCALE, device=device)
    learner.pretrain()
    return learner


def learner_candidates(store: EpisodeStore, quick: bool, device: str = "cpu") -> list[Candidate]:
    variants = [  # method, critic kind, critic width, HetStat num_features, n-step
        ("csil", "xqc", 256, 256, 1),
        ("csil", "layernorm_mlp", 256, 256, 1),
        ("sparse", "xqc", 256, 256, 1),
        ("csil", "xqc", 256, 128, 1),
        ("csil", "xqc", 256, 64, 1),
        ("csil", "xqc", 512, 256, 1),
        ("csil", "layernorm_mlp", 512, 256, 1),
        ("sparse", "xqc", 512, 256, 1),
        # n-step targets: n - 1 more reward (HetStat) forwards per update, without gradient.
        ("csil", "xqc", 256, 128, 5),
        ("csil", "xqc", 256, 128, 10),
    ]
    if quick:
        variants = variants[:2] + variants[5:6]
    out = []
    sampler_owner: Learner | None = None
    for method, kind, width, feats, n_step in variants:
        learner = make_learner(store, method, kind, width, feats, n_step, device)
        default = " (default)" if (width, feats, n_step) == (512, 256, 1) else ""
        steps = f" n-step {n_step}" if n_step > 1 else ""
        out.append(
            Candidate(
                name=f"ours {method}/{kind} {width}x{width} nf{feats}{steps}",
                method=f"ours: {method}",
                critic=kind,
                sizes=f"actor HetStat 256x256 nf{feats}, critic {width}x{width}{steps}{default}",
                run=learner.train,
            )
        )
        sampler_owner = sampler_owner or learner
    # What every update of ours pays before any network runs (LeRobot's and the plain SAC's batches
    # are already tensors): TransitionSampler draws + numpy -> tensors. A private method, on purpose.
    assert sampler_owner is not None
    sample = sampler_owner._sample
    out.append(
        Candidate(
            "ours batch sampling",
            "ours: batch sampling only",
            "-",
            "store -> tensors, 256 demo + 256 replay rows",
            lambda n: [sample(BATCH) for _ in range(n)],
        )
    )
    return out


# ---- timing ------------------------------------------------------------------------------------------
def measure(
    cands: list[Candidate], threads: int, repeats: int, warmup: int, block_s: float, log, device: str = "cpu"
) -> None:
    torch.set_num_threads(threads)
    sync = device_sync(device)
    for c in cands:  # warm-up, also sizes each candidate's timed block to ~block_s
        c.run(warmup)  # the first updates on a GPU also pay kernel selection and caching
        sync()
        t0 = time.perf_counter()
        c.run(warmup)
        sync()
        per_update = (time.perf_counter() - t0) / warmup
        c.block[threads] = max(2, round(block_s / per_update))
        c.speeds[threads] = []
        log(f"  warm-up {c.name}: {1 / per_update:.1f} upd/s -> {c.block[threads]} updates per block")
    for r in range(repeats):
        order = cands[r % len(cands) :] + cands[: r % len(cands)]
        for c in order:
            n = c.block[threads]
            t0 = time.perf_counter()
            c.run(n)
            sync()
            c.speeds[threads].append(n / (time.perf_counter() - t0))
        log(f"  repeat {r + 1}/{repeats} done")


# ---- profile -----------------------------------------------------------------------------------------
def profile_update(learner: Learner, updates: int, threads: int) -> str:
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(threads)
    learner.train(2)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        learner.train(updates)
    ops = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in ops)
    top = sorted(ops, key=lambda e: e.self_cpu_time_total, reverse=True)[:8]
    lines = [
        f"torch.profiler, {updates} csil updates at {threads} thread(s), top ops by self CPU time:",
        "",
        "| op | self CPU ms/update | share | calls/update |",
        "|---|---:|---:|---:|",
    ]
    for e in top:
        lines.append(
            f"| {e.key} | {e.self_cpu_time_total / 1e3 / updates:.2f} |"
            f" {e.self_cpu_time_total / total:.0%} | {e.count / updates:.0f} |"
        )
    pr = cProfile.Profile()
    pr.enable()
    learner.train(updates)
    pr.disable()
    stats = pstats.Stats(pr)
    wall = stats.total_tt
    rows = []
    for (file, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():
        if "coirl_ros" in file:
            rows.append((ct, f"{Path(file).name}:{func}"))
    rows.sort(reverse=True)
    lines += [
        "",
        f"cProfile, {updates} csil updates, coirl functions by cumulative time (ms/update, share of wall):",
        "",
        "| function | ms/update | share |",
        "|---|---:|---:|",
    ]
    for ct, name in rows[:16]:
        lines.append(f"| {name} | {ct * 1e3 / updates:.1f} | {ct / wall:.0%} |")
    return "\n".join(lines)


# ---- main --------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2", help="comma-separated torch thread counts (default 1,2)")
    ap.add_argument("--repeats", type=int, default=5, help="timed blocks per candidate and thread count")
    ap.add_argument("--warmup", type=int, default=3, help="untimed updates per candidate first")
    ap.add_argument("--block-seconds", type=float, default=0.8, help="target length of one timed block")
    ap.add_argument("--profile-updates", type=int, default=5)
    ap.add_argument("--profile-threads", type=int, default=1, help="threads for the profile (default 1)")
    ap.add_argument("--no-lerobot", action="store_true", help="skip LeRobot's SAC")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 of our variants, short blocks")
    ap.add_argument("--device", default="cpu", help="cpu or cuda: where every candidate runs")
    ap.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    args = ap.parse_args()
    if args.device != "cpu" and not torch.cuda.is_available():
        ap.error(f"--device {args.device} asked for, but torch sees no CUDA device")
    if args.quick:
        args.repeats, args.block_seconds, args.warmup, args.profile_updates = 2, 0.3, 2, 2
    thread_counts = [int(t) for t in args.threads.split(",") if t.strip()]

    def log(msg: str) -> None:
        print(msg, flush=True)

    t_start = time.perf_counter()
    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp(prefix="learner_bench_"))
    try:
        t0 = time.perf_counter()
        store = build_store(tmp / "store.zarr", episodes=20, frames=100)
        log(f"synthetic store: 20 episodes x 100 frames (half demos) in {time.perf_counter() - t0:.1f} s")
        cands: list[Candidate] = []
        lerobot_version = "not run"
        hidden = [256, 256]
        if not args.no_lerobot:
            run, lerobot_version = lerobot_sac(40, ACTION_DIM, hidden, BATCH, args.device)
            cands.append(
                Candidate(
                    "lerobot sac",
                    f"LeRobot {lerobot_version} SAC",
                    "2x MLP (LN, SiLU)",
                    "actor 256x256, critics 256x256, +256 state encoder",
                    run,
                )
            )
        with torch.device(args.device):
            plain = PlainSAC(40, ACTION_DIM, hidden, BATCH)
        cands.append(
            Candidate(
                "plain sac",
                "plain PyTorch SAC",
                "2x MLP (ReLU)",
                "actor 256x256, critics 256x256",
                lambda n: [plain.update() for _ in range(n)],
            )
        )
        t0 = time.perf_counter()
        cands += learner_candidates(store, args.quick, args.device)
        log(
            f"built and pre-trained {len(cands) - 1 - (not args.no_lerobot)} learners in"
            f" {time.perf_counter() - t0:.1f} s"
        )
        for threads in thread_counts:
            log(f"timing at {threads} thread(s)")
            measure(cands, threads, args.repeats, args.warmup, args.block_seconds, log, args.device)
        prof_text = ""
        if not args.no_profile:
            learner = make_learner(store, "csil", "xqc", 256, 256, device=args.device)
            prof_text = profile_update(learner, args.profile_updates, args.profile_threads)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    info = machine_info(
        {
            "torch": torch.__version__,
            "lerobot": lerobot_version,
            "platform": platform.platform(),
            "device": args.device
            + (f" ({torch.cuda.get_device_name(0)})" if args.device.startswith("cuda") else ""),
            "batch": str(BATCH),
            "obs/policy input dim": "40",
            "action dim": str(ACTION_DIM),
        }
    )
    rows = []
    lines = [
        "| method | critic | sizes | threads | updates/s (median) | min-max | ms/update |",
        "|---|---|---|---:|---:|---|---:|",
    ]
    for threads in thread_counts:
        for c in cands:
            s = c.speeds[threads]
            med = statistics.median(s)
            lines.append(
                f"| {c.method} | {c.critic} | {c.sizes} | {threads} | {med:.1f} |"
                f" {min(s):.1f}-{max(s):.1f} | {1e3 / med:.1f} |"
            )
            rows.append(
                {
                    "name": c.name,
                    "method": c.method,
                    "critic": c.critic,
                    "sizes": c.sizes,
                    "device": args.device,
                    "threads": threads,
                    "updates_per_s_median": round(med, 3),
                    "updates_per_s_min": round(min(s), 3),
                    "updates_per_s_max": round(max(s), 3),
                    "ms_per_update": round(1e3 / med, 2),
                    "repeats": len(s),
                    "updates_per_block": c.block[threads],
                    "batch": BATCH,
                    "cpu_model": info["cpu model"],
                    "cpu_count": info["cpu count"],
                    "torch": torch.__version__,
                    "lerobot": lerobot_version,
                }
            )
    print()
    print("\n".join(lines))
    print()
    if prof_text:
        print(prof_text)
        print()
    for key, value in info.items():
        print(f"- {key}: {value}")
    print(f"- total benchmark time: {time.perf_counter() - t_start:.0f} s")
    write_csv(rows, args.csv)


if __name__ == "__main__":
    main()
