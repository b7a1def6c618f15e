"""The learner: turns an episode store into a better residual policy (DESIGN.md 2).

One object, used the same way by the benchmark runner (in process), the learner node (a separate
process following the store) and a cluster job:

    learner = Learner(config, store, composition="residual", scale=0.1, on_load=fill_base_actions)
    learner.pretrain()                      # π_BC on the demos; CSIL: reward copy + critic SARSA
    while running:
        learner.refresh()                   # episodes committed since the last call
        learner.train(n_updates)            # off-policy updates (UTD ratio × new env steps)
        publish(learner.snapshot())         # versioned, validated weights for the policy node
        learner.save_checkpoint(path)       # resume exactly here after a crash

Methods, one flag apart (`LearnerConfig.method`):
- ``csil``: coherent reward from π_BC, refined online; XQC (or LayerNorm) critic pre-trained by SARSA
  on demos; actor = copy of π_BC with the analytic KL to a frozen π_BC (DESIGN 2.1-2.5);
- ``sparse``: ResFiT / "XQC+OD": the env's binary success reward, target Q in [0, 1], demos mixed
  into replay, a fresh actor (mean 0: the base alone at the start), fixed small entropy bonus;
- ``bc``: π_BC alone (no RL); ``base``: nothing to train (the frozen base acts alone).

The learner works in the policy's output space u ∈ [-1, 1]^d; recorded (executed, base) actions are
mapped back with `policy_action_from_executed`. Everything here is plain PyTorch: no ROS.

Observations (`LearnerConfig.observation`): ``state`` feeds [robot state, object state, base action];
``images`` feeds [keypoints of every camera, robot state, base action], no privileged object state.
In image mode the per-camera keypoint encoder (image_encoder.py) is trained jointly with π_BC by the
faithful BC loss, with DrQ random shifts, and then frozen; its keypoints are computed once per frame
as each episode is loaded (`TransitionSampler(derived=...)`), and the actor (a copy of π_BC), reward,
prior and critic train on that flat vector exactly as in state mode. Why frozen: on this project's CPU
budget a forward + backward of the encoder at batch 256 with two 84×84 cameras costs ~0.13-0.27 s,
so training it in every online update would make online RL ~10× slower than state-only; cached, an
update costs the same as in state mode and a new episode costs one encoder forward per frame. The
price: RL does not adapt the encoder (the keypoints are what best explains the demonstrations).
"""

from __future__ import annotations

import io
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import ValidationError
from torch import Tensor, nn

from coirl_ros.configs import LearnerConfig, config_hash
from coirl_ros.constants import ACTION, ACTION_BASE, DONE, NEXT, OBS_STATE, REWARD
from coirl_ros.data import EpisodeStore
from coirl_ros.data.episode_store import Episode
from coirl_ros.data.transition_sampler import TransitionSampler
from coirl_ros.durable_files import write_atomically
from coirl_ros.learning.acting_policy import (
    IMAGE_ARCHITECTURE,
    STATE_ARCHITECTURE,
    acting_policy_from_spec,
    image_policy_extra,
)
from coirl_ros.learning.actor_losses import (
    AdaptiveKLWeight,
    advantage_weighted_actor_loss,
    entropy_regularised_actor_loss,
    frozen_copy,
    kl_regularised_actor_loss,
)
from coirl_ros.learning.bc_losses import distillation_bc_loss, faithful_bc_loss
from coirl_ros.learning.coherent_reward import MAX_REWARD, coherent_reward, reward_refinement_loss
from coirl_ros.learning.critic_losses import (
    CriticBatch,
    action_gradient_penalty,
    conservative_penalty,
    sarsa_pretrain_loss,
    soft_critic_loss,
    sparse_critic_loss,
)
from coirl_ros.learning.critics import CriticEnsemble, LayerNormCritic, XQCCritic, value_bounds
from coirl_ros.learning.image_encoder import ObservationEncoder
from coirl_ros.learning.image_policy import IMAGE_FEATURES, ImageResidualPolicy, make_image_encoder
from coirl_ros.learning.residual_policy import (
    ResidualPolicy,
    observation_keys,
    policy_action_from_executed,
    policy_input,
    unclipped_policy_action,
)
from coirl_ros.learning.weight_snapshot import PolicySpec, WeightSnapshot

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "coirl.learner-checkpoint/1"
Metrics = dict[str, float]


def _report_every_100(
    progress: Callable[[str, int, int, Metrics], None] | None, phase: str, step: int, steps: int, m: Metrics
) -> Metrics:
    """A pre-training loop's report: every 100th and the last step, the metrics as floats (passed to
    `progress` if given); {} on the other steps, so the caller keeps the last report."""
    if step % 100 and step != steps:
        return {}
    metrics = {k: float(v) for k, v in m.items()}
    if progress:
        progress(phase, step, steps, metrics)
    return metrics


class LearnerError(RuntimeError):
    """The learner cannot go on as asked (no demonstrations, a checkpoint from another config...)."""


@dataclass
class TrainingState:
    """Where training stands; saved in every checkpoint and stamped on every snapshot."""

    phase: str = "new"  # new -> pretrained (BC and critic pre-training done) -> online
    bc_steps: int = 0
    critic_pretrain_steps: int = 0
    updates: int = 0  # online gradient updates
    env_steps: int = 0  # rollout transitions the learner has been told about (UTD bookkeeping)
    version: int = 0  # the last snapshot's version
    run_id: str = ""
    # Re-anchoring periods (`LearnerConfig.reanchor_every_env_steps`) covered. One re-anchoring covers
    # every period passed since the last: a learner restarted after a long outage re-fits once, on all
    # the data, instead of once per missed period.
    reanchors: int = 0


