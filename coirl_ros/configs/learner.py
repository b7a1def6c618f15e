"""The asynchronous learner: method, data mix and the CSIL reference hyperparameters (DESIGN.md 2)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from coirl_ros.configs.loading import ConfigModel

PositiveInt = Annotated[int, Field(gt=0)]
LearningRate = Annotated[float, Field(gt=0, lt=1)]
Sizes = Annotated[list[PositiveInt], Field(min_length=1)]


class BCConfig(ConfigModel):
    """HetStat behaviour-cloning policy pi_BC (DESIGN.md 2.2)."""

    steps: PositiveInt = 25_000
    lr: LearningRate = 1e-3
    # > 1: pi_BC is distilled from this many fits (`steps` each, own seeds). A fresh network then
    # trains `steps` more on their mean action at the demonstration inputs perturbed by
    # `distill_noise` (std, in normalised observation / action units), its variance on the
    # demonstrations as usual. On lift one fit's success moves +-6 points with its seed alone (74-90%
    # over 10 seeds) and the mean action of those fits beats nearly every one of them (92%); the
    # distillation keeps that in the single network the rest of CSIL needs. Costs (ensemble + 1) x
    # steps of pre-training.
    ensemble: PositiveInt = 1
    # > 0: each fit (and the distillation) ends on the exponential moving average of its weights
    # with this decay (Polyak averaging; 0.999 averages about the last 1000 steps) instead of its last
    # SGD iterate, which moves with the last few batches: on mug_cleanup refits on nearly the same data
    # swung pi_BC by up to 21 points. 0: the last iterate (the references').
    weight_average: Annotated[float, Field(ge=0, lt=1)] = 0.0
    distill_noise: Annotated[float, Field(ge=0)] = 0.1
    hidden_sizes: Sizes = [256, 256]
    bottleneck: PositiveInt = 12
    num_features: PositiveInt = 256


class CriticConfig(ConfigModel):
    """Critic network and its pre-training on demonstrations (DESIGN.md 2.3, 2.5)."""

    kind: Literal["xqc", "layernorm_mlp"] = "xqc"
    hidden_sizes: Sizes = [512, 512]
    num_bins: Annotated[int, Field(ge=2)] = 101
    pretrain_steps: Annotated[int, Field(ge=0)] = 5_000
    pretrain_lr: LearningRate = 1e-4
    grad_penalty: Annotated[float, Field(ge=0)] = 1.0
    # Conservative term (CQL(H)-style, off: 0; critic_losses.conservative_penalty): weight on the
    # soft maximum of Q over `conservative_candidates` actions per state (half sampled from the actor
    # at its full width, half uniform in [-1, 1]^d) minus Q at the recorded action, in value units
    # like CQL's alpha, soft maximum at temperature `conservative_temperature` (value units). In
    # pre-training and online; a critic the actor can follow (grad_penalty < 1) then cannot value
    # actions no rollout tried above those it did.
    conservative_weight: Annotated[float, Field(ge=0)] = 0.0
    conservative_candidates: Annotated[int, Field(ge=2)] = 8
    conservative_temperature: Annotated[float, Field(gt=0)] = 1.0
    # > 1: that many critics of `kind`, read as mean - pessimism * std over them (critics.CriticEnsemble):
    # the actor then moves only where all members agree. 1: one critic (the references').
    ensemble_size: Annotated[int, Field(ge=1)] = 1
    pessimism: Annotated[float, Field(ge=0)] = 1.0
    # Support of the categorical head; null: +-MAX_REWARD/(1-gamma) for csil, [0, 1] for sparse.
    v_min: float | None = None
    v_max: float | None = None

    @model_validator(mode="after")
    def _support_ordered(self) -> CriticConfig:
        if (self.v_min is None) != (self.v_max is None):
            raise ValueError("set both v_min and v_max, or neither")
        if self.v_min is not None and self.v_max is not None and not self.v_min < self.v_max:
            raise ValueError(f"v_min ({self.v_min}) must be below v_max ({self.v_max})")
        return self


class ImageConfig(ConfigModel):
    """Per-camera keypoint encoder of `observation: images` (DESIGN.md 2.5, image_encoder.py).

    Trained jointly with pi_BC on the demonstrations, then frozen: the later networks see its cached
    keypoints (see coirl_ros/learning/learner.py for why).
    """

    num_keypoints: PositiveInt = 32
    # (out_channels, kernel, stride) per unpadded conv. The default is the faster of the measured stacks
    # (~0.13 s per batch-256 two-camera training step at 84x84 on one CPU thread; 9x9 keypoint grid).
    conv_layers: Annotated[list[tuple[PositiveInt, PositiveInt, PositiveInt]], Field(min_length=1)] = [
        (32, 8, 4),
        (32, 3, 2),
    ]
    shift_pad: Annotated[int, Field(ge=0)] = 4  # DrQ random shift (pixels) while the encoder trains
    feature_batch: PositiveInt = 256  # frames per encoder forward when caching keypoints


class LearnerConfig(ConfigModel):
    """What the learner trains and how often it checkpoints and publishes weights."""

    method: Literal["csil", "sparse", "bc", "base"] = "csil"
    store: str = "runs/episodes.zarr"
    # What the residual, reward and critic see besides the robot state and the base action: the
    # store's privileged object state ("state", sim only) or keypoints of every camera ("images").
    observation: Literal["state", "images"] = "state"
    image: ImageConfig = ImageConfig()
    batch_size: PositiveInt = 256
    utd_ratio: Annotated[float, Field(gt=0)] = 1.0
    demo_fraction: Annotated[float, Field(ge=0, le=1)] = 0.5
    gamma: Annotated[float, Field(gt=0, lt=1)] = 0.99
    alpha: Annotated[float, Field(gt=0)] | None = None  # None: 1 / action_dim
    # 1, not the reference's 0.01: with Q ~100 on these tasks, 0.01 let the actor drift from pi_BC and
    # lose up to half its start (threading: 74 -> 36%), while 1 held every start measured (threading
    # 100k env steps, lift 3 seeds; README "Learning curves").
    beta: Annotated[float, Field(ge=0)] = 1.0
    # A trust region instead of a fixed beta: when set, beta is a Lagrange multiplier adapted by dual
    # gradient descent (SAC's temperature rule) so that the actor's mean KL to pi_BC stays near
    # kl_target; `beta` is then its starting value. A fixed beta weighs the KL against Q, whose scale
    # differs per task (~100 on threading, where beta 0.01 let the actor drift to KL 0.24 and lose
    # 38 of its 74 points); a KL budget means the same thing on every task.
    kl_target: Annotated[float, Field(gt=0)] | None = None
    kl_target_lr: LearningRate = 1e-2  # Adam on log beta: ~lr per update while the KL stays off target
    tau: Annotated[float, Field(gt=0, le=1)] = 0.005
    actor_lr: LearningRate = 3e-4
    critic_lr: LearningRate = 3e-4
    reward_lr: LearningRate = 1e-3
    # Linear actor learning-rate warm-up. Adam's first steps move every weight by ~lr whatever the
    # gradient's size, so even the tiny Q-gradients at a coherent start would shove the actor off
    # π_BC (KL 0 -> ~0.3 in 4 updates on the test problem); warming up keeps the start coherent.
    actor_warmup_updates: Annotated[int, Field(ge=0)] = 1_000
    # CSIL: treat a terminal (success) state as absorbing - bootstrap from it instead of cutting the
    # return there. The coherent reward is mostly positive on demo-like behaviour, so a cut would make
    # every success forfeit future reward and teach the policy to put success off (survival bias).
    absorbing_terminals: bool = True
    # What staying in the absorbing success state earns per step: "own" - the critic's value of the
    # terminal state itself (bootstrap from s' = s); "demo_mean" - the mean coherent reward of the
    # demonstration pairs in the batch, as DAC's learned absorbing-state reward ends up: every
    # demonstration ends in success, so being done as the demonstrator was done is worth as much as
    # imitating it, and a rollout that fails (and keeps earning the lower reward of off-demo states)
    # is worth less. Reads only the `done` flag that absorbing terminals read anyway.
    absorbing_reward: Literal["own", "demo_mean"] = "own"
    refine_reward: bool = True  # CSIL default: the reward keeps learning online (DESIGN.md 2.4)
    # Self-imitation: rollouts labelled successful (sim success, or the operator's label) join the
    # demonstrations in the demo half of each batch, so reward refinement raises their reward and the
    # gradient penalty flattens Q at their actions. Off = pure CSIL, which never reads success labels.
    successes_as_demos: bool = False
    # Re-anchoring on successes (off: 0). Every this many env steps, pi_BC trains `reanchor_bc_steps`
    # more steps on the demonstrations plus the successful rollouts (needs `successes_as_demos`), then
    # the actor, the KL prior and the reward restart from it and the critic is re-fitted by SARSA for
    # `reanchor_critic_steps`: a new coherent start on a larger demonstration set. With method `bc`
    # it is success-filtered behaviour cloning (no RL), the baseline that says what RL adds to it.
    reanchor_every_env_steps: Annotated[int, Field(ge=0)] = 0
    reanchor_bc_steps: PositiveInt = 1_000
    reanchor_critic_steps: Annotated[int, Field(ge=0)] = 1_000
    # CSIL + the success label (off: 0). Added to the coherent reward on a success's terminal frame
    # (the recorded reward 1: sim success, or the operator's label), which absorbing terminals make
    # worth success_reward / (1 - gamma) more: the coherent reward says "act like the demonstrations",
    # and cannot tell a grasp that holds from one that slips when both look alike. Pure CSIL reads no
    # success labels; this trades that for the task's own signal.
    success_reward: Annotated[float, Field(ge=0)] = 0.0
    # n-step returns for the TD targets of csil and sparse (1: the one-step targets of the references):
    # y = sum_{i<k} gamma^i r_{t+i} + gamma^k V(s_{t+k}), the window stopping early at an episode's
    # end (k <= n_step). A grasp that slips shows in the reward a few steps after the action that
    # caused it; n steps carry that back n times faster than bootstrapping does. The replayed actions
    # inside the window are not corrected for being off-policy (as in DrQ-v2's n-step returns), and
    # the soft value's KL term is counted at the bootstrap state only.
    n_step: PositiveInt = 1
    # How the CSIL actor uses the critic. "reparameterised" (the references'): ascend ∇_a Q at the
    # actor's own samples, which trusts Q wherever the actor goes, including actions no rollout ever
    # tried. "advantage_weighted" (AWR/AWAC-style): maximum likelihood of the batch's recorded actions,
    # each weighted by exp(A / awr_temperature), A(s, a) = Q(s, a) - Q(s, mean action), capped at
    # awr_max_weight; it reads Q only at actions that were executed, so it cannot be led to an
    # extrapolated optimum (bench/critic_guided_eval.py found the critics' extremes fail). Both keep
    # the beta-weighted KL to pi_BC. awr_temperature is in value units.
    actor_update: Literal["reparameterised", "advantage_weighted"] = "reparameterised"
    awr_temperature: Annotated[float, Field(gt=0)] = 1.0
    awr_max_weight: Annotated[float, Field(ge=1)] = 20.0
    sparse_temperature: Annotated[float, Field(ge=0)] = 1e-3  # entropy weight of the sparse baseline
    warmup_env_steps: Annotated[int, Field(ge=0)] = 0  # online steps collected before the first update
    bc: BCConfig = BCConfig()
    critic: CriticConfig = CriticConfig()
    publish_every_updates: PositiveInt = 500
    checkpoint_every_updates: PositiveInt = 2_000
    seed: int = 0

    @model_validator(mode="after")
    def _success_reward_is_csil(self) -> LearnerConfig:
        if self.success_reward and self.method != "csil":
            raise ValueError(
                f"success_reward adds to CSIL's coherent reward; method {self.method} has none"
                " (the sparse baseline's reward is the success label alone)"
            )
        return self

    @model_validator(mode="after")
    def _kl_target_is_csil(self) -> LearnerConfig:
        if self.kl_target is not None and (self.method != "csil" or self.beta <= 0):
            raise ValueError(
                f"kl_target adapts CSIL's KL weight from beta > 0 (method {self.method}, beta {self.beta}):"
                " use method csil and a positive starting beta"
            )
        return self

    @model_validator(mode="after")
    def _actor_update_is_csil(self) -> LearnerConfig:
        if self.actor_update != "reparameterised" and self.method != "csil":
            raise ValueError(
                f"actor_update {self.actor_update} is an option of the CSIL actor; method {self.method}"
                " has its own"
            )
        return self

    @model_validator(mode="after")
    def _bc_ensemble_on_state(self) -> LearnerConfig:
        if self.bc.ensemble > 1 and self.observation != "state":
            raise ValueError(
                "bc.ensemble distils state policies; with observation: images pi_BC trains the shared image"
                " encoder and stays one fit (set bc.ensemble: 1)"
            )
        return self

    @model_validator(mode="after")
    def _reanchoring_needs_successes(self) -> LearnerConfig:
        if self.reanchor_every_env_steps:
            if not self.successes_as_demos:
                raise ValueError(
                    "reanchor_every_env_steps needs successes_as_demos: true (re-anchoring re-fits pi_BC on"
                    " the demonstrations plus the successful rollouts)"
                )
            if self.method not in ("csil", "bc") or self.observation != "state":
                raise ValueError(
                    f"reanchor_every_env_steps works with method csil or bc on state observations,"
                    f" not method {self.method} on {self.observation}"
                )
        return self
