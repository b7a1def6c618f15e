"""Residual weights swapped between ticks: validated off the loop, every accept and reject reported."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from coirl_ros.configs import LearnerConfig
from coirl_ros.configs.learner import BCConfig, CriticConfig
from coirl_ros.constants import ACTION_BASE, OBS_ENV_STATE, OBS_STATE
from coirl_ros.control.policy_actor import PolicyActor
from coirl_ros.control.weight_swap import ReceiverCapabilities, SwapReport, WeightSwapper
from coirl_ros.data import EpisodeSpec, EpisodeStore
from coirl_ros.learning import weight_snapshot
from coirl_ros.learning.learner import Learner

SPEC = EpisodeSpec(state_dim=8, action_dim=7, fps=20.0, env_state_dim=3)


def tiny_config(hidden: int = 16, seed: int = 0) -> LearnerConfig:
    return LearnerConfig(
        bc=BCConfig(hidden_sizes=[hidden, hidden], bottleneck=4, num_features=16),
        critic=CriticConfig(hidden_sizes=[16, 16], num_bins=11),
        seed=seed,
    )


def make_learner(tmp_path: Path, name: str = "a", hidden: int = 16, scale: float = 0.1) -> Learner:
    store = EpisodeStore.create(tmp_path / f"{name}.zarr", SPEC, exist_ok=True)
    return Learner(tiny_config(hidden), store, "residual", scale)


@pytest.fixture
def learner(tmp_path: Path) -> Learner:
    return make_learner(tmp_path)


def receiver_for(learner: Learner, **changes: object) -> ReceiverCapabilities:
    """What a policy node running this learner's residual can run (its spec's composition, scale,
    action size and inputs), with `changes`."""
    spec = learner.policy_spec()
    fields = {
        "composition": spec.composition,
        "scale": spec.scale,
        "action_dim": spec.action_dim,
        "inputs": frozenset(spec.obs_keys),
    }
    return ReceiverCapabilities(**(fields | changes))


def collect(learner: Learner) -> tuple[WeightSwapper, list[SwapReport]]:
    reports: list[SwapReport] = []
    return WeightSwapper(receiver_for(learner), reports.append), reports


def tampered(shapes_from: bytes, metadata_from: bytes) -> bytes:
    """One snapshot's tensors under another's metadata (spec): weights that do not fit their spec."""
    return safetensors.torch.save(
        safetensors.torch.load(shapes_from), metadata=weight_snapshot._read_metadata(metadata_from)
    )


def nan_bytes(data: bytes) -> bytes:
    """A snapshot whose metadata is valid but whose first tensor holds NaN (as a diverged learner's)."""
    tensors = safetensors.torch.load(data)
    name = sorted(tensors)[0]
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    return safetensors.torch.save(tensors, metadata=weight_snapshot._read_metadata(data))


def test_valid_weights_are_staged_and_taken_once(learner: Learner) -> None:
    swapper, reports = collect(learner)
    snap = learner.snapshot()
    report = swapper.validate(snap.to_bytes())
    assert report.accepted and report.version == 1 and report.run_id == learner.state.run_id
    loaded = swapper.take()
    assert loaded is not None and loaded.version == 1 and swapper.take() is None
    for name, tensor in learner.actor.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[name], tensor)
    assert loaded.module is not learner.actor and not loaded.module.training
    assert [r.accepted for r in reports] == [True]


def test_rejections_name_the_problem(tmp_path: Path, learner: Learner) -> None:
    swapper, reports = collect(learner)
    good = learner.snapshot().to_bytes()
    assert swapper.validate(good).accepted
    cases = {
        "garbage": b"\x00\x01not a snapshot at all",
        "stale": good,  # the same version again: a replay
        "nan": nan_bytes(learner.snapshot().to_bytes()),
        "shape": tampered(
            make_learner(tmp_path, "wide", hidden=32).snapshot().to_bytes(), learner.snapshot().to_bytes()
        ),
        "spec": make_learner(tmp_path, "scaled", scale=0.3).snapshot().to_bytes(),
    }
    for data in cases.values():
        assert not swapper.validate(data).accepted
    reasons = dict(zip(cases, (r.reason for r in reports[1:]), strict=True))
    assert "safetensors" in reasons["garbage"]
    assert "stale snapshot: version 1" in reasons["stale"]
    assert "non-finite" in reasons["nan"]
    assert "tensor mismatch" in reasons["shape"] and "expected shape (16, " in reasons["shape"]
    assert "policy spec mismatch" in reasons["spec"] and "scale 0.3" in reasons["spec"]
    assert swapper.take().version == 1  # only the valid one was ever staged
    assert swapper.take() is None and swapper.rejected == len(cases)


