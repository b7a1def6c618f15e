"""The local chunked behaviour-cloning base policy: a CPU stand-in for pi0.5 (DESIGN.md 2.5).

An MLP maps one observation -- the robot state (7 joints + finger) concatenated with the task's
privileged object state -- to a chunk of the next `chunk_size` actions in the env's normalised
`ee_delta` space (ACT-style action chunking without the transformer). It is trained by L1
regression on the episode store's demonstrations and then frozen; `ChunkedBaseRunner` plays its
chunks and re-queries it every k control steps, exactly as it will play pi0.5.

Why this recipe:

- chunking: predicting H future actions from one observation averages less over the demonstrator's
  hesitations than single-step BC and commits to a motion for a few steps, which is what makes a
  small open-loop-within-chunk policy stable (ACT, Zhao et al. 2023); re-querying every k < H
  steps keeps it closed-loop;
- ee_delta actions: deltas of the commanded TCP pose are nearly constant along a waypoint segment
  (the expert's carrot moves at fixed speed), so they are far easier to regress than absolute
  joint targets, whose error the position servo would turn straight into a pose error;
- normalisation: observations mix radians, metres and quaternions; z-scoring them (and the
  actions) with stats stored alongside the weights keeps one learning rate right for all tasks;
- MSE loss (L1 available): see `LocalBCConfig.loss`.

Checkpoints are a `model.safetensors` plus a `config.json` (architecture, dims, normalisation stats,
training info). `LocalBCBase.load` validates everything and never falls back to random weights.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from coirl_ros.constants import ACTION, DEMO_SOURCES, OBS_ENV_STATE, OBS_STATE
from coirl_ros.data import EpisodeStore
from coirl_ros.policies.base_policy import check_calibration_offset

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT = "coirl_local_bc_base"
FORMAT_VERSION = 1
# Floor on normalisation std: a dimension that never varied in the demos (an object that always
# rests at the same height) must not turn a millimetre of change at test time into 1000 sigmas.
MIN_STD = 1e-2
HOW_TO_CREATE = (
    "train one with `coirl_ros.policies.local_bc_base.train_local_bc_base(store, config).save(dir)`"
    " or run `bench/base_bc.py`, which trains and evaluates them"
)


class BaseCheckpointError(ValueError):
    """A local BC base checkpoint is missing, malformed or does not match its config."""


@dataclass(frozen=True)
class LocalBCConfig:
    """Architecture and training settings of the local BC base.

    Defaults train in about 10-15 s on one (shared) CPU core, whatever the number of demos.
    """

    chunk_size: int = 10  # H, actions predicted per query
    hidden: tuple[int, ...] = (256, 256)
    steps: int = 5000  # Adam steps (fixed: training time must not depend on the data size)
    lr: float = 1e-3
    batch_size: int = 256
    weight_decay: float = 0.0
    # MSE, not ACT's L1: the rare, state-dependent +-1 wrist turns at an episode's start are
    # pulled to the median (0, no turn) by L1 when few demos cover them; MSE fits them. Measured on
    # Square with 200 demos: MSE 10/20 successes, L1 1/20 (that run also had extra TCP inputs).
    loss: Literal["l1", "mse"] = "mse"
    # Gaussian noise (in normalised units) on training observations: a cheap way to make the policy
    # see slightly off-demo states, as it will when its own errors compound.
    obs_noise: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden sizes must be a non-empty list of positive ints, got {self.hidden}")
        if self.steps < 0 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(
                f"need steps >= 0, batch_size >= 1, lr > 0; got {self.steps}, {self.batch_size}, {self.lr}"
            )
        if self.loss not in ("l1", "mse"):
            raise ValueError(f"loss must be 'l1' or 'mse', got {self.loss!r}")
        if self.obs_noise < 0:
            raise ValueError(f"obs_noise must be >= 0, got {self.obs_noise}")


@dataclass(frozen=True)
class Normalisation:
    """Per-dimension mean and std of observations and actions (std already floored)."""

    obs_mean: np.ndarray
    obs_std: np.ndarray
    action_mean: np.ndarray
    action_std: np.ndarray

    @classmethod
    def fit(cls, obs: np.ndarray, actions: np.ndarray) -> Normalisation:
        return cls(
            obs.mean(0),
            np.maximum(obs.std(0), MIN_STD),
            actions.mean(0),
            np.maximum(actions.std(0), MIN_STD),
        )

    def to_dict(self) -> dict[str, list[float]]:
        return {k: np.asarray(v, dtype=float).tolist() for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], obs_dim: int, action_dim: int, where: str) -> Normalisation:
        dims = {"obs_mean": obs_dim, "obs_std": obs_dim, "action_mean": action_dim, "action_std": action_dim}
        values = {}
        for key, dim in dims.items():
            if key not in data:
                raise BaseCheckpointError(f"{where}: normalisation entry {key!r} missing")
            arr = np.asarray(data[key], dtype=np.float64)
            if arr.shape != (dim,):
                raise BaseCheckpointError(
                    f"{where}: normalisation entry {key!r} has shape {arr.shape}, expected ({dim},)"
                )
            if not np.all(np.isfinite(arr)) or (key.endswith("std") and np.any(arr <= 0)):
                raise BaseCheckpointError(
                    f"{where}: normalisation entry {key!r} has non-finite or bad values"
                )
            values[key] = arr
        return cls(**values)


@dataclass
class TrainInfo:
    """What training saw and produced (stored in config.json for provenance)."""

    episodes: int = 0
    frames: int = 0
    tasks: list[str] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    loss_first: float = float("nan")  # mean loss over the first 100 steps
    loss_last: float = float("nan")  # mean loss over the last 100 steps


def build_network(obs_dim: int, action_dim: int, chunk_size: int, hidden: tuple[int, ...]) -> nn.Sequential:
    """MLP obs -> chunk_size * action_dim (normalised units); the layout the checkpoint keys follow."""
    layers: list[nn.Module] = []
    width = obs_dim
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, chunk_size * action_dim))
    return nn.Sequential(*layers)


class LocalBCBase:
    """A frozen chunked BC policy implementing `BasePolicy` (see the module docstring).

    `predict_chunk` takes the env's observation dict (keys "state" and, when the task has one,
    "object"; the store's "observation.state" / "observation.environment_state" also work) and
    returns (chunk_size, action_dim) actions in [-1, 1].
    """

    def __init__(
        self,
        network: nn.Sequential,
        norm: Normalisation,
        config: LocalBCConfig,
        state_dim: int,
        env_state_dim: int,
        action_dim: int,
        info: TrainInfo | None = None,
    ) -> None:
        self.network = network.eval()
        for p in self.network.parameters():
            p.requires_grad_(False)  # frozen: the residual learner must never update the base
        self.norm = norm
        self.config = config
        self.chunk_size = config.chunk_size
        self.action_dim = action_dim
        self.state_dim = state_dim
        self.env_state_dim = env_state_dim
        self.info = info or TrainInfo()

    @property
    def obs_dim(self) -> int:
        return input_dim(self.config, self.state_dim, self.env_state_dim)

    # ---- BasePolicy ----------------------------------------------------------------------------
    def observation_vector(self, observation: Mapping[str, np.ndarray]) -> np.ndarray:
        """The flat (state, object state) vector the network sees, checked against its dims."""
        state = np.asarray(_first(observation, ("state", OBS_STATE)), dtype=np.float64).reshape(-1)
        env_state = np.zeros(0)
        if self.env_state_dim:
            env_state = np.asarray(_first(observation, ("object", OBS_ENV_STATE)), np.float64).reshape(-1)
        if state.size != self.state_dim or env_state.size != self.env_state_dim:
            raise ValueError(
                f"observation has {state.size} state + {env_state.size} object values,"
                f" the base was trained on {self.state_dim} + {self.env_state_dim}"
            )
        return observation_features(self.config, state[None], env_state[None])[0]

    def predict_chunk(self, observation: Mapping[str, np.ndarray]) -> np.ndarray:
        """Actions for the next `chunk_size` control steps, shape (chunk_size, action_dim), in [-1, 1]."""
        x = (self.observation_vector(observation) - self.norm.obs_mean) / self.norm.obs_std
        with torch.no_grad():
            out = self.network(torch.as_tensor(x, dtype=torch.float32)[None]).numpy()[0]
        chunk = out.reshape(self.chunk_size, self.action_dim) * self.norm.action_std + self.norm.action_mean
        return np.clip(chunk, -1.0, 1.0)

    def reset(self) -> None:
        """Stateless between queries: nothing to forget."""

    # ---- checkpoints ---------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write `model.safetensors` and `config.json` into `directory` (created if needed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().clone() for k, v in self.network.state_dict().items()}
        save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"format": FORMAT})
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "architecture": "mlp",
            "state_dim": self.state_dim,
            "env_state_dim": self.env_state_dim,
            "action_dim": self.action_dim,
            "config": {**asdict(self.config), "hidden": list(self.config.hidden)},
            "normalisation": self.norm.to_dict(),
            "training": asdict(self.info),
        }
        (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> LocalBCBase:
        """Load and validate a checkpoint written by `save`.

        Raises FileNotFoundError when the directory or a file is missing, `BaseCheckpointError`
        (a ValueError) on a malformed config, missing/unexpected weight keys, wrong shapes or
        non-finite values -- each naming the offending entry.
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"{directory}: no local BC base checkpoint directory; {HOW_TO_CREATE}")
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory / name}: checkpoint file missing; {HOW_TO_CREATE}")
        cfg_path = directory / CONFIG_FILE
        try:
            meta = json.loads(cfg_path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise BaseCheckpointError(f"{cfg_path}: unreadable ({err})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise BaseCheckpointError(f"{cfg_path}: not a local BC base config (format != {FORMAT!r})")
        if meta.get("format_version") != FORMAT_VERSION:
            raise BaseCheckpointError(
                f"{cfg_path}: format_version {meta.get('format_version')!r}, this code reads {FORMAT_VERSION}"
            )
        try:
            raw = dict(meta["config"])
            raw["hidden"] = tuple(int(h) for h in raw["hidden"])
            config = LocalBCConfig(**raw)
            state_dim, env_dim, action_dim = (
                int(meta["state_dim"]),
                int(meta["env_state_dim"]),
                int(meta["action_dim"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise BaseCheckpointError(
                f"{cfg_path}: invalid config entry ({type(err).__name__}: {err})"
            ) from None
        if state_dim < 1 or env_dim < 0 or action_dim < 1:
            raise BaseCheckpointError(f"{cfg_path}: bad dims {state_dim=}, {env_dim=}, {action_dim=}")
        obs_dim = input_dim(config, state_dim, env_dim)
        norm = Normalisation.from_dict(meta.get("normalisation", {}), obs_dim, action_dim, str(cfg_path))
        info_raw = meta.get("training", {})
        info = TrainInfo(**{k: info_raw[k] for k in TrainInfo.__dataclass_fields__ if k in info_raw})

        network = build_network(obs_dim, action_dim, config.chunk_size, config.hidden)
        weights_path = directory / WEIGHTS_FILE
        try:
            tensors = load_file(str(weights_path))
        except Exception as err:  # safetensors raises its own error types for truncated/garbled files
            raise BaseCheckpointError(f"{weights_path}: unreadable ({type(err).__name__}: {err})") from None
        expected = network.state_dict()
        missing = sorted(set(expected) - set(tensors))
        unexpected = sorted(set(tensors) - set(expected))
        if missing:
            raise BaseCheckpointError(
                f"{weights_path}: weight key {missing[0]!r} missing (all missing: {missing})"
            )
        if unexpected:
            raise BaseCheckpointError(
                f"{weights_path}: unexpected weight key {unexpected[0]!r} ({unexpected})"
            )
        for key, want in expected.items():
            got = tensors[key]
            if tuple(got.shape) != tuple(want.shape):
                shapes = f"{tuple(got.shape)}, expected {tuple(want.shape)}"
                raise BaseCheckpointError(f"{weights_path}: weight {key!r} has shape {shapes}")
            if not got.is_floating_point() or not torch.isfinite(got).all():
                raise BaseCheckpointError(f"{weights_path}: weight {key!r} is not finite floating point")
        network.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()}, strict=True)
        return cls(network, norm, config, state_dim, env_dim, action_dim, info)


def input_dim(config: LocalBCConfig, state_dim: int, env_state_dim: int) -> int:
    """Width of the network input for these observation dims."""
    return state_dim + env_state_dim


def observation_features(config: LocalBCConfig, state: np.ndarray, env_state: np.ndarray) -> np.ndarray:
    """[N, state_dim], [N, env_state_dim] -> the [N, input_dim] network input (unnormalised)."""
    return np.concatenate([state, env_state], axis=1).astype(np.float64)


def _first(observation: Mapping[str, np.ndarray], keys: tuple[str, ...]) -> np.ndarray:
    for key in keys:
        if key in observation:
            return observation[key]
    raise KeyError(f"observation has none of {keys}; it has {sorted(observation)}")


# ---- training ----------------------------------------------------------------------------------
def chunk_dataset(
    store: EpisodeStore, config: LocalBCConfig, episodes: list[int] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, TrainInfo]:
    """(obs [N, d_obs], action chunks [N, H, d_a], valid mask [N, H], info) from the store's demos.

    Uses successful (or unlabelled) teleop/scripted episodes. The chunk at frame t is actions
    t..t+H-1; rows past the episode's end are padded and masked out of the loss (as in ACT) rather
    than filled with a made-up "stop" action the demos never showed.
    """
    keys = [OBS_STATE, ACTION] + ([OBS_ENV_STATE] if store.spec.env_state_dim else [])
    obs, chunks, masks, tasks = [], [], [], set()
    n_eps = 0
    indices = store.episode_indices() if episodes is None else episodes
    for index in indices:
        ep = store.read_episode(index, keys)
        if ep.meta.source not in DEMO_SOURCES or ep.meta.success is False:
            continue
        act = ep.data[ACTION].astype(np.float64)
        if np.abs(act).max() > 1.0 + 1e-6:
            raise ValueError(
                f"{store.root}: episode {index} has actions outside [-1, 1]; the local BC base acts in"
                " the normalised ee_delta space (generate demos with"
                " `coirl demos generate --action-mode ee_delta`)"
            )
        state = ep.data[OBS_STATE].astype(np.float64)
        env_state = ep.data[OBS_ENV_STATE] if store.spec.env_state_dim else np.zeros((len(state), 0))
        obs.append(observation_features(config, state, env_state.astype(np.float64)))
        t_len = len(act)
        idx = np.arange(t_len)[:, None] + np.arange(config.chunk_size)[None]
        masks.append(idx < t_len)
        chunks.append(act[np.minimum(idx, t_len - 1)])
        tasks.add(ep.meta.task)
        n_eps += 1
    if not n_eps:
        raise ValueError(f"{store.root}: no successful teleop/scripted episodes to train the base on")
    info = TrainInfo(episodes=n_eps, frames=sum(len(o) for o in obs), tasks=sorted(tasks))
    return np.concatenate(obs), np.concatenate(chunks), np.concatenate(masks), info


def train_local_bc_base(
    store: EpisodeStore,
    config: LocalBCConfig | None = None,
    episodes: list[int] | None = None,
    log_every: int = 0,
) -> LocalBCBase:
    """Fit the chunked BC base on `store`'s demonstrations (all of them, or `episodes`).

    Deterministic for a given store and config: seeded init and minibatch sampling, fixed step
    count. Call `torch.set_num_threads(1)` beforehand on shared machines; the net is small.
    """
    config = config or LocalBCConfig()
    obs, chunks, masks, info = chunk_dataset(store, config, episodes)
    action_dim = chunks.shape[2]
    # Stats over valid chunk rows only, i.e. over the recorded actions themselves.
    norm = Normalisation.fit(obs, chunks[:, 0])
    x = torch.as_tensor((obs - norm.obs_mean) / norm.obs_std, dtype=torch.float32)
    y = torch.as_tensor((chunks - norm.action_mean) / norm.action_std, dtype=torch.float32).flatten(1)
    m = torch.as_tensor(np.repeat(masks, action_dim, axis=1), dtype=torch.float32)

    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    network = build_network(x.shape[1], action_dim, config.chunk_size, config.hidden)
    opt = torch.optim.Adam(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    losses: list[float] = []
    start = time.perf_counter()
    network.train()
    for step in range(config.steps):
        idx = torch.randint(0, len(x), (config.batch_size,), generator=gen)
        xb = x[idx]
        if config.obs_noise > 0:
            xb = xb + config.obs_noise * torch.randn(xb.shape, generator=gen)
        err = network(xb) - y[idx]
        per = err.abs() if config.loss == "l1" else err.square()
        loss = (per * m[idx]).sum() / m[idx].sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if log_every and (step + 1) % log_every == 0:
            print(
                f"  base-bc step {step + 1}/{config.steps} loss {np.mean(losses[-log_every:]):.4f}",
                flush=True,
            )
    info.steps = config.steps
    info.seconds = time.perf_counter() - start
    if losses:
        window = min(100, len(losses))
        info.loss_first = float(np.mean(losses[:window]))
        info.loss_last = float(np.mean(losses[-window:]))
    if not all(math.isfinite(v) for v in losses[-10:]):
        raise RuntimeError(f"local BC base training diverged (last losses {losses[-10:]})")
    return LocalBCBase(
        network, norm, config, store.spec.state_dim, store.spec.env_state_dim, action_dim, info
    )


def miscalibrated(base: LocalBCBase, offset_m: tuple[float, float, float]) -> LocalBCBase:
    """The same frozen base, seeing the object `offset_m` (x, y, z) from where it is.

    Its object-position normalisation is shifted, which is what deploying it with the statistics of
    a cell calibrated differently does: the network is untouched and the shift is in its checkpoint,
    so every node that loads the base (policy_node, the learner's demonstration filler) sees it.
    """
    if base.env_state_dim < 3:
        raise ValueError(f"the base reads {base.env_state_dim} object values; an offset needs a position")
    for axis in offset_m:
        check_calibration_offset(axis)
    norm = base.norm
    obs_mean = norm.obs_mean.copy()
    obs_mean[base.state_dim : base.state_dim + 3] -= np.asarray(offset_m, dtype=obs_mean.dtype)
    return LocalBCBase(
        base.network,
        replace(norm, obs_mean=obs_mean),
        base.config,
        base.state_dim,
        base.env_state_dim,
        base.action_dim,
        base.info,
    )
