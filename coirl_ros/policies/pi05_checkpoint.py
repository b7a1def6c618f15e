"""Finding and validating a pi0.5 checkpoint offline: files, weights, tokenizer, normalisation stats.

Why this exists: LeRobot's `PI05Policy.from_pretrained` prints a warning and returns a randomly
initialised 3B-parameter model when the weights cannot be downloaded or read, and loads a state
dict with missing keys after printing them. On a robot that is a policy emitting noise. Here every
step either succeeds completely or raises `Pi05CheckpointError` saying what was looked for and how
to provide it without network access (this stack never downloads at run time):

- `resolve_checkpoint`: a local directory, or a hub id already in the local Hugging Face cache;
- `load_weights_strict`: every parameter of the built model must come from `model.safetensors`
  with the right shape and finite values; unexpected keys are errors too;
- `load_tokenizer`: the configured one, `<checkpoint>/tokenizer/`, or the one the checkpoint's
  preprocessor names, from local files only;
- `normaliser_stats`/`stats_from_store`: pi0.5 discretises the *normalised* state into its prompt,
  and LeRobot's normaliser silently passes values through when it has no statistics for a key, so
  missing statistics are an error, not a no-op.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from coirl_ros.constants import ACTION, DEMO_SOURCES, OBS_STATE
from coirl_ros.data import CorruptEpisodeError, EpisodeStore

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "policy_preprocessor.json"
POSTPROCESSOR_FILE = "policy_postprocessor.json"
TOKENIZER_DIR = "tokenizer"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HOW_TO_GET_WEIGHTS = (
    "this stack never downloads at run time. On a machine with internet access run"
    " `hf download lerobot/pi05_base --local-dir pi05_base` (or your fine-tuned repo),"
    " copy that directory to this workstation and set policy.yaml base.checkpoint to its path"
    " (a hub id works only if the repo is already in the local Hugging Face cache, HF_HOME)"
)
HOW_TO_GET_TOKENIZER = (
    "the PaliGemma tokenizer is gated on the hub: on a connected machine accept its licence, `hf auth login`,"
    " run `hf download google/paligemma-3b-pt-224 --include 'tokenizer*' --include 'special_tokens_map.json'"
    " --local-dir paligemma_tokenizer`, copy that directory here and set base.pi05.tokenizer to it (or copy"
    " it to <checkpoint>/tokenizer/)"
)
# Statistics each LeRobot normalisation mode reads.
STATS_FOR_MODE = {
    "MEAN_STD": ("mean", "std"),
    "MIN_MAX": ("min", "max"),
    "QUANTILES": ("q01", "q99"),
    "QUANTILE10": ("q10", "q90"),
    "IDENTITY": (),
}


class Pi05CheckpointError(ValueError):
    """A pi0.5 checkpoint, tokenizer or its statistics are missing, malformed or do not match."""


def resolve_checkpoint(checkpoint: str) -> Path:
    """The local directory of `checkpoint` (a path, or a hub id present in the local HF cache)."""
    if not checkpoint:
        raise Pi05CheckpointError(
            f"policy.yaml base.checkpoint is empty: no pi0.5 checkpoint given; {HOW_TO_GET_WEIGHTS}"
        )
    path = Path(checkpoint).expanduser()
    if path.exists():
        if not path.is_dir():
            raise Pi05CheckpointError(
                f"{path}: is a file; a pi0.5 checkpoint is a directory ({CONFIG_FILE}, {WEIGHTS_FILE}, ...)"
            )
        return path
    if not HUB_ID.match(checkpoint):
        raise Pi05CheckpointError(f"{path}: no such checkpoint directory; {HOW_TO_GET_WEIGHTS}")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(checkpoint, local_files_only=True))
    except Exception as err:  # LocalEntryNotFoundError, OfflineModeIsEnabled, validation errors
        raise Pi05CheckpointError(
            f"{checkpoint}: not a local directory and not in the local Hugging Face cache"
            f" ({type(err).__name__}); {HOW_TO_GET_WEIGHTS}"
        ) from None


def check_files(directory: Path) -> None:
    """Every file the loader reads must be there before anything is built."""
    for name, what in (
        (CONFIG_FILE, "policy config"),
        (WEIGHTS_FILE, "weights"),
        (PREPROCESSOR_FILE, "pre-processor pipeline"),
        (POSTPROCESSOR_FILE, "post-processor pipeline"),
    ):
        if not (directory / name).is_file():
            hint = (
                HOW_TO_GET_WEIGHTS
                if name == WEIGHTS_FILE
                else (
                    "checkpoints saved by LeRobot >= 0.4 (lerobot-train, save_pretrained) contain it; "
                    + HOW_TO_GET_WEIGHTS
                )
            )
            raise Pi05CheckpointError(
                f"{directory / name}: {what} file missing, refusing to run pi0.5 with random weights; {hint}"
            )


def _tied_groups(state_dict: Mapping[str, Any]) -> list[list[str]]:
    """Parameter names grouped by shared storage (tied weights are saved once)."""
    groups: dict[tuple[int, int], list[str]] = defaultdict(list)
    for key, tensor in state_dict.items():
        groups[(tensor.untyped_storage().data_ptr(), tensor.storage_offset())].append(key)
    return list(groups.values())


def _listing(keys: list[str], limit: int = 5) -> str:
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(repr(k) for k in keys[:limit]) + more


def load_weights_strict(policy: Any, weights_path: Path) -> int:
    """Load `weights_path` into `policy` (a built `PI05Policy`); return the number of tensors read.

    Uses LeRobot's own key migration (openpi naming -> LeRobot naming, the "model." prefix) and
    then insists on a complete, exact match: any missing parameter, unexpected key, wrong shape or
    non-finite value raises `Pi05CheckpointError` naming it.
    """
    import torch
    from safetensors.torch import load_file

    try:
        raw = load_file(str(weights_path))
    except Exception as err:  # safetensors raises its own types for truncated/garbled files
        raise Pi05CheckpointError(
            f"{weights_path}: unreadable weights ({type(err).__name__}: {err}); {HOW_TO_GET_WEIGHTS}"
        ) from None
    fixed = policy._fix_pytorch_state_dict_keys(raw, policy.config)  # LeRobot's own key migration
    tensors = {k if k.startswith("model.") else f"model.{k}": v for k, v in fixed.items()}
    expected = policy.state_dict()
    missing = [g[0] for g in _tied_groups(expected) if not any(k in tensors for k in g)]
    if missing:
        raise Pi05CheckpointError(
            f"{weights_path}: {len(missing)} of {len(expected)} weights missing ({_listing(missing)});"
            " refusing to run pi0.5 with randomly initialised weights. The file is incomplete or from a"
            f" different architecture; {HOW_TO_GET_WEIGHTS}"
        )
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise Pi05CheckpointError(
            f"{weights_path}: {len(unexpected)} weights the pi0.5 architecture does not have"
            f" ({_listing(unexpected)}); is this a checkpoint of another policy type?"
        )
    for key, value in tensors.items():
        want = tuple(expected[key].shape)
        if tuple(value.shape) != want:
            raise Pi05CheckpointError(
                f"{weights_path}: weight {key!r} has shape {tuple(value.shape)}, expected {want}"
            )
        if not value.is_floating_point() or not bool(torch.isfinite(value).all()):
            raise Pi05CheckpointError(f"{weights_path}: weight {key!r} is not finite floating point")
    # strict=False only because tied aliases (one storage, several names) are saved once; the
    # checks above already guarantee every storage is filled.
    policy.load_state_dict(tensors, strict=False)
    return len(tensors)


def load_tokenizer(configured: str, directory: Path, recorded: str | None) -> tuple[Any, str]:
    """(tokenizer, where it came from): `configured`, else `<checkpoint>/tokenizer/`, else the
    name the checkpoint's preprocessor records; local files only."""
    from transformers import AutoTokenizer

    candidates = [configured] if configured else []
    if not configured:
        if (directory / TOKENIZER_DIR).is_dir():
            candidates.append(str(directory / TOKENIZER_DIR))
        if recorded:
            candidates.append(recorded)
    errors = []
    for name in candidates:
        try:
            return AutoTokenizer.from_pretrained(name, local_files_only=True), name
        except Exception as err:  # OSError for missing files, ValueError for broken ones
            errors.append(f"{name!r}: {type(err).__name__}")
    tried = (
        "; ".join(errors)
        if errors
        else "no base.tokenizer set, no <checkpoint>/tokenizer/, none named by the checkpoint"
    )
    raise Pi05CheckpointError(
        f"{directory}: no pi0.5 tokenizer found locally (tried {tried}); {HOW_TO_GET_TOKENIZER}"
    )