def test_a_new_learner_run_restarts_versions_but_an_older_run_is_a_replay(tmp_path: Path) -> None:
    first = make_learner(tmp_path, "first")
    swapper, _ = collect(first)
    for _ in range(5):
        snap = first.snapshot()
    assert swapper.validate(snap.to_bytes()).accepted and snap.version == 5
    old_run = make_learner(tmp_path, "old")
    old_bytes = old_run.snapshot().to_bytes()  # another run, created before the restarted one below
    time.sleep(0.01)
    restarted = make_learner(tmp_path, "restarted")  # a learner started from scratch: version 1, new run
    fresh = restarted.snapshot()
    assert fresh.version == 1 and fresh.run_id != first.state.run_id
    assert swapper.validate(fresh.to_bytes()).accepted
    assert swapper.take().run_id == fresh.run_id
    # The other run's snapshot was created before the active one: a stale latched message, rejected.
    report = swapper.validate(old_bytes)
    assert not report.accepted and "older run" in report.reason


def test_take_never_waits_for_validation(learner: Learner) -> None:
    release = threading.Event()

    def slow_prepare(module: torch.nn.Module) -> None:
        release.wait(10)  # the worker is busy with this snapshot (a large module, a slow machine)

    swapper = WeightSwapper(receiver_for(learner), prepare=slow_prepare).start()
    try:
        swapper.submit(learner.snapshot().to_bytes())
        start = time.perf_counter()
        for _ in range(100):
            assert swapper.take() is None  # the loop goes on with its current weights
        assert time.perf_counter() - start < 1.0
        release.set()
        deadline = time.monotonic() + 10
        loaded = None
        while loaded is None and time.monotonic() < deadline:
            loaded = swapper.take()
            time.sleep(0.005)
        assert loaded is not None and loaded.version == 1
    finally:
        swapper.close()


def test_weights_are_built_from_their_own_spec_within_what_the_receiver_runs(tmp_path: Path) -> None:
    """The receiver needs no learner and no episode store (the learner may be on another machine): a
    learner restarted with other network sizes is adopted; what this side cannot run is refused."""
    narrow = make_learner(tmp_path, "narrow")
    swapper, reports = collect(narrow)
    assert swapper.validate(narrow.snapshot().to_bytes()).accepted
    wide = make_learner(tmp_path, "wide", hidden=32)
    assert swapper.validate(wide.snapshot().to_bytes()).accepted, reports[-1]
    loaded = swapper.take()
    assert loaded.spec.hidden_sizes == (32, 32)
    for name, tensor in wide.actor.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[name], tensor)

    data = make_learner(tmp_path, "later").snapshot().to_bytes()
    refusals = {
        "dimensions": receiver_for(narrow, action_dim=8),
        "['observation.environment_state'], which this policy does not receive": receiver_for(
            narrow, inputs=frozenset({OBS_STATE, ACTION_BASE})
        ),
        "this policy composes ensemble at scale 0.1": receiver_for(narrow, composition="ensemble"),
    }
    for reason, receiver in refusals.items():
        report = WeightSwapper(receiver).validate(data)
        assert not report.accepted and reason in report.reason, report.reason


def test_a_spec_naming_a_huge_network_is_refused_before_anything_is_allocated(learner: Learner) -> None:
    data = learner.snapshot().to_bytes()
    metadata = weight_snapshot._read_metadata(data)
    spec = json.loads(metadata["spec"])
    spec["hidden_sizes"] = [10**6, 10**6]  # 10^12 weights: would exhaust any robot PC
    metadata["spec"] = json.dumps(spec)
    huge = safetensors.torch.save(safetensors.torch.load(data), metadata=metadata)
    swapper, _ = collect(learner)
    report = swapper.validate(huge)
    assert not report.accepted and "tensor mismatch" in report.reason


class FixedBase:
    """A base action source returning one action (test input)."""

    def __init__(self, action: np.ndarray) -> None:
        self.value = action
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1

    def action(self, observation):
        return self.value

    def close(self) -> None:
        pass

    def diagnostics(self) -> dict:
        return {}


