"""Does the critic know better than the actor? Acting by the critic's choice among sampled actions.

A CSIL run whose deterministic policy stays at its BC start can be stuck in two places: the critic
does not rank actions by how well they end (then no actor update can help), or it does and the
KL-regularised actor does not follow. This separates the two. It loads a finished `coirl bench learn`
run (its `learner.pt`) and evaluates, on the run's evaluation seeds, at every step:

- `mode`: the actor's mean action (what the learning curve evaluates);
- `sample`: one action of the exploring policy (temperature κ), no choice made;
- `argmax-N` / `argmin-N`: of the mean and N samples at temperature κ, the one the critic values
  most / least;
- `ascend-δ` / `descend-δ`: the mean action moved δ (in the residual's units, `--step`) along / against
  the critic's action gradient there, ∇_a Q / ‖∇_a Q‖: does a small step the way the critic points
  help, which is what a trust-region actor would take? `random-δ`: the same step in a random direction
  (drawn afresh every step), the control for "any step of that size"; `fixed-δ`: one random direction
  (`--direction-seed`) for every step of every episode, the control for "any steady bias of that size".

If argmax beats mode and argmin falls below sample, the critic carries the signal the actor has not
taken up; if argmax, sample and argmin are alike, the critic cannot tell the actions apart. It also
reports how aligned the critic's action gradients are across states (the length of the mean unit
gradient: 0 for directions that vary with the state, 1 for one global slope).

    python bench/critic_guided_eval.py --run runs/exp/long_csil --learner-config bench/learner_cpu.yaml \
        --task lift --demos 20 --base-offset 0.04 --episodes 40 --n 16 --temperature 0.3

Writes `critic_guided_eval_t<κ>_n<N>[_step<δ>].csv` in the run directory and prints one line per rule, after
the correlations of Q with the candidates' distance from the mean and likelihood under π_BC, and
how far the actor's spread and mean have moved from π_BC's (`--rules ""`: only those).
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch

from coirl_ros.configs import LearnerConfig, load_config
from coirl_ros.control.demo_base import demo_base_filler
from coirl_ros.data import EpisodeStore
from coirl_ros.experiment import EVAL_SEED0, Actor, ExperimentConfig
from coirl_ros.learning.learner import Learner
from coirl_ros.policies.local_bc_base import LocalBCBase, miscalibrated

STEP_RULES = ("ascend", "descend", "random", "fixed")


class CriticChoice:
    """Acts like a ResidualPolicy (`act(x, deterministic, temperature)`), choosing among candidates."""

    def __init__(
        self,
        learner: Learner,
        rule: str,
        n: int,
        temperature: float,
        step: float = 0.1,
        direction_seed: int = 0,
        proposer: str = "actor",
    ) -> None:
        # Candidates (and the mode/sample rules) come from the actor, or from π_BC (the KL prior):
        # the critic's choice among π_BC's own proposals needs no actor to have followed it.
        self.proposer = learner.actor if proposer == "actor" else learner.bc_prior
        self.critic = learner.critic
        self.rule, self.n, self.temperature, self.step = rule, n, temperature, step
        fixed = torch.randn(learner.action_dim, generator=torch.Generator().manual_seed(direction_seed))
        self.fixed_direction = fixed / fixed.norm()
        self.critic.eval()  # batch norm on its running statistics: each candidate valued on its own

    @torch.no_grad()
    def act(self, x: np.ndarray, deterministic: bool = True, temperature: float = 1.0) -> np.ndarray:
        obs = torch.as_tensor(np.asarray(x, np.float32)).unsqueeze(0)
        dist = self.proposer(obs)
        if self.rule in STEP_RULES:
            mode = dist.mode()
            if self.rule == "random":
                direction = torch.randn_like(mode)
                direction = direction / direction.norm(dim=-1, keepdim=True)
            elif self.rule == "fixed":
                direction = self.fixed_direction.expand_as(mode)
            else:
                sign = 1.0 if self.rule == "ascend" else -1.0
                direction = sign * unit_action_gradient(self.critic, obs, mode)
            return (mode + self.step * direction).clamp(-1.0, 1.0).squeeze(0).numpy()
        if self.rule == "mode":
            return dist.mode().squeeze(0).numpy()
        if self.rule == "sample":
            return dist.sample(self.temperature).squeeze(0).numpy()
        candidates = torch.cat([dist.mode(), dist.sample_n(self.n, self.temperature)[0]])
        q = self.critic(obs.expand(len(candidates), -1), candidates).reshape(-1)
        pick = int(q.argmax() if self.rule == "argmax" else q.argmin())
        return candidates[pick].numpy()


def unit_action_gradient(critic: torch.nn.Module, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """∇_a Q(s, a) / ‖∇_a Q(s, a)‖ per row (zero where the critic is flat in a)."""
    with torch.enable_grad():
        action = action.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(obs, action).sum(), action, allow_unused=True)
    if grad is None:
        return torch.zeros_like(action)
    return grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def gradient_alignment(learner: Learner, states: int = 512) -> tuple[float, list[float]]:
    """The length of the mean unit action gradient of Q at the actor's mean action, over replayed
    rollout states (0: directions vary with the state; 1: one global slope), and that mean."""
    batch = learner._tensors(learner.sampler.sample(states, np.random.default_rng(1), "rollout"))
    with torch.no_grad():
        mode = learner.actor(batch["x"]).mode()
    mean = unit_action_gradient(learner.critic, batch["x"], mode).mean(0)
    return float(mean.norm()), [round(float(v), 2) for v in mean]


@torch.no_grad()
def spread_against_prior(learner: Learner, kind: str, states: int = 2048) -> dict[str, float]:
    """How far the actor has moved from π_BC on replayed `kind` ("demo" | "rollout") states: the mean
    ratio of their pre-squash stds, and the mean |actor mean − π_BC mean| in units of π_BC's std.

    An exploring rollout samples at temperature κ around the actor's mean, so a spread that narrows
    makes exploring rollouts succeed more often without the mean (what evaluation runs) improving."""
    batch = learner._tensors(learner.sampler.sample(states, np.random.default_rng(2), kind))
    actor, prior = learner.actor(batch["x"]), learner.bc_prior(batch["x"])
    return {
        "std_ratio": float((actor.std / prior.std).mean()),
        "mean_shift": float(((actor.mean - prior.mean).abs() / prior.std).mean()),
    }


@torch.no_grad()
def q_against_distance(learner: Learner, n: int, temperature: float, states: int = 512) -> dict[str, float]:
    """Where the critic puts its maxima, over `states` replayed rollout states: the mean per-state
    correlation of Q with the candidate's distance from the actor's mean action and with its
    log-likelihood under π_BC (positive / negative: Q grows away from the data), and how much Q
    varies across one state's candidates against how much it varies across states."""
    learner.critic.eval()  # batch norm on its running statistics: each candidate valued on its own
    batch = learner._tensors(learner.sampler.sample(states, np.random.default_rng(0), "rollout"))
    x = batch["x"]
    dist = learner.actor(x)
    candidates = dist.sample_n(n, temperature)
    flat_x = x.repeat_interleave(n, 0)
    flat_u = candidates.reshape(states * n, -1)
    q = learner.critic(flat_x, flat_u).reshape(states, n)
    distance = (candidates - dist.mode().unsqueeze(1)).norm(dim=-1)
    log_bc = learner.bc_prior(flat_x).log_prob(flat_u.clamp(-0.999, 0.999)).reshape(states, n)

    def mean_corr(a: torch.Tensor, b: torch.Tensor) -> float:
        a = (a - a.mean(1, keepdim=True)) / a.std(1, keepdim=True).clamp_min(1e-8)
        b = (b - b.mean(1, keepdim=True)) / b.std(1, keepdim=True).clamp_min(1e-8)
        return float((a * b).mean(1).mean() * n / (n - 1))

    return {
        "corr_q_distance": mean_corr(q, distance),
        "corr_q_log_bc": mean_corr(q, log_bc),
        "q_std_actions": float(q.std(1).mean()),
        "q_std_states": float(q.mean(1).std()),
    }