def recorded_tokenizer_name(preprocessor_config: Mapping[str, Any]) -> str | None:
    """The tokenizer name a saved `policy_preprocessor.json` records, if any."""
    for step in preprocessor_config.get("steps", []):
        if step.get("registry_name") == "tokenizer_processor":
            return (step.get("config") or {}).get("tokenizer_name")
    return None


def required_stats(norm_map: Mapping[Any, Any], feature_type: str) -> tuple[str, ...]:
    """Statistic names the normaliser reads for one feature type ("STATE", "ACTION")."""
    for key, mode in norm_map.items():
        if getattr(key, "value", key) == feature_type:
            return STATS_FOR_MODE.get(getattr(mode, "value", mode), ())
    return ()


def check_stats(
    stats: Mapping[str, Mapping[str, Any]], key: str, names: tuple[str, ...], dim: int, where: str
) -> None:
    """`stats[key]` must hold finite `names`, each of shape (dim,)."""
    have = stats.get(key) or {}
    for name in names:
        if name not in have:
            raise Pi05CheckpointError(
                f"{where}: no {name!r} normalisation statistic for {key!r} (has {sorted(have) or 'none'});"
                " pi0.5 would see unnormalised values. Set policy.yaml base.pi05.stats: store and"
                " base.pi05.stats_store to the episode store of your demonstrations to compute them"
            )
        arr = np.asarray(have[name], dtype=np.float64).reshape(-1)
        if arr.shape != (dim,) or not np.all(np.isfinite(arr)):
            raise Pi05CheckpointError(
                f"{where}: statistic {key}.{name} has shape {arr.shape}"
                f" (finite: {bool(np.all(np.isfinite(arr)))}), expected ({dim},) finite values"
            )