def test_policy_actor_composes_base_and_residual_as_the_learner_inverts(learner: Learner) -> None:
    swapper, _ = collect(learner)
    with torch.no_grad():  # a residual that is not zero everywhere
        learner.actor.net.mean_weights.normal_(0, 3.0)
    swapper.validate(learner.snapshot().to_bytes())
    base = np.array([0.5, -0.2, 0.0, 0.1, 0.0, 0.0, 0.95])
    actor = PolicyActor(FixedBase(base), (OBS_STATE, OBS_ENV_STATE), "residual", 0.1, swapper)
    obs = {OBS_STATE: np.linspace(-1, 1, 8), OBS_ENV_STATE: np.array([0.1, 0.2, 0.3])}
    assert actor.act(obs).policy_version == 0  # nothing adopted yet: the base alone
    actor.before_tick()
    assert actor.version == 1 and actor.required_inputs() == (OBS_STATE, OBS_ENV_STATE)
    out = actor.act(obs)
    x = np.concatenate([obs[OBS_STATE], obs[OBS_ENV_STATE], base]).astype(np.float32)
    u = learner.actor.act(x)
    assert np.abs(u).max() > 0.05
    np.testing.assert_allclose(out.executed, np.clip(base + 0.1 * u, -1, 1), atol=1e-5)
    np.testing.assert_allclose(out.residual, out.executed - out.base)
    assert learner.policy_spec().obs_keys == (OBS_STATE, OBS_ENV_STATE, ACTION_BASE)
    with torch.no_grad():  # a diverged module: the base acts alone, never NaN
        actor.active.module.net.mean_weights.fill_(float("nan"))
    nan_out = actor.act(obs)
    np.testing.assert_array_equal(nan_out.executed, base)
    assert actor.residual_fallbacks == 1
    assert actor.act(obs).policy_version == 1


def test_policy_actor_holds_while_the_base_has_no_chunk() -> None:
    actor = PolicyActor(FixedBase(None), (OBS_STATE,))
    assert actor.act({OBS_STATE: np.zeros(8)}) == "base_pending"


def test_fast_residual_acts_exactly_as_the_learners_module(learner: Learner) -> None:
    """The cached acting path of the control loop is the learner's distribution, not an approximation."""
    from coirl_ros.control.policy_actor import prepare_acting

    with torch.no_grad():
        learner.actor.net.mean_weights.normal_(0, 3.0)
        learner.actor.net.scale_tril.add_(0.01 * torch.randn_like(learner.actor.net.scale_tril))
    swapper = WeightSwapper(prepare=prepare_acting)
    swapper.validate(learner.snapshot().to_bytes())
    loaded = swapper.take()
    fast = loaded.acting
    assert fast is not None
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.normal(size=8 + 3 + 7).astype(np.float32)
        np.testing.assert_array_equal(fast.act(x, deterministic=True), loaded.module.act(x))
        mine, theirs = fast.distribution(x), loaded.module(torch.as_tensor(x)[None])
        torch.testing.assert_close(mine.mean, theirs.mean, rtol=0, atol=0)
        torch.testing.assert_close(mine.std, theirs.std, rtol=1e-6, atol=1e-7)
        torch.manual_seed(1)
        sample = fast.act(x, deterministic=False)
        assert sample.shape == (7,) and np.all(np.abs(sample) <= 1)


def test_image_residual_gets_frames_at_the_size_it_was_trained_on(tmp_path: Path) -> None:
    from coirl_ros.configs.learner import ImageConfig
    from coirl_ros.constants import image_key
    from coirl_ros.ingestion.image_codec import resize_rgb

    spec = EpisodeSpec(state_dim=8, action_dim=7, cameras=(("front", (12, 16)),), fps=20.0)
    config = tiny_config().model_copy(
        update={"observation": "images", "image": ImageConfig(num_keypoints=4, conv_layers=[(4, 3, 2)])}
    )
    learner = Learner(config, EpisodeStore.create(tmp_path / "img.zarr", spec), "residual", 0.1)
    with torch.no_grad():
        learner.actor.net.mean_weights.normal_(0, 3.0)
    swapper, reports = collect(learner)
    assert swapper.validate(learner.snapshot().to_bytes()).accepted, reports
    base = np.full(7, 0.2)
    actor = PolicyActor(FixedBase(base), (OBS_STATE,), "residual", 0.1, swapper)
    actor.before_tick()
    key = image_key("front")
    assert set(actor.required_inputs()) == {OBS_STATE, key}
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)  # the camera streams 4x the stored size
    obs = {OBS_STATE: rng.normal(size=8), key: frame}
    out = actor.act(obs)
    small = {OBS_STATE: obs[OBS_STATE], key: resize_rgb(frame, 12, 16)}
    u = actor.active.module.act(small, base)
    np.testing.assert_allclose(out.executed, np.clip(base + 0.1 * u, -1, 1), atol=1e-5)
