"""The acting module a `PolicySpec` describes, built from the spec alone.

A policy node on the robot receives weights from a learner that may run on another machine: it can
neither open the learner's episode store nor rebuild its Learner. Everything the module's architecture
needs travels in the spec (`hidden_sizes`; HetStat's `bottleneck` and `num_features`; an image policy's
cameras, keypoints and convolutions in `extra`, see `image_policy_extra`), so the receiver builds the
module from the snapshot it got and `load_acting_policy` checks every tensor against it. The
Learner builds its own published module the same way, so sender and receiver cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from coirl_ros.constants import image_key
from coirl_ros.learning.image_policy import ImageResidualPolicy, make_image_encoder
from coirl_ros.learning.residual_policy import ResidualPolicy
from coirl_ros.learning.weight_snapshot import PolicySpec, SnapshotError, WeightSnapshot

STATE_ARCHITECTURE = "hetstat"
IMAGE_ARCHITECTURE = "spatial_softmax+hetstat"


def image_policy_extra(
    cameras: Mapping[str, tuple[int, int]] | Sequence[tuple[str, tuple[int, int]]],
    num_keypoints: int,
    conv_layers: Sequence[Sequence[int]],
) -> tuple[tuple[str, str], ...]:
    """`PolicySpec.extra` fields that pin the encoder: a receiver can rebuild it from the spec alone (the
    format `_camera_sizes` and `_conv_layers` below read)."""
    cams = dict(cameras)
    return (
        ("image_sizes", ",".join(f"{name}:{h}x{w}" for name, (h, w) in cams.items())),
        ("num_keypoints", str(num_keypoints)),
        ("conv_layers", ",".join("x".join(str(int(v)) for v in layer) for layer in conv_layers)),
    )


def acting_policy_from_spec(spec: PolicySpec) -> ResidualPolicy | ImageResidualPolicy:
    """A fresh, untrained module of the architecture `spec` names (random weights, to load into)."""
    extra = dict(spec.extra)
    policy = ResidualPolicy(
        spec.obs_dim,
        spec.action_dim,
        spec.hidden_sizes,
        _positive_int(extra, "bottleneck"),
        _positive_int(extra, "num_features"),
    )
    if spec.architecture == STATE_ARCHITECTURE:
        return policy
    if spec.architecture == IMAGE_ARCHITECTURE:
        # No DrQ shift: the encoder acts in eval mode, and the shift holds no weights.
        encoder = make_image_encoder(
            _camera_sizes(extra), _positive_int(extra, "num_keypoints"), _conv_layers(extra), shift_pad=0
        )
        return ImageResidualPolicy(encoder, policy)
    raise SnapshotError(
        f"spec architecture {spec.architecture!r}: this version builds {STATE_ARCHITECTURE!r} and"
        f" {IMAGE_ARCHITECTURE!r}"
    )


def load_acting_policy(snapshot: WeightSnapshot, min_version: int | None = None) -> nn.Module:
    """The module `snapshot.spec` names, holding the snapshot's weights; `SnapshotError` if they do not
    fit it (`WeightSnapshot.validate_for`: names, shapes, dtypes, finite values, version floor).

    Everything is checked against a shape-only copy on PyTorch's meta device before anything is
    allocated: the spec comes from the wire, and a corrupt one naming a huge network must be refused,
    not built.
    """
    with torch.device("meta"):
        shapes = _build(snapshot.spec)
    snapshot.validate_for(shapes, snapshot.spec, min_version)
    module = _build(snapshot.spec)
    module.load_state_dict(snapshot.tensors, strict=True)
    return module


def _build(spec: PolicySpec) -> nn.Module:
    try:
        return acting_policy_from_spec(spec)
    except SnapshotError:
        raise
    except (ValueError, TypeError, RuntimeError) as err:  # sizes the layers themselves refuse
        raise SnapshotError(f"cannot build the architecture the spec names: {err}") from err


def image_sizes(spec: PolicySpec) -> dict[str, tuple[int, int]]:
    """image key -> (height, width) the encoder was trained at ({} for a state policy). The robot's
    cameras may stream larger frames than the episode store keeps, so the control loop resizes them."""
    return {image_key(name): size for name, size in _camera_sizes(dict(spec.extra)).items()}


def _positive_int(extra: dict[str, str], name: str) -> int:
    raw = extra.get(name)
    if raw is None or not (raw.isascii() and raw.isdigit()) or int(raw) <= 0:
        raise SnapshotError(f"spec extra {name}: expected an integer > 0, got {raw!r}")
    return int(raw)


def _camera_sizes(extra: dict[str, str]) -> dict[str, tuple[int, int]]:
    """Camera sizes from `image_sizes`, e.g. "front:48x48,wrist:48x64" -> {"front": (48, 48), ...}."""
    out: dict[str, tuple[int, int]] = {}
    for item in filter(None, extra.get("image_sizes", "").split(",")):
        try:
            name, size = item.split(":")
            h, w = (int(v) for v in size.split("x"))
        except ValueError:
            raise SnapshotError(f"spec extra image_sizes: expected name:HxW items, got {item!r}") from None
        if not name or h <= 0 or w <= 0:
            raise SnapshotError(f"spec extra image_sizes: expected name:HxW items, got {item!r}")
        out[name] = (h, w)
    return out


def _conv_layers(extra: dict[str, str]) -> list[tuple[int, int, int]]:
    """Convolutions from `conv_layers`, e.g. "32x3x2,32x3x1" -> [(32, 3, 2), (32, 3, 1)] (CxKxS)."""
    layers = []
    for item in filter(None, extra.get("conv_layers", "").split(",")):
        try:
            c, k, s = (int(v) for v in item.split("x"))
        except ValueError:
            raise SnapshotError(f"spec extra conv_layers: expected CxKxS items, got {item!r}") from None
        layers.append((c, k, s))
    if not layers:
        raise SnapshotError("spec extra conv_layers: expected at least one CxKxS layer")
    return layers