def stats_from_store(store: EpisodeStore) -> dict[str, dict[str, np.ndarray]]:
    """LeRobot-style statistics (mean, std, min, max, q01, q10, q90, q99, count) of the store's
    demonstration states and actions -- what a pi0.5 fine-tuned on those demos was normalised with."""
    states, actions = [], []
    for index in store.episode_indices():
        if store.read_meta(index).source not in DEMO_SOURCES:
            continue
        try:
            ep = store.read_episode(index, [OBS_STATE, ACTION])
        except CorruptEpisodeError:
            continue  # a corrupt episode is reported by `coirl store verify`; statistics do without it
        states.append(ep.data[OBS_STATE])
        actions.append(ep.data[ACTION])
    if not states:
        raise Pi05CheckpointError(
            f"{store.root}: no readable demonstration episode to compute pi0.5 statistics from"
        )
    out = {}
    for key, parts in ((OBS_STATE, states), (ACTION, actions)):
        x = np.concatenate(parts).astype(np.float64)
        q01, q10, q90, q99 = np.quantile(x, [0.01, 0.10, 0.90, 0.99], axis=0)
        out[key] = {
            "mean": x.mean(0),
            "std": x.std(0),
            "min": x.min(0),
            "max": x.max(0),
            "q01": q01,
            "q10": q10,
            "q90": q90,
            "q99": q99,
            "count": np.array([len(x)]),
        }
        out[key] = {k: v.astype(np.float32) for k, v in out[key].items()}
    return out
