"""Image encoders (DESIGN.md 2.5): spatial-softmax geometry, encoder shapes and input checks, DrQ random
shift, and a small learning check that gradients flow through the keypoints to the conv weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from coirl_ros.constants import NEXT, OBS_STATE, image_key
from coirl_ros.learning.image_encoder import CameraEncoder, ObservationEncoder, SpatialSoftmax, random_shift

torch.set_num_threads(1)

STATE_DIM = 5


def _images(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _batch(cameras: dict[str, tuple[int, int]], n: int = 4, prefix: str = "") -> dict[str, np.ndarray]:
    batch = {
        prefix + image_key(cam): _images(n, h, w, seed=i) for i, (cam, (h, w)) in enumerate(cameras.items())
    }
    batch[prefix + OBS_STATE] = np.random.default_rng(9).normal(size=(n, STATE_DIM)).astype(np.float32)
    return batch


# --- spatial softmax ---------------------------------------------------------------------------------


def test_spatial_softmax_finds_a_single_bright_pixel():
    h, w = 8, 10
    pixels = [(3, 5), (0, 0), (7, 9)]  # (row, col) per channel: an interior pixel and two corners
    features = torch.zeros(2, len(pixels), h, w)
    for k, (r, c) in enumerate(pixels):
        features[:, k, r, c] = 50.0  # e^50 against 79 × e^0: the softmax is one-hot to ~1e-20
    out = SpatialSoftmax(temperature=1.0, learnable_temperature=False)(features)
    assert out.shape == (2, 2 * len(pixels))
    expected = torch.tensor([[-1 + 2 * c / (w - 1), -1 + 2 * r / (h - 1)] for r, c in pixels]).flatten()
    torch.testing.assert_close(out[0], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], expected, atol=1e-5, rtol=0)
    # the corners land exactly on the ends of the range
    torch.testing.assert_close(out[0, 2:4], torch.tensor([-1.0, -1.0]))
    torch.testing.assert_close(out[0, 4:6], torch.tensor([1.0, 1.0]))


def test_spatial_softmax_range_uniform_map_and_temperature():
    features = torch.randn(3, 4, 6, 7) * 20
    out = SpatialSoftmax()(features)
    assert out.shape == (3, 8)
    assert out.abs().max() <= 1.0
    # a flat map puts the expectation at the image centre
    torch.testing.assert_close(
        SpatialSoftmax()(torch.zeros(1, 2, 5, 9)), torch.zeros(1, 4), atol=1e-6, rtol=0
    )
    # a low temperature sharpens the same logits toward the arg-max
    logits = torch.zeros(1, 1, 5, 5)
    logits[0, 0, 4, 4], logits[0, 0, 0, 0] = 1.0, 0.5
    soft = SpatialSoftmax(temperature=10.0, learnable_temperature=False)(logits)
    sharp = SpatialSoftmax(temperature=0.01, learnable_temperature=False)(logits)
    torch.testing.assert_close(sharp, torch.ones(1, 2), atol=1e-4, rtol=0)
    assert soft.abs().max() < 0.2
    # learnable: a parameter; fixed: a buffer that travels with state_dict but is not optimised
    assert len(list(SpatialSoftmax(learnable_temperature=True).parameters())) == 1
    fixed = SpatialSoftmax(temperature=2.0, learnable_temperature=False)
    assert len(list(fixed.parameters())) == 0 and "log_temperature" in fixed.state_dict()
    assert fixed.temperature == pytest.approx(2.0)
    with pytest.raises(ValueError, match="temperature"):
        SpatialSoftmax(temperature=0.0)


# --- encoders ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cameras", [{"front": (64, 64), "wrist": (64, 64)}, {"front": (128, 128), "wrist": (84, 96)}]
)
def test_observation_encoder_shapes(cameras):
    enc = ObservationEncoder(cameras, STATE_DIM, num_keypoints=8)
    assert enc.out_dim == 2 * 2 * 8 + STATE_DIM
    assert enc.camera_names == ["front", "wrist"]
    batch = _batch(cameras, n=3)
    for mode in (enc.train, enc.eval):
        mode()
        out = enc(batch)
        assert out.shape == (3, enc.out_dim) and out.dtype == torch.float32
        assert out[:, :32].abs().max() <= 1.0  # keypoints
        torch.testing.assert_close(out[:, 32:], torch.as_tensor(batch[OBS_STATE]))  # state, untouched
    # successor observations through the NEXT prefix, tensors instead of numpy, an explicit state
    next_batch = {k: torch.from_numpy(v) for k, v in _batch(cameras, n=3, prefix=NEXT).items()}
    assert enc(next_batch, prefix=NEXT).shape == (3, enc.out_dim)
    assert enc(batch, state=torch.zeros(3, STATE_DIM))[:, 32:].eq(0).all()


def test_camera_encoder_shapes_projection_and_input_scaling():
    enc = CameraEncoder(num_keypoints=6).eval()
    assert enc.out_dim == 12
    for h, w in ((64, 64), (84, 84), (128, 96)):
        assert enc(torch.from_numpy(_images(2, h, w))).shape == (2, 12)
    projected = CameraEncoder(num_keypoints=6, out_dim=20, norm="group")
    assert projected.out_dim == 20 and projected(torch.from_numpy(_images(2, 64, 64))).shape == (2, 20)
    # uint8 is scaled by 1/255; float images are taken as [0, 1]: the same picture gives the same code
    images = _images(2, 64, 64)
    from_uint8 = enc(torch.from_numpy(images))
    from_float = enc(torch.from_numpy(images.astype(np.float32) / 255.0))
    torch.testing.assert_close(from_uint8, from_float, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="too small"):
        enc(torch.zeros(1, 16, 16, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        enc(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))  # channels-first by mistake


def test_observation_encoder_clear_errors():
    cameras = {"front": (64, 64), "wrist": (64, 64)}
    enc = ObservationEncoder(cameras, STATE_DIM, num_keypoints=4)
    batch = _batch(cameras)
    missing = {k: v for k, v in batch.items() if k != image_key("wrist")}
    with pytest.raises(ValueError, match=r"missing camera images 'observation\.images\.wrist'"):
        enc(missing)
    wrong = dict(batch, **{image_key("front"): _images(4, 84, 84)})
    with pytest.raises(ValueError, match=r"observation\.images\.front.*\[B, 64, 64, 3\].*\(4, 84, 84, 3\)"):
        enc(wrong)
    with pytest.raises(ValueError, match="batch size"):
        enc(dict(batch, **{image_key("wrist"): _images(3, 64, 64)}))
    with pytest.raises(ValueError, match="missing state"):
        enc({k: v for k, v in batch.items() if k != OBS_STATE})
    with pytest.raises(ValueError, match=r"state: expected \[4, 5\]"):
        enc(batch, state=torch.zeros(4, 3))
    with pytest.raises(ValueError, match="too small"):
        ObservationEncoder({"front": (16, 16)}, STATE_DIM)
    with pytest.raises(ValueError, match=r"free of '\.'"):
        ObservationEncoder({"cam.left": (64, 64)}, STATE_DIM)
    images_only = {k: v for k, v in batch.items() if k != OBS_STATE}
    assert ObservationEncoder(cameras, 0, num_keypoints=4)(images_only).shape == (4, 16)


def test_augmentation_only_in_training_mode():
    cameras = {"front": (64, 64)}
    enc = ObservationEncoder(cameras, STATE_DIM, num_keypoints=8, augment=True, shift_pad=4)
    batch = _batch(cameras, n=8)
    enc.eval()
    torch.testing.assert_close(enc(batch), enc(batch))  # deterministic when acting
    enc.train()
    torch.manual_seed(0)
    assert not torch.allclose(enc(batch), enc(batch))  # two draws of the random shift
    enc.augment = False
    torch.testing.assert_close(enc(batch), enc.eval()(batch))


# --- random shift ------------------------------------------------------------------------------------


def test_random_shift_shape_dtype_identity_and_reproducibility():
    images = torch.from_numpy(_images(6, 20, 24))
    shifted = random_shift(images, pad=3)
    assert shifted.shape == images.shape and shifted.dtype == torch.uint8
    assert random_shift(images, pad=0) is images
    floats = images.float() / 255
    assert random_shift(floats, pad=2).dtype == torch.float32
    a = random_shift(images, 4, generator=torch.Generator().manual_seed(3))
    b = random_shift(images, 4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="pad"):
        random_shift(images, pad=-1)


def test_random_shift_translates_with_replicated_border():
    n, h, w, pad = 64, 12, 10, 3
    # every pixel holds its own (row, col): the output tells exactly where each pixel was read from
    rows = torch.arange(h)[:, None].expand(h, w)
    cols = torch.arange(w)[None, :].expand(h, w)
    images = torch.stack((rows, cols, torch.zeros_like(rows)), dim=-1).expand(n, h, w, 3).contiguous()
    out = random_shift(images, pad=pad, generator=torch.Generator().manual_seed(0))
    # at (pad, pad) no clamping can happen, so it reveals each image's offset
    dy, dx = out[:, pad, pad, 0] - pad, out[:, pad, pad, 1] - pad
    assert dy.abs().max() <= pad and dx.abs().max() <= pad
    assert len(set(zip(dy.tolist(), dx.tolist(), strict=True))) > 10  # many distinct offsets, not all zero
    expected_rows = (torch.arange(h) + dy[:, None]).clamp(0, h - 1)  # replicate padding = clamped reads
    expected_cols = (torch.arange(w) + dx[:, None]).clamp(0, w - 1)
    assert torch.equal(out[..., 0], expected_rows[:, :, None].expand(n, h, w))
    assert torch.equal(out[..., 1], expected_cols[:, None, :].expand(n, h, w))


# --- learning ----------------------------------------------------------------------------------------


def _square_images(
    n: int, g: torch.Generator, size: int = 32, side: int = 5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Black images with one white side×side square at a random place; target: its centre in [-1, 1]²."""
    top = torch.randint(0, size - side + 1, (n,), generator=g)
    left = torch.randint(0, size - side + 1, (n,), generator=g)
    ii = torch.arange(size)
    inside_r = (ii[None] >= top[:, None]) & (ii[None] < top[:, None] + side)
    inside_c = (ii[None] >= left[:, None]) & (ii[None] < left[:, None] + side)
    mask = inside_r[:, :, None] & inside_c[:, None, :]
    images = (mask[..., None].expand(n, size, size, 3) * 255).to(torch.uint8)
    centre = lambda start: (start + (side - 1) / 2) / (size - 1) * 2 - 1  # noqa: E731
    return images, torch.stack((centre(left), centre(top)), dim=-1).float()


def test_encoder_learns_to_locate_a_square():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    encoder = CameraEncoder(num_keypoints=8, conv_layers=((16, 4, 2), (16, 3, 1)))  # 32 → 15 → 13 grid
    head = nn.Linear(encoder.out_dim, 2)
    model = nn.Sequential(encoder, head)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    test_images, test_targets = _square_images(256, torch.Generator().manual_seed(1))

    def test_loss() -> float:
        with torch.no_grad():
            return float((model(test_images) - test_targets).square().mean())

    initial = test_loss()
    for _ in range(200):
        images, targets = _square_images(32, g)
        loss = (model(images) - targets).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    final = test_loss()
    assert final < 0.05 * initial, (initial, final)


def test_gradients_reach_every_conv_weight_and_the_temperature():
    cameras = {"front": (64, 64), "wrist": (64, 64)}
    enc = ObservationEncoder(cameras, STATE_DIM, num_keypoints=8)
    out = enc(_batch(cameras))
    (out * torch.randn_like(out)).sum().backward()
    for name, param in enc.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    convs = [m for m in enc.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2 * 4  # three conv layers and the keypoint 1×1 per camera