class Learner:
    """CSIL++ / sparse / BC learner over an `EpisodeStore` (see the module docstring)."""

    def __init__(
        self,
        config: LearnerConfig,
        store: EpisodeStore,
        composition: str = "residual",
        scale: float = 0.1,
        on_load: Callable[[Episode], None] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if composition not in ("residual", "ensemble"):
            raise ValueError(f"composition must be 'residual' or 'ensemble', got {composition!r}")
        self.config, self.store = config, store
        self.composition, self.scale = composition, scale
        self.device = torch.device(device)
        self.spec = store.spec
        self.on_load = on_load
        self.image_mode = config.observation == "images"
        self.timings: dict[str, float] = {}  # seconds of the image pre-training stages (for benchmarks)
        if self.image_mode:
            if not self.spec.cameras:
                raise LearnerError(
                    f"{store.root}: `observation: images` needs a store that records camera images, and"
                    " this one has no cameras (record with cameras, e.g. `--image-size`, or use"
                    " `observation: state`)"
                )
            # [keypoints of every camera, robot state] then the base action; no object state.
            self.feature_dim = 2 * config.image.num_keypoints * len(self.spec.cameras)
            self.keys: tuple[str, ...] = (IMAGE_FEATURES, OBS_STATE, ACTION_BASE)
            self.obs_dim = self.feature_dim + self.spec.state_dim
            # Pixels until the encoder is trained; its cached keypoints after (`_use_cached_features`).
            self.sampler = TransitionSampler(
                store,
                images="preload",
                on_load=on_load,
                successes_as_demos=config.successes_as_demos,
                follow_labels=True,
            )
        else:
            if self.spec.cameras:
                log.info(
                    "store has cameras %s; this learner trains on low-dimensional state",
                    self.spec.camera_names,
                )
            self.feature_dim = 0
            self.keys = observation_keys(self.spec.env_state_dim)
            self.obs_dim = self.spec.state_dim + self.spec.env_state_dim
            self.sampler = TransitionSampler(
                store, on_load=on_load, successes_as_demos=config.successes_as_demos, follow_labels=True
            )
        self.action_dim = self.spec.action_dim
        self.alpha = config.alpha if config.alpha is not None else 1.0 / self.action_dim
        self.rng = np.random.default_rng(config.seed)
        torch.manual_seed(config.seed)
        self.state = TrainingState(run_id=uuid.uuid4().hex[:12])
        self._build_networks()

    # ---- networks ----------------------------------------------------------------------------------
    def _new_policy(self) -> ResidualPolicy:
        bc = self.config.bc
        return ResidualPolicy(
            self.obs_dim, self.action_dim, bc.hidden_sizes, bc.bottleneck, bc.num_features
        ).to(self.device)

    def _build_networks(self) -> None:
        cfg = self.config
        self.encoder: ObservationEncoder | None = None
        if self.image_mode:
            ic = cfg.image
            self.encoder = make_image_encoder(
                self.spec.cameras, ic.num_keypoints, ic.conv_layers, ic.shift_pad
            ).to(self.device)
        self.bc_policy = self._new_policy()
        self.actor = self._new_policy()
        self.bc_prior = frozen_copy(self.bc_policy)
        self.reward_policy = self._new_policy()
        in_dim = self.bc_policy.input_dim
        c = cfg.critic
        if c.v_min is not None and c.v_max is not None:
            v_min, v_max = c.v_min, c.v_max
        elif cfg.method == "sparse":
            v_min, v_max = 0.0, 1.0
        else:
            v_min, v_max = value_bounds(cfg.gamma)
        self.value_range = (v_min, v_max)

        def new_critic() -> nn.Module:
            if c.kind == "xqc":
                return XQCCritic(in_dim, self.action_dim, c.hidden_sizes, c.num_bins, v_min, v_max, cfg.gamma)
            return LayerNormCritic(in_dim, self.action_dim, c.hidden_sizes)

        self.critic: nn.Module = (
            new_critic()
            if c.ensemble_size == 1
            else CriticEnsemble([new_critic() for _ in range(c.ensemble_size)], c.pessimism)
        )
        # CrossQ/XQC: no target network.
        self.target_critic: nn.Module | None = None if c.kind == "xqc" else frozen_copy(self.critic)
        self.critic.to(self.device)
        if self.target_critic is not None:
            self.target_critic.to(self.device)
        # fused: one kernel for all parameters, ~3x faster steps on CPU (learner_bench.py).
        self.bc_optim = self._bc_optimiser()
        self.actor_optim, self.actor_schedule = self._actor_optimiser()
        self.critic_optim = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr, fused=True)
        # SGD, as the reference: Adam's per-parameter scaling lets the reward drift far on rare states.
        self.reward_optim = torch.optim.SGD(self.reward_policy.parameters(), lr=cfg.reward_lr)
        # β: the config's constant, or a multiplier that keeps the actor's KL to π_BC near kl_target.
        self.kl_weight: AdaptiveKLWeight | None = None
        self.kl_weight_optim: torch.optim.Adam | None = None
        if cfg.kl_target is not None:
            self.kl_weight = AdaptiveKLWeight(cfg.beta, cfg.kl_target).to(self.device)
            self.kl_weight_optim = torch.optim.Adam(self.kl_weight.parameters(), lr=cfg.kl_target_lr)
        # What acts in image mode: the (shared, not copied) encoder in front of the actor.
        self.image_actor = ImageResidualPolicy(self.encoder, self.actor) if self.encoder is not None else None

    def _bc_optimiser(self) -> torch.optim.Adam:
        """π_BC's Adam; in image mode the encoder trains with π_BC, in the same optimiser."""
        params = list(self.bc_policy.parameters())
        if self.encoder is not None:
            params += list(self.encoder.parameters())
        return torch.optim.Adam(params, lr=self.config.bc.lr, fused=True)

    def _actor_optimiser(self) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.LambdaLR]:
        """The actor's Adam and its linear learning-rate warm-up (see `actor_warmup_updates`)."""
        warmup = self.config.actor_warmup_updates
        optim = torch.optim.Adam(self.actor.parameters(), lr=self.config.actor_lr, fused=True)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optim, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0
        )
        return optim, schedule

    @property
    def trains_online(self) -> bool:
        """Whether rollouts change the policy: RL methods, and BC when it re-anchors on successes."""
        cfg = self.config
        return cfg.method in ("csil", "sparse") or (cfg.method == "bc" and cfg.reanchor_every_env_steps > 0)

    # ---- data --------------------------------------------------------------------------------------
    def refresh(self) -> int:
        """Load episodes committed since the last call; returns how many arrived."""
        return self.sampler.refresh()

    def _tensors(self, batch: dict[str, np.ndarray]) -> dict[str, Tensor]:
        """x, u, x', u' (the recorded next action), done, success reward as tensors on the device."""

        def t(a: np.ndarray) -> Tensor:
            return torch.as_tensor(a, dtype=torch.float32, device=self.device)

        u = policy_action_from_executed(batch[ACTION], batch[ACTION_BASE], self.composition, self.scale)
        next_u = policy_action_from_executed(
            batch[NEXT + ACTION], batch[NEXT + ACTION_BASE], self.composition, self.scale
        )
        return {
            "x": t(policy_input(batch, self.keys)),
            "u": t(u),
            "next_x": t(policy_input(batch, self.keys, next_state=True)),
            "next_u": t(next_u),
            "done": t(batch[DONE].astype(np.float32)),
            "success": t(batch[REWARD]),
        }

    def _image_bc_batch(self, batch: dict[str, np.ndarray]) -> tuple[Tensor, Tensor]:
        """x (through the training encoder, so with gradients and DrQ shifts) and u of an image batch."""
        u = policy_action_from_executed(batch[ACTION], batch[ACTION_BASE], self.composition, self.scale)
        low = np.concatenate([batch[OBS_STATE], batch[ACTION_BASE]], axis=-1).astype(np.float32)
        x = torch.cat([self.encoder(batch), torch.as_tensor(low, device=self.device)], dim=-1)
        return x, torch.as_tensor(u, device=self.device)

    @torch.no_grad()
    def _encode_frames(self, data: dict[str, np.ndarray]) -> np.ndarray:
        """The frozen encoder's keypoints [T, feature_dim] of one episode's frames (eval: no shift)."""
        image_keys = self.spec.image_keys()
        n = len(data[image_keys[0]])
        step = self.config.image.feature_batch
        out = [
            self.encoder({k: data[k][i : i + step] for k in image_keys}).cpu().numpy()
            for i in range(0, n, step)
        ]
        return np.concatenate(out).astype(np.float32, copy=False)

    def _use_cached_features(self) -> None:
        """Freeze the encoder and switch to a sampler whose batches carry its keypoints, not pixels.

        The keypoints of every frame are computed once, as each episode is loaded (demos now, rollouts as
        they arrive), so online updates never run the encoder; the images are dropped after encoding.
        """
        self.encoder.eval()
        self.encoder.requires_grad_(False)
        user_hook = self.on_load

        def add_features(episode: Episode) -> None:
            if user_hook is not None:
                user_hook(episode)
            episode.data[IMAGE_FEATURES] = self._encode_frames(episode.data)

        self.sampler = TransitionSampler(
            self.store,
            on_load=add_features,
            derived={IMAGE_FEATURES: ((self.feature_dim,), "float32")},
            hook_keys=self.spec.image_keys(),
            successes_as_demos=self.config.successes_as_demos,
            follow_labels=True,
        )
        start = time.perf_counter()
        self.sampler.refresh()
        frames = self.sampler.num_frames
        self.timings["features_s"] = time.perf_counter() - start
        self.timings["feature_frames"] = float(frames)
        log.info("cached encoder keypoints of %d frames in %.1f s", frames, self.timings["features_s"])

    def _sample(
        self, batch_size: int, subset: Literal["mixed", "demo"] = "mixed"
    ) -> tuple[dict[str, Tensor], int]:
        """One-step transitions, demonstration rows first (see `_sample_windows`); (batch, n_demo)."""
        steps, _, n_demo = self._sample_windows(batch_size, horizon=1, subset=subset)
        return steps[0], n_demo

    def _sample_windows(
        self, batch_size: int, horizon: int, subset: Literal["mixed", "demo"] = "mixed"
    ) -> tuple[list[dict[str, Tensor]], Tensor, int]:
        """Windows of up to `horizon` transitions (TransitionSampler.sample_windows), demonstration rows
        first; `subset` "mixed" takes the configured demo share, "demo" demonstrations only.
        Returns (steps, mask [B, horizon] as 0/1 floats, n_demo)."""
        if subset == "demo":
            n_demo = batch_size
        else:
            n_rollout = self.sampler.num_transitions("rollout")
            n_demo = batch_size if n_rollout == 0 else round(batch_size * self.config.demo_fraction)
        parts = []
        if n_demo:
            parts.append(self.sampler.sample_windows(n_demo, self.rng, "demo", horizon))
        if batch_size - n_demo:
            parts.append(self.sampler.sample_windows(batch_size - n_demo, self.rng, "rollout", horizon))
        steps = []
        for i in range(horizon):
            keys = parts[0][0][i].keys()
            steps.append(self._tensors({k: np.concatenate([p[0][i][k] for p in parts]) for k in keys}))
        mask = np.concatenate([p[1] for p in parts])
        return steps, torch.as_tensor(mask, dtype=torch.float32, device=self.device), n_demo

    def _n_step_return(
        self,
        first_reward: Tensor,
        steps: list[dict[str, Tensor]],
        mask: Tensor,
        reward_of: Callable[[dict[str, Tensor]], Tensor],
    ) -> tuple[Tensor, Tensor]:
        """R = Σ_{i<k} γ^i r_{t+i} over each window and the bootstrap's discount γ^k ([B] each).

        `first_reward` is r_t (already computed by the caller, who may need its gradient);
        `reward_of(step)` gives the reward of the later steps, evaluated without gradient.
        """
        gamma = self.config.gamma
        if len(steps) == 1:
            return first_reward, torch.full_like(first_reward, gamma)
        with torch.no_grad():
            later = torch.stack([reward_of(step) for step in steps[1:]], dim=1)  # [B, n-1]
        rewards = torch.cat([first_reward.detach()[:, None], later], dim=1)
        powers = gamma ** torch.arange(len(steps), dtype=rewards.dtype, device=rewards.device)
        return (rewards * mask * powers).sum(dim=1), gamma ** mask.sum(dim=1)

    def _csil_reward(self, step: dict[str, Tensor]) -> Tensor:
        """The coherent reward of a step's (x, u), plus the success bonus if configured."""
        return self._with_success_reward(
            coherent_reward(self.reward_policy, step["x"], step["u"], self.alpha), step
        )

    def _require_demos(self) -> None:
        self.refresh()
        if self.sampler.num_transitions("demo") == 0:
            raise LearnerError(
                f"{self.store.root}: no demonstrations (teleop or scripted episodes) to learn from;"
                " record some first (`coirl demos generate` in sim, record_demos.launch.py on a robot)"
            )

    # ---- pre-training ------------------------------------------------------------------------------
    def pretrain(self, progress: Callable[[str, int, int, Metrics], None] | None = None) -> Metrics:
        """π_BC on the demos (faithful loss), then for CSIL the reward copy and critic SARSA pre-training.

        `progress(phase, step, total, metrics)` is called every 100 steps. Idempotent: a learner
        restored from a checkpoint past this phase returns at once.
        """
        if self.state.phase != "new":
            return {}
        self._require_demos()
        cfg = self.config
        if self.image_mode:
            # Every demo frame's state and base action; the keypoint columns stay un-normalised (they
            # are in [-1, 1] and move while the encoder trains). Not a 50k-row sample: it would copy
            # the images too.
            rows = self.sampler.frames([OBS_STATE, ACTION_BASE], "demo")
            zeros = np.zeros((len(rows[OBS_STATE]), self.feature_dim), np.float32)
            x = np.concatenate([zeros, rows[OBS_STATE], rows[ACTION_BASE]], axis=-1)
            self.bc_policy.fit_normaliser(x, identity_dims=self.feature_dim)
        else:
            demo_rows = self.sampler.sample(
                min(self.sampler.num_transitions("demo"), 50_000), self.rng, "demo"
            )
            self.bc_policy.fit_normaliser(policy_input(demo_rows, self.keys))
        metrics: Metrics = {"bc/clipped_demo_fraction": self._clipped_demo_fraction()}
        if cfg.method == "base":
            self.state.phase = "pretrained"
            return metrics
        self.bc_policy.train()
        if self.encoder is not None:
            self.encoder.train()  # DrQ shifts on
        start = time.perf_counter()
        # The sparse baseline never uses π_BC in state mode (fresh actor, no prior): skip its training.
        # In image mode π_BC's BC loss is what trains the (then frozen) encoder every network uses.
        bc_steps = 0 if cfg.method == "sparse" and not self.image_mode else cfg.bc.steps
        if cfg.bc.ensemble > 1 and bc_steps:
            metrics |= self._fit_bc_ensemble(bc_steps, progress)
        else:
            metrics |= self._fit_bc(bc_steps, progress)
        self.timings["bc_s"] = time.perf_counter() - start
        if self.image_mode:
            self._use_cached_features()
        self.bc_prior = frozen_copy(self.bc_policy)
        self.reward_policy.load_state_dict(self.bc_policy.state_dict())
        if cfg.method == "csil":
            self.actor.load_state_dict(self.bc_policy.state_dict())  # coherent start: π_θ = π_BC
            metrics |= self._pretrain_critic(progress)
        elif cfg.method == "bc":
            self.actor.load_state_dict(self.bc_policy.state_dict())
        else:  # sparse: a fresh actor whose mean is 0 everywhere (residual composition: the base alone)
            self.actor.obs_mean.copy_(self.bc_policy.obs_mean)
            self.actor.obs_std.copy_(self.bc_policy.obs_std)
        self.state.phase = "pretrained"
        return metrics

    def _fit_bc(
        self, steps: int, progress: Callable[[str, int, int, Metrics], None] | None = None
    ) -> Metrics:
        """`steps` faithful-BC steps of π_BC (and, in image mode, the encoder) on the demo subset."""
        cfg = self.config

        def loss() -> tuple[Tensor, dict[str, Tensor]]:
            if self.image_mode:
                x, u = self._image_bc_batch(self.sampler.sample(cfg.batch_size, self.rng, "demo"))
            else:
                batch, _ = self._sample(cfg.batch_size, subset="demo")
                x, u = batch["x"], batch["u"]
            return faithful_bc_loss(self.bc_policy, x, u)

        return self._train_bc(loss, steps, "bc", progress)

    def _train_bc(
        self,
        loss: Callable[[], tuple[Tensor, dict[str, Tensor]]],
        steps: int,
        phase: str,
        progress: Callable[[str, int, int, Metrics], None] | None,
    ) -> Metrics:
        """`steps` optimiser steps of π_BC on `loss()` (a fresh batch each call); reports every 100.
        With `bc.weight_average` the trained weights (π_BC's, and the encoder's in image mode) end as
        their exponential moving average over the steps."""
        decay = self.config.bc.weight_average
        params = [p for group in self.bc_optim.param_groups for p in group["params"]]
        averaged = [p.detach().clone() for p in params] if decay and steps else None
        metrics: Metrics = {}
        for step in range(1, steps + 1):
            value, m = loss()
            self.bc_optim.zero_grad(set_to_none=True)
            value.backward()
            self.bc_optim.step()
            if averaged is not None:
                with torch.no_grad():
                    for avg, p in zip(averaged, params, strict=True):
                        avg.lerp_(p, 1.0 - decay)
            self.state.bc_steps += 1
            metrics = _report_every_100(progress, phase, step, steps, m) or metrics
        if averaged is not None:
            with torch.no_grad():
                for p, avg in zip(params, averaged, strict=True):
                    p.copy_(avg)
        return metrics

    def _fit_bc_ensemble(
        self, steps: int, progress: Callable[[str, int, int, Metrics], None] | None = None
    ) -> Metrics:
        """π_BC distilled from `bc.ensemble` fits of `steps` each (see `BCConfig.ensemble`)."""
        members, count = [], self.config.bc.ensemble
        for k in range(count):
            if k:
                self._reset_bc_policy()  # the next fit: fresh weights from the advancing torch RNG
            report = None
            if progress is not None:

                def report(phase: str, step: int, total: int, m: Metrics, k: int = k) -> None:
                    progress(f"{phase} fit {k + 1}/{count}", step, total, m)

            self._fit_bc(steps, report)
            members.append(frozen_copy(self.bc_policy))
        self._reset_bc_policy()
        return self._distil_bc(members, steps, progress)

    def _reset_bc_policy(self) -> None:
        """Fresh π_BC weights and optimiser; the normaliser fitted on the demos stays."""
        fresh = self._new_policy().state_dict()
        for name in ("obs_mean", "obs_std"):
            fresh[name] = getattr(self.bc_policy, name)
        self.bc_policy.load_state_dict(fresh)
        self.bc_optim = self._bc_optimiser()

    def _distil_bc(
        self,
        members: list[nn.Module],
        steps: int,
        progress: Callable[[str, int, int, Metrics], None] | None = None,
    ) -> Metrics:
        """`steps` of `distillation_bc_loss`: π_BC's mean to the members' mean action at perturbed
        demonstration inputs, its variance to the demonstrations."""
        cfg = self.config
        # Raw-input units: observations are normalised by π_BC's statistics, base actions already are.
        noise_std = cfg.bc.distill_noise * torch.cat(
            [self.bc_policy.obs_std, torch.ones(self.action_dim, device=self.device)]
        )

        def loss() -> tuple[Tensor, dict[str, Tensor]]:
            batch, _ = self._sample(cfg.batch_size, subset="demo")
            x = batch["x"]
            perturbed = x + noise_std * torch.randn_like(x)
            with torch.no_grad():
                teacher = torch.stack([m(perturbed).mode() for m in members]).mean(0)
            return distillation_bc_loss(self.bc_policy, x, batch["u"], perturbed, teacher)

        return self._train_bc(loss, steps, "bc distil", progress)

    def _pretrain_critic(
        self, progress: Callable[[str, int, int, Metrics], None] | None, steps: int | None = None
    ) -> Metrics:
        cfg, c = self.config, self.config.critic
        steps = c.pretrain_steps if steps is None else steps
        optim = torch.optim.Adam(self.critic.parameters(), lr=c.pretrain_lr)
        max_value = MAX_REWARD / (1.0 - cfg.gamma)
        metrics: Metrics = {}
        self.critic.train()
        for step in range(1, steps + 1):
            window, mask, _ = self._sample_windows(cfg.batch_size, cfg.n_step, subset="demo")
            b, last = window[0], window[-1]
            reward = self._csil_reward(b)
            n_step_reward, discount = self._n_step_return(reward, window, mask, self._csil_reward)
            done, terminal_value = self._csil_terminals(last, reward)
            batch = CriticBatch(b["x"], b["u"], last["next_x"], last["next_u"], done)
            loss, m = sarsa_pretrain_loss(
                self.critic, self.target_critic, batch, discount, n_step_reward, c.grad_penalty, max_value,
                terminal_value,
            )  # fmt: skip
            loss = self._with_conservative_term(loss, m, b["x"], b["u"])
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            self._after_critic_step()
            self.state.critic_pretrain_steps += 1
            metrics = _report_every_100(progress, "critic", step, steps, m) or metrics
        return metrics

    def _with_success_reward(self, reward: Tensor, b: dict[str, Tensor]) -> Tensor:
        """CSIL's reward plus `success_reward` on success terminals (the recorded reward 1)."""
        if not self.config.success_reward:
            return reward
        return reward + self.config.success_reward * b["success"]

    def _csil_terminals(self, b: dict[str, Tensor], demo_reward: Tensor) -> tuple[Tensor, Tensor | None]:
        """CSIL's TD `done` and the value credited at terminal rows (None: nothing).

        - no `absorbing_terminals`: the recorded flag, nothing credited (the return is cut);
        - absorbing, `absorbing_reward: own`: done all zeros; a terminal row's s' is s itself, so the
          bootstrap is the critic's value of staying in the success state;
        - absorbing, `demo_mean`: the recorded flag, crediting mean(r on demo rows) / (1 − γ), the value
          of earning the average demonstration reward forever (`demo_reward`: rewards of demo rows).
        """
        cfg = self.config
        if not cfg.absorbing_terminals:
            return b["done"], None
        if cfg.absorbing_reward == "own":
            return torch.zeros_like(b["done"]), None
        value = demo_reward.detach().mean() / (1.0 - cfg.gamma)
        return b["done"], value.clamp(max=MAX_REWARD / (1.0 - cfg.gamma))

    def _with_conservative_term(self, loss: Tensor, metrics: Metrics, x: Tensor, u: Tensor) -> Tensor:
        """`loss` plus the critic's conservative term (`critic.conservative_weight`; 0: unchanged).

        Candidates per state: half from the actor at its full width (where it would go if it followed
        the critic), half uniform in the action box (where nothing went). The term is in value units,
        as CQL's α: a weight of 1 pushes on Q about as hard as a TD error of a few value units does.
        """
        c = self.config.critic
        if not c.conservative_weight:
            return loss
        b, d = u.shape
        half = c.conservative_candidates // 2
        with torch.no_grad():
            sampled = self.actor(x).sample_n(half)
            uniform = torch.rand(b, c.conservative_candidates - half, d, dtype=u.dtype, device=u.device)
            candidates = torch.cat([sampled, 2.0 * uniform - 1.0], dim=1)
        gap, m = conservative_penalty(self.critic, x, u, candidates, c.conservative_temperature)
        metrics |= m
        return loss + c.conservative_weight * gap

    def _after_critic_step(self) -> None:
        if isinstance(self.critic, XQCCritic | CriticEnsemble):
            self.critic.project_weights_()
        if self.target_critic is not None:
            with torch.no_grad():
                for target, online in zip(
                    self.target_critic.parameters(), self.critic.parameters(), strict=True
                ):
                    target.lerp_(online, self.config.tau)

    # ---- online phase ------------------------------------------------------------------------------
    def add_env_steps(self, n: int) -> int:
        """Record `n` new environment steps; returns the updates now due at the configured UTD ratio."""
        before = self.updates_due()
        self.state.env_steps += n
        return self.updates_due() - before

    def updates_due(self) -> int:
        """Updates owed so far: UTD × (env steps − warm-up), minus those already done (none for BC,
        whose only online work is re-anchoring: see `reanchor_due`)."""
        if self.config.method == "bc":
            return 0
        steps = max(0, self.state.env_steps - self.config.warmup_env_steps)
        return max(0, int(steps * self.config.utd_ratio) - self.state.updates)

    def _clipped_demo_fraction(self) -> float:
        """Share of demo frames whose policy output u had to be clipped to ±1 in some dimension.

        u = (a_demo − a_base) / scale: where the base is further from the demonstration than the
        residual can reach, the target sits on the tanh bound, π_BC cannot fit it, and the coherent
        reward there ends up below that of π_BC's own random actions (seen with scale 0.1 on the
        local base, 85% of lift frames). Warn loudly: the fix is a larger `scale`.
        """
        rows = self.sampler.frames([ACTION, ACTION_BASE], "demo")
        raw = unclipped_policy_action(rows[ACTION], rows[ACTION_BASE], self.composition, self.scale)
        fraction = float(np.mean(np.any(np.abs(raw) > 1.0, axis=-1))) if len(raw) else 0.0
        if fraction > 0.1:
            log.warning(
                "%.0f%% of demonstration frames need a residual beyond the %s scale %.2g: the BC policy"
                " and the coherent reward cannot represent them; raise residual.scale in policy.yaml",
                100 * fraction, self.composition, self.scale,
            )  # fmt: skip
        return fraction

    def train(self, updates: int) -> Metrics:
        """`updates` online gradient updates (critic, reward, actor); metrics averaged over them."""
        if not self.trains_online or (updates <= 0 and not self.reanchor_due):
            return {}
        if self.state.phase == "new":
            raise LearnerError("call pretrain() before train()")
        self.state.phase = "online"
        reanchored = self._reanchor() if self.reanchor_due else {}
        if self.config.method == "bc" or updates <= 0:
            return reanchored
        totals: dict[str, float] = {}
        for _ in range(updates):
            m = self._update()
            for k, v in m.items():
                totals[k] = totals.get(k, 0.0) + float(v)
            self.state.updates += 1
            bad = [k for k in ("losses/actor", "losses/critic_td_ce", "losses/critic_td_mse") if k in m]
            if any(not torch.isfinite(m[k]) for k in bad):
                # Fail loudly: a NaN actor would otherwise act as "the base alone" (the composition
                # falls back to the base on NaN) and the curve would silently show the base.
                raise LearnerError(
                    f"training diverged at update {self.state.updates}: "
                    + ", ".join(f"{k}={float(m[k])}" for k in bad)
                )
        return reanchored | {k: v / updates for k, v in totals.items()}

    @property
    def reanchor_due(self) -> bool:
        """Whether enough env steps have passed for the next re-anchoring on successes."""
        every = self.config.reanchor_every_env_steps
        return every > 0 and self.state.env_steps // every > self.state.reanchors

    def _reanchor(self) -> Metrics:
        """A new coherent start on the demonstrations plus the successful rollouts so far.

        π_BC trains further on the demo subset (which `successes_as_demos` extends); the KL prior,
        the reward and the actor become copies of it, as after pre-training, so the actor restarts at
        the optimum of its own objective; the actor's optimiser and learning-rate warm-up restart with
        it (Adam's moments belong to the old actor); CSIL's critic is re-fitted by SARSA on the new
        reward. The critic's weights are kept as its starting point: the values change little.
        """
        cfg = self.config
        start = time.perf_counter()
        demo_transitions = self.sampler.num_transitions("demo")
        metrics = self._fit_bc(cfg.reanchor_bc_steps)
        for module in (self.bc_prior, self.reward_policy, self.actor):
            module.load_state_dict(self.bc_policy.state_dict())
        self.actor_optim, self.actor_schedule = self._actor_optimiser()
        if cfg.method == "csil":
            self.reward_optim = torch.optim.SGD(self.reward_policy.parameters(), lr=cfg.reward_lr)
            metrics |= self._pretrain_critic(None, cfg.reanchor_critic_steps)
        self.state.reanchors = self.state.env_steps // cfg.reanchor_every_env_steps
        log.info(
            "re-anchored at %d env steps on %d demonstration transitions (demos + successes) in %.1f s",
            self.state.env_steps, demo_transitions, time.perf_counter() - start,
        )  # fmt: skip
        metrics["reanchor/period"] = float(self.state.reanchors)
        metrics["reanchor/demo_transitions"] = float(demo_transitions)
        return metrics

    @property
    def beta(self) -> float:
        """The KL weight the next update uses (`beta`, or its adapted value with `kl_target`)."""
        return self.kl_weight.value if self.kl_weight is not None else self.config.beta

    def _update(self) -> dict[str, Tensor]:
        cfg = self.config
        beta = self.beta
        window, mask, n_demo = self._sample_windows(cfg.batch_size, cfg.n_step)
        b, last = window[0], window[-1]  # learn Q(s_t, a_t); bootstrap after the window's last step
        csil = cfg.method == "csil"
        # -- critic
        with torch.no_grad():
            next_dist = self.actor(last["next_x"])
            next_u, next_log_pi = next_dist.rsample()
        refine = csil and cfg.refine_reward and 0 < n_demo < cfg.batch_size
        if csil:
            # One reward forward serves both the critic target (detached) and the refinement step.
            reward_full = coherent_reward(
                self.reward_policy, b["x"], b["u"], self.alpha, requires_grad=refine
            )
            reward = self._with_success_reward(reward_full.detach(), b)  # refinement sees no bonus
            n_step_reward, discount = self._n_step_return(reward, window, mask, self._csil_reward)
            done, terminal_value = self._csil_terminals(last, reward[: max(n_demo, 1)])
            batch = CriticBatch(b["x"], b["u"], last["next_x"], next_u, done)
            with torch.no_grad():
                next_log_prior = self.bc_prior(last["next_x"]).log_prob(next_u)
            loss, metrics = soft_critic_loss(
                self.critic, self.target_critic, batch, n_step_reward, next_log_pi, next_log_prior,
                discount, beta, MAX_REWARD / (1.0 - cfg.gamma), terminal_value,
            )  # fmt: skip
            metrics["reward/batch"] = reward.mean()
        else:
            n_step_reward, discount = self._n_step_return(
                b["success"], window, mask, lambda step: step["success"]
            )
            batch = CriticBatch(b["x"], b["u"], last["next_x"], next_u, last["done"])
            loss, metrics = sparse_critic_loss(
                self.critic, self.target_critic, batch, n_step_reward, discount
            )
        if csil and cfg.critic.grad_penalty > 0 and n_demo > 0:
            penalty = action_gradient_penalty(self.critic, b["x"][:n_demo], b["u"][:n_demo])
            loss = loss + cfg.critic.grad_penalty * penalty
            metrics["losses/critic_grad_penalty"] = penalty.detach()
        loss = self._with_conservative_term(loss, metrics, b["x"], b["u"])
        self.critic_optim.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_optim.step()
        self._after_critic_step()
        # -- reward refinement (CSIL), on the demo vs replay rows of the same batch
        if refine:
            r_loss, m = reward_refinement_loss(reward_full[:n_demo], reward_full[n_demo:])
            self.reward_optim.zero_grad(set_to_none=True)
            r_loss.backward()
            self.reward_optim.step()
            metrics |= m
        # -- actor
        if csil and cfg.actor_update == "advantage_weighted":
            a_loss, m = advantage_weighted_actor_loss(
                self.actor, self.bc_prior, self.critic, b["x"], b["u"], beta,
                cfg.awr_temperature, cfg.awr_max_weight,
            )  # fmt: skip
        elif csil:
            a_loss, m = kl_regularised_actor_loss(self.actor, self.bc_prior, self.critic, b["x"], beta)
        else:
            a_loss, m = entropy_regularised_actor_loss(
                self.actor, self.critic, b["x"], cfg.sparse_temperature
            )
        self.actor_optim.zero_grad(set_to_none=True)
        a_loss.backward()
        self.actor_optim.step()
        self.actor_schedule.step()
        metrics |= m
        if self.kl_weight is not None and self.kl_weight_optim is not None:
            self.kl_weight_optim.zero_grad(set_to_none=True)
            self.kl_weight.loss(m["actor/kl_to_bc"]).backward()
            self.kl_weight_optim.step()
            self.kl_weight.clamp_()
            metrics["actor/beta"] = torch.tensor(beta)
        return metrics

    # ---- acting and publishing ---------------------------------------------------------------------
    @property
    def acting_policy(self) -> ResidualPolicy | ImageResidualPolicy | None:
        """The policy the robot should run (None for the base-only baseline).

        Image mode: an `ImageResidualPolicy` (frozen encoder + actor) acting on raw camera frames."""
        if self.config.method == "base":
            return None
        return self.image_actor if self.image_actor is not None else self.actor

    def policy_spec(self) -> PolicySpec:
        """What the published weights are for; the policy node checks it before swapping them in.

        Image mode: `obs_keys` are the raw inputs (every camera's images, the state, the base action),
        `obs_dim` is the HetStat's observation width (keypoints + state), and `extra` pins the encoder.
        """
        bc = self.config.bc
        extra: tuple[tuple[str, str], ...] = (
            ("bottleneck", str(bc.bottleneck)),
            ("num_features", str(bc.num_features)),
        )
        keys, architecture = self.keys, STATE_ARCHITECTURE
        if self.image_mode:
            ic = self.config.image
            keys = (*self.spec.image_keys(), OBS_STATE, ACTION_BASE)
            architecture = IMAGE_ARCHITECTURE
            extra += image_policy_extra(self.spec.cameras, ic.num_keypoints, ic.conv_layers)
        return PolicySpec(
            obs_dim=self.obs_dim,
            action_dim=self.action_dim,
            obs_keys=keys,
            composition=self.composition,
            scale=self.scale,
            architecture=architecture,
            hidden_sizes=tuple(bc.hidden_sizes),
            extra=extra,
        )

    def new_acting_policy(self) -> ResidualPolicy | ImageResidualPolicy:
        """A fresh, untrained module of the published architecture, built from `policy_spec()` alone
        as a receiver builds it (`acting_policy_from_spec`).

        Its random initialisation draws from a forked RNG: building one leaves training reproducible.
        """
        with torch.random.fork_rng(devices=[]):
            return acting_policy_from_spec(self.policy_spec()).to(self.device)

    def snapshot(self) -> WeightSnapshot:
        """The actor's weights as the next versioned snapshot (copies: training may go on at once)."""
        if self.config.method == "base":
            raise LearnerError("method 'base' has no residual weights to publish")
        self.state.version += 1
        return WeightSnapshot.from_module(
            self.image_actor if self.image_actor is not None else self.actor,
            self.policy_spec(),
            version=self.state.version,
            config_hash=config_hash(self.config),
            method=self.config.method,
            updates=self.state.updates,
            env_steps=self.state.env_steps,
            run_id=self.state.run_id,
        )

    # ---- checkpoints -------------------------------------------------------------------------------
    def _modules(self) -> dict[str, nn.Module]:
        out = {
            "bc_policy": self.bc_policy,
            "bc_prior": self.bc_prior,
            "actor": self.actor,
            "reward_policy": self.reward_policy,
            "critic": self.critic,
        }
        if self.target_critic is not None:
            out["target_critic"] = self.target_critic
        if self.encoder is not None:
            out["encoder"] = self.encoder
        if self.kl_weight is not None:
            out["kl_weight"] = self.kl_weight
        return out

    def _optimisers(self) -> dict[str, torch.optim.Optimizer]:
        out: dict[str, torch.optim.Optimizer] = {
            "bc": self.bc_optim,
            "actor": self.actor_optim,
            "critic": self.critic_optim,
            "reward": self.reward_optim,
        }
        if self.kl_weight_optim is not None:
            out["kl_weight"] = self.kl_weight_optim
        return out

    def _schedules(self) -> dict[str, Any]:
        return {"actor": self.actor_schedule}

    def save_checkpoint(self, path: str | Path) -> Path:
        """Everything needed to continue exactly: networks, optimisers, RNG states, counters.

        Written to a temporary file, fsynced and renamed: a crash mid-save leaves the previous
        checkpoint intact.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.model_dump(mode="json"),
            "config_hash": config_hash(self.config),
            "policy_spec": self.policy_spec().to_dict(),
            "state": asdict(self.state),
            "modules": {k: m.state_dict() for k, m in self._modules().items()},
            "optimisers": {k: o.state_dict() for k, o in self._optimisers().items()},
            "schedules": {k: s.state_dict() for k, s in self._schedules().items()},
            "rng": {"numpy": self.rng.bit_generator.state, "torch": torch.get_rng_state()},
            "saved_unix": time.time(),
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        return write_atomically(path, buffer.getvalue())

    def load_checkpoint(self, path: str | Path) -> TrainingState:
        """Restore a checkpoint written by `save_checkpoint` with the same learner configuration."""
        path = Path(path)
        if not path.is_file():
            raise LearnerError(f"no learner checkpoint at {path}")
        try:
            # CPU first: the RNG state must stay a CPU ByteTensor; load_state_dict moves tensors.
            payload: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # torch raises several types for a torn or foreign file
            raise LearnerError(f"{path}: not a readable learner checkpoint ({err})") from err
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise LearnerError(f"{path}: not a {CHECKPOINT_FORMAT} file")
        # Compared as configs, not by the stored hash: an update that added an option (at a default
        # that keeps the old behaviour) changes every config's hash, and must not strand a checkpoint.
        try:
            saved = LearnerConfig.model_validate(payload["config"])
        except ValidationError as err:
            raise LearnerError(
                f"{path} was written with a learner config this version cannot read ({err.error_count()}"
                f" problems, first: {err.errors()[0]['loc']}: {err.errors()[0]['msg']}); start a new run"
            ) from None
        if config_hash(saved) != config_hash(self.config):
            raise LearnerError(
                f"{path} was written with learner config {config_hash(saved)}, this learner runs"
                f" {config_hash(self.config)}; resume with the same config or start a new run"
            )
        if payload["policy_spec"] != self.policy_spec().to_dict():
            raise LearnerError(
                f"{path}: observation/action spec {payload['policy_spec']} does not match the store's"
                f" {self.policy_spec().to_dict()}"
            )
        for name, module in self._modules().items():
            module.load_state_dict(payload["modules"][name])
        for name, optim in self._optimisers().items():
            optim.load_state_dict(payload["optimisers"][name])
        for name, schedule in self._schedules().items():
            schedule.load_state_dict(payload["schedules"][name])
        self.rng.bit_generator.state = payload["rng"]["numpy"]
        torch.set_rng_state(payload["rng"]["torch"])
        self.state = TrainingState(**payload["state"])
        if self.image_mode and self.state.phase != "new" and self.config.method != "base":
            self._use_cached_features()  # the restored encoder's keypoints, as when it was frozen
        self.refresh()
        return self.state