def add_run_arguments(ap: argparse.ArgumentParser) -> None:
    """The arguments that name a finished `coirl bench learn` run (as it was started)."""
    ap.add_argument(
        "--run", type=Path, required=True, help="the --out directory of a `coirl bench learn` run"
    )
    ap.add_argument("--learner-config", type=Path, required=True, help="the run's --learner-config")
    ap.add_argument("--task", default="lift")
    ap.add_argument("--demos", type=int, default=20)
    ap.add_argument("--base-offset", type=float, default=0.04)
    ap.add_argument("--scale", type=float, default=0.5)
    ap.add_argument("--requery", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0, help="the run's seed")
    ap.add_argument("--episodes", type=int, default=40)


def load_run(args: argparse.Namespace) -> tuple[Learner, Actor, Path, int]:
    """The run's learner restored from its checkpoint, an `Actor` on the run's deployed (offset) base,
    the run's directory and the env steps it had trained for."""
    learner_cfg = load_config(args.learner_config, LearnerConfig)
    config = ExperimentConfig(
        task=args.task, methods=("csil",), seeds=1, demos=args.demos, requery_every=args.requery,
        scale=args.scale, learner=learner_cfg, out_dir=args.run, base_offset_m=args.base_offset,
        eval_episodes=args.episodes,
    )  # fmt: skip
    base = LocalBCBase.load(config.task_dir / f"base_{args.demos}")  # the run's own, as it trained
    # Deployed as in the run: the demos' base actions (filled in on load) come from it too.
    deployed = miscalibrated(base, (0.0, args.base_offset, 0.0)) if args.base_offset else base
    run_dir = config.task_dir / f"csil_{config.tag}_s{args.seed}"
    learner = Learner(
        learner_cfg.model_copy(update={"method": "csil", "seed": args.seed, "observation": "state"}),
        EpisodeStore.open(run_dir / "episodes.zarr"),
        config.composition,
        config.scale,
        on_load=demo_base_filler(deployed, config.requery_every),
    )
    state = learner.load_checkpoint(run_dir / "learner.pt")
    print(f"{run_dir}: {state.env_steps} env steps, {state.updates} updates")
    return learner, Actor(config, deployed), run_dir, state.env_steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(ap)
    ap.add_argument("--n", type=int, default=16, help="sampled candidates besides the mean")
    ap.add_argument("--temperature", type=float, default=0.3)
    ap.add_argument(
        "--rules", default="mode,sample,argmax,argmin", help="also: ascend, descend, random, fixed"
    )
    ap.add_argument("--step", type=float, default=0.1, help="ascend/descend/random/fixed: step size")
    ap.add_argument("--direction-seed", type=int, default=0, help="fixed: which random direction")
    ap.add_argument(
        "--proposer", choices=("actor", "bc"), default="actor",
        help="who proposes the mode, the sample and the candidates: the trained actor or π_BC",
    )  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(1)

    learner, actor, run_dir, env_steps = load_run(args)
    d = q_against_distance(learner, args.n, args.temperature)
    print(
        f"corr(Q, |u - mean|) = {d['corr_q_distance']:+.2f},"
        f" corr(Q, log pi_BC(u)) = {d['corr_q_log_bc']:+.2f} (per state, over {args.n} candidates"
        f" at temperature {args.temperature}); std of Q across"
        f" a state's candidates {d['q_std_actions']:.3f}, across states {d['q_std_states']:.2f}"
    )
    for kind in ("demo", "rollout"):
        spread = spread_against_prior(learner, kind)
        print(
            f"actor vs pi_BC on {kind} states: std ratio {spread['std_ratio']:.2f},"
            f" |mean shift| {spread['mean_shift']:.2f} pi_BC stds"
        )
    alignment, direction = gradient_alignment(learner)
    print(f"action gradients of Q at the mean action: alignment {alignment:.2f}, mean direction {direction}")
    rows = []
    try:
        for rule in filter(None, args.rules.split(",")):
            policy = CriticChoice(
                learner, rule, args.n, args.temperature, args.step, args.direction_seed, args.proposer
            )
            start = time.perf_counter()
            wins = sum(
                actor.run_episode(EVAL_SEED0 + k, policy, explore=False)[0] for k in range(args.episodes)
            )
            name = {"argmax": f"argmax-{args.n}", "argmin": f"argmin-{args.n}"}.get(rule, rule)
            if rule in STEP_RULES:
                name = f"{rule}-{args.step:g}" + (f"-d{args.direction_seed}" if rule == "fixed" else "")
            rate = wins / args.episodes
            print(f"{name:>10}: {rate:.1%} of {args.episodes} episodes ({time.perf_counter() - start:.0f} s)")
            rows.append({"rule": name, "proposer": args.proposer, "temperature": args.temperature,
                         "success_rate": rate, "episodes": args.episodes,
                         "env_steps": env_steps})  # fmt: skip
    finally:
        actor.close()
    if not rows:
        return
    stepped = any(r["rule"].startswith(STEP_RULES) for r in rows)
    suffix = f"_step{args.step:g}" if stepped else ""
    suffix += "_bc" if args.proposer == "bc" else ""
    out = run_dir / f"critic_guided_eval_t{args.temperature:g}_n{args.n}{suffix}.csv"
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
