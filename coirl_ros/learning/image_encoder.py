"""Per-camera image encoders with spatial-softmax keypoints (DESIGN.md 2.5, "Vision").

Each camera gets its own small conv net whose last layer has K channels; a spatial softmax turns each
channel into the expected image position of its activation (Levine, Finn, Darrell, Abbeel 2016,
"End-to-End Training of Deep Visuomotor Policies"; robomimic's SpatialSoftmax):

    p_k(i, j) = softmax_{(i, j)}( h_k(i, j) / T )               over the H·W positions of channel k
    x_k = Σ_ij p_k(i, j) · u_j,     y_k = Σ_ij p_k(i, j) · v_i    u, v: pixel centres on [-1, 1]

so an image becomes 2K numbers, (x_k, y_k) per keypoint, each in [-1, 1]. Why keypoints rather than
flattened conv features: a manipulation policy needs *where* the gripper and the object are, and the
soft arg-max reports exactly that, with sub-cell precision, in a low-dimensional code that is smooth in
the object's position (a flattened feature map says where only implicitly, by which cells are active). The
temperature T sets how peaked p_k is; learnable by default, as in robomimic.

`ObservationEncoder` runs one `CameraEncoder` per camera and concatenates every camera's keypoints with
the low-dimensional proprioceptive state: [kp_cam1, kp_cam2, …, state]. In training it applies
DrQ's random-shift augmentation (Kostrikov, Yarats, Fergus 2021; Yarats et al. 2021, DrQ-v2): pad by
replicating the border, crop back at a random offset. It is the cheap regulariser that makes
off-policy RL from pixels work from few samples, which is this learner's regime.

Speed: the learner trains at batch ≈ 256 with two cameras, so the conv net sees 512 images per update.
The default net is sized for a CPU (CI, laptops): a stride-4 8×8 stem (the Nature-DQN first layer)
brings 84×84 down to 20×20 before any 32-channel 3×3 conv runs, and there is no normalisation layer
(GroupNorm doubled the CPU time in measurements; DrQ's encoder has none either). See
`CameraEncoder` for the numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from coirl_ros.constants import OBS_STATE, image_key

__all__ = ["CameraEncoder", "ObservationEncoder", "SpatialSoftmax", "random_shift"]

# (out_channels, kernel, stride) per conv layer, no padding. On 84×84: 84 → 20 → 18 → 16, so the
# keypoints are soft arg-maxes over a 16×16 grid (robomimic's ResNet-18 encoder softmaxes over 3×3).
DEFAULT_CONV_LAYERS: tuple[tuple[int, int, int], ...] = ((32, 8, 4), (32, 3, 1), (32, 3, 1))


def _pixel_centres(n: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Centres of n pixels on [-1, 1] (first at −1, last at +1); a single pixel sits at 0."""
    if n == 1:
        return torch.zeros(1, device=device, dtype=dtype)
    return torch.linspace(-1.0, 1.0, n, device=device, dtype=dtype)


class SpatialSoftmax(nn.Module):
    """Feature maps [B, C, H, W] → expected (x, y) per channel [B, 2C], ordered (x_0, y_0, x_1, y_1, …).

    x runs along the width (column), y along the height (row); both in [-1, 1] with −1 at the first
    pixel (left / top). The softmax runs in float32 even under autocast: the exponentials of a half
    precision map would overflow at low temperature.
    """

    def __init__(self, temperature: float = 1.0, learnable_temperature: bool = True) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        # Stored as a log so a learnt temperature stays positive under any gradient step.
        log_t = torch.tensor(math.log(temperature))
        if learnable_temperature:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)

    @property
    def temperature(self) -> float:
        return float(self.log_temperature.exp())

    def forward(self, features: Tensor) -> Tensor:
        if features.ndim != 4:
            raise ValueError(f"SpatialSoftmax expects feature maps [B, C, H, W], got {tuple(features.shape)}")
        b, c, h, w = features.shape
        logits = features.float().reshape(b, c, h * w) / self.log_temperature.exp()
        attention = torch.softmax(logits, dim=-1).reshape(b, c, h, w)
        u = _pixel_centres(w, features.device, attention.dtype)
        v = _pixel_centres(h, features.device, attention.dtype)
        # E[x] only needs the column marginal and E[y] the row marginal: two H+W dot products per
        # channel instead of multiplying the whole H×W map by two coordinate grids.
        x = (attention.sum(dim=2) * u).sum(dim=-1)
        y = (attention.sum(dim=3) * v).sum(dim=-1)
        return torch.stack((x, y), dim=-1).reshape(b, 2 * c)


