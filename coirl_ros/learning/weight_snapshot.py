"""Versioned snapshots of the residual policy's weights: what the learner publishes, the policy node loads.

The asynchronous learner publishes the residual policy's state_dict every so often; the policy node (over a
ROS topic carrying bytes, or from a file) swaps it in between two control ticks. Those bytes come from another
process, possibly from another run or an older build, so the receiver trusts nothing: `from_bytes` checks the
container (safetensors, with every piece of metadata in its `__metadata__` header) and that every tensor is
finite floating point, and `validate_for` checks that the weights fit *this* module and *this* policy spec
(same observation layout, composition, scale, architecture) and are newer than what is loaded. `load_into`
checks everything before it touches the module, so a rejected snapshot never leaves a half-loaded policy
driving the robot.

safetensors rather than `torch.save`: it is a flat, documented format that cannot execute code when read
(pickle can), and its header carries a string->string metadata dict, which is where the version, spec and
provenance go. Every rejection raises `SnapshotError` with a message naming what was wrong, expected and got,
because the reader is an operator looking at a log.

No training code here: this module only packs, checks and unpacks weights.
"""

from __future__ import annotations

import json
import math
import os
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from coirl_ros.durable_files import write_atomically

__all__ = [
    "SNAPSHOT_FORMAT",
    "PolicySpec",
    "SnapshotError",
    "WeightSnapshot",
    "read_snapshot",
    "write_snapshot",
]

# Bump the suffix on any incompatible change to the metadata layout; readers reject what they do not know
# rather than guess, since a misread spec would load weights into the wrong observation layout.
SNAPSHOT_FORMAT = "coirl.snapshot/1"

# Kept local (not imported from coirl_ros.policies) so the learning core stays free of the acting side.
_COMPOSITIONS = ("residual", "ensemble")

# safetensors' own reader refuses headers above 100 MB; checking it first keeps a garbage length prefix from
# making us slice or JSON-parse something huge.
_MAX_HEADER_BYTES = 100_000_000


class SnapshotError(ValueError):
    """A weight snapshot was rejected; the message says what was wrong (key, expected, got)."""