def random_shift(images: Tensor, pad: int = 4, generator: torch.Generator | None = None) -> Tensor:
    """DrQ random shift of channels-last images [B, H, W, C]: replicate-pad by `pad`, crop back at random.

    Every image gets its own integer offset (dy, dx) ∈ [−pad, pad]². Replicate padding followed by a
    crop equals reading pixel (clamp(i + dy), clamp(j + dx)), which is how it is computed: one
    `index_select` of whole C-channel pixels (3× faster on CPU than 3-D advanced indexing, no padded
    copy), for any dtype, uint8 included, so images can be augmented before the float conversion.
    Same shape, dtype and device as the input. For training only.
    """
    if images.ndim != 4:
        raise ValueError(f"random_shift expects images [B, H, W, C], got {tuple(images.shape)}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if pad == 0:
        return images
    b, h, w, c = images.shape
    device = images.device
    gen_device = generator.device if generator is not None else torch.device("cpu")
    shifts = torch.randint(-pad, pad + 1, (b, 2), generator=generator, device=gen_device).to(device)
    rows = (torch.arange(h, device=device) + shifts[:, :1]).clamp_(0, h - 1)  # [B, H]
    cols = (torch.arange(w, device=device) + shifts[:, 1:]).clamp_(0, w - 1)  # [B, W]
    first = torch.arange(b, device=device)[:, None, None] * (h * w)  # flat index of each image's pixel 0
    index = (first + rows[:, :, None] * w + cols[:, None, :]).reshape(-1)
    return images.reshape(b * h * w, c).index_select(0, index).reshape(b, h, w, c)


def _as_float_nchw(images: Tensor) -> Tensor:
    """[B, H, W, 3] uint8 (0-255) or float (0-1) → float32 [B, 3, H, W] centred on 0, in [-0.5, 0.5].

    The permute is a view: a contiguous channels-last batch becomes an NCHW tensor in channels_last
    memory format, which CPU (oneDNN) and GPU (cuDNN) convolutions run faster than NCHW-contiguous.
    """
    x = images.permute(0, 3, 1, 2)
    scale = 1.0 / 255.0 if x.dtype == torch.uint8 else 1.0
    # In place on the fresh float copy: one allocation instead of three, which shows at 512 images.
    out = x.float() if x.dtype != torch.float32 else x.clone()
    return out.mul_(scale).sub_(0.5)


class CameraEncoder(nn.Module):
    """One camera's images [B, H, W, 3] → K spatial-softmax keypoints [B, 2K] (or a Linear of them).

    uint8 images are scaled by 1/255; float images are taken to be in [0, 1] already. Conv layers are
    unpadded (padding would put fake edges at the border, which keypoints could latch onto) and ReLU-
    activated, optionally GroupNorm-ed; a 1×1 conv maps to K keypoint channels, unactivated, since the
    spatial softmax wants signed logits. Any image large enough for the conv stack works (64×64 to
    128×128 with the defaults: grids of 11×11 to 27×27). Keypoint ±1 is the centre of the outermost
    output cell, which lies a few pixels inside the image border (the unpadded convs' margin).

    Cost: ≈ 8M multiply-adds per 84×84 image (half that at 64×64). Forward + backward + Adam step at
    batch 256 with two 84×84 cameras (512 images) took ≈ 0.27 s of CPU time on one thread of the dev
    machine's Xeon, about 75 GFLOP/s, i.e. compute-bound; a DrQ-style stack (3×3 stride-2 stem, then
    stride 1) was 2.1 s, GroupNorm ≈ 0.6 s, and `conv_layers=((32, 8, 4), (32, 3, 2))` (a 9×9 grid)
    ≈ 0.13 s. Tens of milliseconds on a CPU would need ≲ 1M multiply-adds per image; on a GPU these should
    take a few ms (not measured here).
    """

    def __init__(
        self,
        num_keypoints: int = 32,
        conv_layers: Sequence[tuple[int, int, int]] = DEFAULT_CONV_LAYERS,
        out_dim: int | None = None,
        norm: Literal["none", "group"] = "none",
        temperature: float = 1.0,
        learnable_temperature: bool = True,
    ) -> None:
        super().__init__()
        if num_keypoints <= 0:
            raise ValueError(f"num_keypoints must be > 0, got {num_keypoints}")
        if norm not in ("none", "group"):
            raise ValueError(f"norm must be 'none' or 'group', got {norm!r}")
        layers: list[nn.Module] = []
        channels = 3
        for out_channels, kernel, stride in conv_layers:
            layers.append(nn.Conv2d(channels, out_channels, kernel, stride))
            if norm == "group":
                # 8 groups (or fewer for thin layers): the per-sample normalisation of robomimic-style
                # encoders, unlike batch norm independent of what else is in the batch.
                layers.append(nn.GroupNorm(math.gcd(8, out_channels), out_channels))
            layers.append(nn.ReLU(inplace=True))  # conv/GroupNorm backward never reads its output
            channels = out_channels
        layers.append(nn.Conv2d(channels, num_keypoints, kernel_size=1))
        self.convs = nn.Sequential(*layers)
        self.spatial_softmax = SpatialSoftmax(temperature, learnable_temperature)
        self.keypoint_dim = 2 * num_keypoints
        self.head = nn.Linear(self.keypoint_dim, out_dim) if out_dim is not None else None
        self.out_dim = out_dim if out_dim is not None else self.keypoint_dim
        self.min_size = self._min_input_size(conv_layers)
        # The inputs arrive channels_last (see _as_float_nchw); weights in the same format spare oneDNN
        # a reorder per call.
        self.convs.to(memory_format=torch.channels_last)

    @staticmethod
    def _min_input_size(conv_layers: Sequence[tuple[int, int, int]]) -> int:
        """Smallest image side for which every unpadded conv still has at least one output position."""
        size = 1
        for _, kernel, stride in reversed(conv_layers):
            size = (size - 1) * stride + kernel
        return size

    def feature_maps(self, images: Tensor) -> Tensor:
        """The keypoint logits [B, K, H', W'] (before the spatial softmax); for inspection and plots."""
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected images [B, H, W, 3], got {tuple(images.shape)}")
        if min(images.shape[1:3]) < self.min_size:
            raise ValueError(
                f"images of {images.shape[1]}x{images.shape[2]} are too small for the conv stack "
                f"(at least {self.min_size}x{self.min_size})"
            )
        return self.convs(_as_float_nchw(images))

    def forward(self, images: Tensor) -> Tensor:
        keypoints = self.spatial_softmax(self.feature_maps(images))
        return self.head(keypoints) if self.head is not None else keypoints


class ObservationEncoder(nn.Module):
    """Batch dict → [keypoints of every camera (in `cameras` order), state] [B, out_dim].

    `cameras` maps each camera name to its (height, width), as `EpisodeSpec.cameras` does (a mapping or
    a sequence of (name, (h, w)) pairs). Images are read from `prefix + image_key(camera)`, so
    `prefix=NEXT` encodes the successor observations of a sampled batch; they may be numpy arrays
    straight from the sampler, moved to the encoder's device while still uint8 (4× less to copy than
    float). `state_dim=0` encodes images only.

    With `augment=True`, training mode applies `random_shift(pad=shift_pad)` to every camera
    independently; eval mode (acting, evaluation) never augments.
    """

    def __init__(
        self,
        cameras: Mapping[str, tuple[int, int]] | Sequence[tuple[str, tuple[int, int]]],
        state_dim: int,
        num_keypoints: int = 32,
        augment: bool = True,
        shift_pad: int = 4,
        **encoder_kwargs: Any,
    ) -> None:
        super().__init__()
        cams = dict(cameras)
        if not cams:
            raise ValueError("ObservationEncoder needs at least one camera")
        if state_dim < 0:
            raise ValueError(f"state_dim must be >= 0, got {state_dim}")
        if shift_pad < 0:
            raise ValueError(f"shift_pad must be >= 0, got {shift_pad}")
        for name in cams:
            # ModuleDict keys become parameter-name segments, so a dot would break state_dict keys.
            if not name or "." in name:
                raise ValueError(f"camera names must be non-empty and free of '.', got {name!r}")
        self.image_sizes: dict[str, tuple[int, int]] = {n: (int(h), int(w)) for n, (h, w) in cams.items()}
        self.state_dim = state_dim
        self.augment = augment
        self.shift_pad = shift_pad
        self.encoders = nn.ModuleDict(
            {name: CameraEncoder(num_keypoints, **encoder_kwargs) for name in self.image_sizes}
        )
        for name, (h, w) in self.image_sizes.items():
            need = self.encoders[name].min_size
            if min(h, w) < need:
                raise ValueError(f"camera {name!r}: {h}x{w} images are too small (at least {need}x{need})")
        self.out_dim = sum(enc.out_dim for enc in self.encoders.values()) + state_dim

    @property
    def camera_names(self) -> list[str]:
        return list(self.image_sizes)

    def forward(
        self,
        batch: Mapping[str, Tensor | np.ndarray],
        state: Tensor | np.ndarray | None = None,
        prefix: str = "",
    ) -> Tensor:
        """Encode one batch; `state` [B, state_dim] defaults to `batch[prefix + OBS_STATE]`."""
        device = next(self.parameters()).device
        features: list[Tensor] = []
        batch_size: int | None = None
        for name, (h, w) in self.image_sizes.items():
            key = prefix + image_key(name)
            if key not in batch:
                raise ValueError(f"missing camera images {key!r}; the batch has keys {sorted(batch)}")
            images = torch.as_tensor(batch[key], device=device)
            if images.ndim != 4 or tuple(images.shape[1:]) != (h, w, 3):
                raise ValueError(f"{key!r}: expected images [B, {h}, {w}, 3], got {tuple(images.shape)}")
            if batch_size is not None and images.shape[0] != batch_size:
                raise ValueError(f"{key!r}: batch size {images.shape[0]}, other cameras have {batch_size}")
            batch_size = images.shape[0]
            if self.training and self.augment:
                images = random_shift(images, self.shift_pad)
            features.append(self.encoders[name](images))
        if self.state_dim:
            state_key = prefix + OBS_STATE
            if state is None:
                if state_key not in batch:
                    raise ValueError(f"missing state {state_key!r} and no `state` given")
                state = batch[state_key]
            state_t = torch.as_tensor(state, device=device, dtype=torch.float32)
            if tuple(state_t.shape) != (batch_size, self.state_dim):
                raise ValueError(
                    f"state: expected [{batch_size}, {self.state_dim}], got {tuple(state_t.shape)}"
                )
            features.append(state_t)
        return torch.cat(features, dim=-1)