@dataclass(frozen=True)
class PolicySpec:
    """What a set of weights is for: two snapshots are interchangeable only if their specs are equal.

    `obs_keys` are the observation arrays concatenated, in order, into the policy input (e.g.
    ("observation.state", "observation.environment_state", "action.base")): the same shapes with a different
    order would load fine and act nonsense, so the order is part of the spec. `extra` holds any further
    architecture fields (e.g. HetStat's bottleneck and num_features) as (name, value) string pairs; it is
    sorted on construction so that equality does not depend on the order they were given in.
    """

    obs_dim: int
    action_dim: int
    obs_keys: tuple[str, ...]
    composition: str
    scale: float
    architecture: str
    hidden_sizes: tuple[int, ...]
    extra: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        # Normalise containers (from_dict hands over JSON lists) so equality and hashing are by value.
        object.__setattr__(self, "obs_keys", tuple(str(k) for k in self.obs_keys))
        object.__setattr__(self, "hidden_sizes", tuple(_as_int(h, "hidden_sizes") for h in self.hidden_sizes))
        pairs = self.extra.items() if isinstance(self.extra, Mapping) else self.extra
        extra = tuple(sorted((str(k), str(v)) for k, v in pairs))
        object.__setattr__(self, "extra", extra)
        object.__setattr__(self, "obs_dim", _as_int(self.obs_dim, "obs_dim"))
        object.__setattr__(self, "action_dim", _as_int(self.action_dim, "action_dim"))
        if isinstance(self.scale, bool) or not isinstance(self.scale, int | float):
            raise SnapshotError(f"spec field scale: expected a number, got {self.scale!r}")
        object.__setattr__(self, "scale", float(self.scale))

        if self.obs_dim <= 0:
            raise SnapshotError(f"spec field obs_dim: expected > 0, got {self.obs_dim}")
        if self.action_dim <= 0:
            raise SnapshotError(f"spec field action_dim: expected > 0, got {self.action_dim}")
        if not self.obs_keys:
            raise SnapshotError("spec field obs_keys: expected at least one key, got ()")
        if len(set(self.obs_keys)) != len(self.obs_keys):
            raise SnapshotError(f"spec field obs_keys: expected distinct keys, got {self.obs_keys}")
        if self.composition not in _COMPOSITIONS:
            raise SnapshotError(
                f"spec field composition: expected one of {_COMPOSITIONS}, got {self.composition!r}"
            )
        if not math.isfinite(self.scale):
            raise SnapshotError(f"spec field scale: expected a finite number, got {self.scale}")
        if not isinstance(self.architecture, str) or not self.architecture:
            raise SnapshotError(
                f"spec field architecture: expected a non-empty string, got {self.architecture!r}"
            )
        if any(h <= 0 for h in self.hidden_sizes):
            raise SnapshotError(f"spec field hidden_sizes: expected positive sizes, got {self.hidden_sizes}")
        names = [k for k, _ in extra]
        if len(set(names)) != len(names):
            raise SnapshotError(f"spec field extra: expected distinct names, got {names}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples as lists, `extra` as a name -> value object)."""
        return {
            "obs_dim": self.obs_dim,
            "action_dim": self.action_dim,
            "obs_keys": list(self.obs_keys),
            "composition": self.composition,
            "scale": self.scale,
            "architecture": self.architecture,
            "hidden_sizes": list(self.hidden_sizes),
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolicySpec:
        """Inverse of `to_dict`; unknown or missing fields are a `SnapshotError` (newer writer, or a bug)."""
        if not isinstance(data, Mapping):
            raise SnapshotError(f"spec: expected a JSON object, got {type(data).__name__}")
        expected = set(_SPEC_FIELDS)
        got = set(data)
        missing, unexpected = sorted(expected - got - {"extra"}), sorted(got - expected)
        if missing or unexpected:
            raise SnapshotError(f"spec fields: missing {missing}, unexpected {unexpected}")
        try:
            return cls(**{k: data[k] for k in _SPEC_FIELDS if k in data})
        except SnapshotError:
            raise
        except (TypeError, ValueError, AttributeError) as e:
            raise SnapshotError(f"spec: malformed ({e})") from e

    def diff(self, other: PolicySpec) -> list[str]:
        """Mismatching fields as "field: expected X, got Y", with `self` the expected side; [] if equal."""
        out = []
        for name in _SPEC_FIELDS:
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                out.append(f"{name}: expected {mine!r}, got {theirs!r}")
        return out


_SPEC_FIELDS = (
    "obs_dim",
    "action_dim",
    "obs_keys",
    "composition",
    "scale",
    "architecture",
    "hidden_sizes",
    "extra",
)


@dataclass(frozen=True, eq=False)  # eq=False: comparing dicts of tensors with == has no single truth value
class WeightSnapshot:
    """One published version of the policy's weights plus what is needed to decide whether to load them.

    `version` increases monotonically within a learner run (`run_id`), so a receiver keeping the last
    loaded version rejects stale or replayed snapshots. `config_hash` identifies the configuration the
    learner ran with; `updates` and `env_steps` are provenance for logs. Construction checks the metadata
    and that every tensor is finite floating point, so a diverged learner cannot publish NaN weights either.
    """

    version: int
    config_hash: str
    spec: PolicySpec
    tensors: dict[str, torch.Tensor]
    method: str
    created_unix: float
    updates: int
    env_steps: int
    run_id: str

    def __post_init__(self) -> None:
        for name in ("version", "updates", "env_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SnapshotError(f"{name}: expected an integer >= 0, got {value!r}")
        for name in ("config_hash", "method", "run_id"):
            if not isinstance(getattr(self, name), str):
                raise SnapshotError(f"{name}: expected a string, got {getattr(self, name)!r}")
        if not isinstance(self.spec, PolicySpec):
            raise SnapshotError(f"spec: expected a PolicySpec, got {type(self.spec).__name__}")
        if (
            isinstance(self.created_unix, bool)
            or not isinstance(self.created_unix, int | float)
            or not math.isfinite(self.created_unix)
        ):
            raise SnapshotError(f"created_unix: expected a finite number, got {self.created_unix!r}")
        object.__setattr__(self, "created_unix", float(self.created_unix))
        _check_tensors(self.tensors)

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_module(
        cls,
        module: nn.Module,
        spec: PolicySpec,
        version: int,
        *,
        config_hash: str,
        method: str,
        run_id: str,
        updates: int = 0,
        env_steps: int = 0,
        created_unix: float | None = None,
    ) -> WeightSnapshot:
        """Snapshot `module`'s current state_dict as detached CPU copies.

        Copies, not views: the learner keeps stepping the optimiser in place after publishing, and a
        snapshot whose tensors alias the live parameters would silently change under the receiver.
        """
        tensors = {
            name: t.detach().to("cpu", copy=True).contiguous() for name, t in module.state_dict().items()
        }
        return cls(
            version=version,
            config_hash=config_hash,
            spec=spec,
            tensors=tensors,
            method=method,
            created_unix=time.time() if created_unix is None else created_unix,
            updates=updates,
            env_steps=env_steps,
            run_id=run_id,
        )

    # ---------------------------------------------------------------- bytes

    def to_bytes(self) -> bytes:
        """safetensors bytes, with every piece of metadata as strings in the header's `__metadata__`."""
        metadata = {
            "format": SNAPSHOT_FORMAT,
            "version": str(self.version),
            "config_hash": self.config_hash,
            "spec": json.dumps(self.spec.to_dict(), sort_keys=True),
            "method": self.method,
            # repr round-trips a float exactly; str() would too on py3, but repr says so.
            "created_unix": repr(self.created_unix),
            "updates": str(self.updates),
            "env_steps": str(self.env_steps),
            "run_id": self.run_id,
        }
        # safetensors refuses non-contiguous and memory-sharing tensors; contiguous() copies only if needed,
        # and tensors sharing storage (tied weights) are the caller's to untie before publishing.
        return safetensors.torch.save({k: v.contiguous() for k, v in self.tensors.items()}, metadata=metadata)

    @classmethod
    def from_bytes(cls, data: bytes) -> WeightSnapshot:
        """Parse and check bytes from `to_bytes`; anything malformed is a `SnapshotError`."""
        metadata = _read_metadata(data)

        expected_keys = {
            "format",
            "version",
            "config_hash",
            "spec",
            "method",
            "created_unix",
            "updates",
            "env_steps",
            "run_id",
        }
        # Check the format tag first: a different format version may legitimately have different keys.
        fmt = metadata.get("format")
        if fmt != SNAPSHOT_FORMAT:
            raise SnapshotError(f"metadata format: expected {SNAPSHOT_FORMAT!r}, got {fmt!r}")
        missing = sorted(expected_keys - set(metadata))
        if missing:
            raise SnapshotError(f"metadata: missing keys {missing}")
        # The Rust reader raises its own SafetensorError (offsets past the end, bad dtype...); any failure
        # there means "bad bytes".
        try:
            tensors = safetensors.torch.load(bytes(data))
        except Exception as e:
            raise SnapshotError(f"not a readable safetensors container ({type(e).__name__}: {e})") from e
        try:
            spec_dict = json.loads(metadata["spec"])
        except json.JSONDecodeError as e:
            raise SnapshotError(f"metadata spec: expected JSON, got {metadata['spec'][:80]!r} ({e})") from e
        try:
            created = float(metadata["created_unix"])
        except ValueError as e:
            got = metadata["created_unix"]
            raise SnapshotError(f"metadata created_unix: expected a number, got {got!r}") from e
        return cls(
            version=_parse_count(metadata, "version"),
            config_hash=metadata["config_hash"],
            spec=PolicySpec.from_dict(spec_dict),
            tensors=tensors,
            method=metadata["method"],
            created_unix=created,
            updates=_parse_count(metadata, "updates"),
            env_steps=_parse_count(metadata, "env_steps"),
            run_id=metadata["run_id"],
        )

    # ---------------------------------------------------------------- loading

    def validate_for(self, module: nn.Module, spec: PolicySpec, min_version: int | None = None) -> None:
        """Raise `SnapshotError` unless this snapshot can be loaded into `module` as a `spec` policy.

        `spec` is the receiver's own (expected) spec. `min_version` is the version currently loaded, if any:
        only a strictly newer snapshot is accepted, so a stale or replayed message cannot roll weights back.
        Tensor contents are checked again (finite floating point): `tensors` is a plain dict, mutable after
        construction, and the check costs microseconds for a policy-sized network.
        """
        if min_version is not None and self.version <= min_version:
            raise SnapshotError(
                f"stale snapshot: version {self.version} is not newer than the loaded version {min_version}"
            )
        mismatches = spec.diff(self.spec)
        if mismatches:
            raise SnapshotError("policy spec mismatch: " + "; ".join(mismatches))
        target = module.state_dict()
        missing = sorted(set(target) - set(self.tensors))
        unexpected = sorted(set(self.tensors) - set(target))
        if missing or unexpected:
            raise SnapshotError(f"tensor names mismatch: missing {missing}, unexpected {unexpected}")
        _check_tensors(self.tensors)
        problems = []
        for name, want in target.items():
            got = self.tensors[name]
            if got.shape != want.shape:
                problems.append(f"{name}: expected shape {tuple(want.shape)}, got {tuple(got.shape)}")
            if got.dtype != want.dtype:
                problems.append(f"{name}: expected dtype {want.dtype}, got {got.dtype}")
        if problems:
            raise SnapshotError("tensor mismatch: " + "; ".join(problems))

    def load_into(self, module: nn.Module, spec: PolicySpec, min_version: int | None = None) -> None:
        """Validate (see `validate_for`), then copy the weights into `module`; all or nothing.

        Everything that could make `load_state_dict` fail part-way (names, shapes, dtypes) is checked first,
        so a rejected snapshot leaves `module` exactly as it was.
        """
        self.validate_for(module, spec, min_version)
        module.load_state_dict(self.tensors, strict=True)


# -------------------------------------------------------------------- files


def write_snapshot(path: str | os.PathLike[str], snapshot: WeightSnapshot) -> Path:
    """Write `snapshot` to `path` atomically (`write_atomically`: a reader sees the old snapshot or the
    new one, never a torn file, even across a power cut); returns the path."""
    return write_atomically(path, snapshot.to_bytes())


def read_snapshot(path: str | os.PathLike[str]) -> WeightSnapshot:
    """Read and check a snapshot file; a missing or malformed file is a `SnapshotError` naming the path."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise SnapshotError(f"{path}: snapshot file not found") from e
    except OSError as e:
        raise SnapshotError(f"{path}: cannot read snapshot ({e})") from e
    try:
        return WeightSnapshot.from_bytes(data)
    except SnapshotError as e:
        raise SnapshotError(f"{path}: {e}") from e


# -------------------------------------------------------------------- helpers


def _as_int(value: Any, name: str) -> int:
    """An int field from a spec, refusing bools and non-integral floats (JSON may hand over either)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise SnapshotError(f"spec field {name}: expected an integer, got {value!r}")
    return value


def _parse_count(metadata: Mapping[str, str], key: str) -> int:
    """A non-negative decimal integer from the string metadata; "+1", " 1", "1.0" and "-1" are refused."""
    raw = metadata[key]
    if not (raw.isascii() and raw.isdigit()):
        raise SnapshotError(f"metadata {key}: expected an integer >= 0, got {raw!r}")
    return int(raw)


def _read_metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` dict from a safetensors header, checking the framing on the way.

    safetensors' Python API only exposes metadata through a file handle, so the (simple, documented) header
    is read here: 8 bytes little-endian header length, then that many bytes of JSON.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SnapshotError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < 8:
        raise SnapshotError(f"not a safetensors container: {len(data)} bytes, expected at least 8")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > _MAX_HEADER_BYTES:
        raise SnapshotError(
            f"not a safetensors container: header length {header_len} exceeds {_MAX_HEADER_BYTES}"
        )
    if 8 + header_len > len(data):
        raise SnapshotError(
            f"truncated or not safetensors: header needs {8 + header_len} bytes, got {len(data)}"
        )
    try:
        header = json.loads(data[8 : 8 + header_len])
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SnapshotError(f"not a safetensors container: header is not JSON ({e})") from e
    if not isinstance(header, dict):
        raise SnapshotError(f"not safetensors: header is a {type(header).__name__}, not an object")
    metadata = header.get("__metadata__")
    if metadata is None:
        raise SnapshotError("missing metadata: the safetensors header has no __metadata__")
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise SnapshotError("malformed metadata: __metadata__ must map strings to strings")
    return metadata


def _check_tensors(tensors: Any) -> None:
    """Every entry a finite floating-point tensor under a string name; one message lists every bad one."""
    if not isinstance(tensors, Mapping):
        raise SnapshotError(f"tensors: expected a dict of name -> tensor, got {type(tensors).__name__}")
    problems = []
    for name, t in tensors.items():
        if not isinstance(name, str) or not isinstance(t, torch.Tensor):
            got = f"{type(name).__name__} -> {type(t).__name__}"
            problems.append(f"{name!r}: expected str -> Tensor, got {got}")
        elif not t.is_floating_point():
            # Integer buffers (e.g. BatchNorm's num_batches_tracked) are not policy weights; refusing them
            # keeps the "all finite floats" guarantee simple. Residual policies here have none.
            problems.append(f"{name}: expected a floating-point tensor, got dtype {t.dtype}")
        else:
            bad = int((~torch.isfinite(t)).sum())
            if bad:
                n_nan = int(torch.isnan(t).sum())
                problems.append(
                    f"{name}: {bad} non-finite values of {t.numel()} ({n_nan} NaN, {bad - n_nan} inf)"
                )
    if problems:
        raise SnapshotError("bad tensors: " + "; ".join(problems))
