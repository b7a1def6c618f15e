"""Versioned weight snapshots: round trips, and every rejection says what was wrong."""

from __future__ import annotations

import json
import os
import re
import struct

import pytest
import safetensors.torch
import torch
from torch import nn

from coirl_ros.learning.hetstat import HetStatPolicy
from coirl_ros.learning.weight_snapshot import (
    SNAPSHOT_FORMAT,
    PolicySpec,
    SnapshotError,
    WeightSnapshot,
    read_snapshot,
    write_snapshot,
)

OBS_DIM, ACT_DIM = 5, 3


def make_spec(**overrides) -> PolicySpec:
    fields = dict(
        obs_dim=OBS_DIM,
        action_dim=ACT_DIM,
        obs_keys=("observation.state", "observation.environment_state", "action.base"),
        composition="residual",
        scale=0.25,
        architecture="mlp",
        hidden_sizes=(8,),
        extra=(("activation", "elu"),),
    )
    fields.update(overrides)
    return PolicySpec(**fields)


def make_module(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(OBS_DIM, 8), nn.ELU(), nn.Linear(8, ACT_DIM))


def make_snapshot(module: nn.Module | None = None, version: int = 3, **overrides) -> WeightSnapshot:
    kwargs = dict(config_hash="abc123", method="csil", run_id="run-1", updates=1200, env_steps=5000)
    kwargs.update(overrides)
    module = module or make_module()
    return WeightSnapshot.from_module(module, make_spec(), version, created_unix=1.7e9, **kwargs)


def weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def assert_same_metadata(a: WeightSnapshot, b: WeightSnapshot) -> None:
    names = ("version", "config_hash", "spec", "method", "created_unix", "updates", "env_steps", "run_id")
    for name in names:
        assert getattr(a, name) == getattr(b, name), name


def reframe(snapshot: WeightSnapshot, **metadata_changes: str | None) -> bytes:
    """The snapshot's bytes with `__metadata__` entries replaced (None deletes one)."""
    data = snapshot.to_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    metadata = json.loads(data[8 : 8 + n])["__metadata__"]
    for k, v in metadata_changes.items():
        if v is None:
            metadata.pop(k, None)
        else:
            metadata[k] = v
    return safetensors.torch.save(dict(snapshot.tensors), metadata=metadata)


# ------------------------------------------------------------------ round trips


def test_bytes_round_trip_identical_values_and_metadata():
    snap = make_snapshot()
    back = WeightSnapshot.from_bytes(snap.to_bytes())
    assert_same_weights(snap.tensors, back.tensors)
    assert_same_metadata(snap, back)
    module = make_module(seed=1)
    back.load_into(module, make_spec(), min_version=2)
    assert_same_weights(weights(module), snap.tensors)


def test_file_round_trip(tmp_path):
    snap = make_snapshot()
    path = write_snapshot(tmp_path / "policy.safetensors", snap)
    back = read_snapshot(path)
    assert_same_weights(snap.tensors, back.tensors)
    assert_same_metadata(snap, back)


def test_header_carries_format_and_json_spec():
    data = make_snapshot().to_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    metadata = json.loads(data[8 : 8 + n])["__metadata__"]
    assert metadata["format"] == SNAPSHOT_FORMAT
    assert PolicySpec.from_dict(json.loads(metadata["spec"])) == make_spec()


def test_spec_dict_round_trip_and_extra_order_does_not_matter():
    spec = make_spec(extra=(("b", "2"), ("a", "1")))
    assert PolicySpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert spec == make_spec(extra=(("a", "1"), ("b", "2")))
    assert spec.diff(spec) == []


def test_hetstat_policy_round_trip():
    spec = make_spec(architecture="hetstat", extra=(("bottleneck", "4"), ("num_features", "16")))
    policy = HetStatPolicy(OBS_DIM, ACT_DIM, hidden_sizes=(8,), bottleneck=4, num_features=16)
    snap = WeightSnapshot.from_module(policy, spec, 0, config_hash="h", method="csil", run_id="r")
    other = HetStatPolicy(OBS_DIM, ACT_DIM, hidden_sizes=(8,), bottleneck=4, num_features=16)
    WeightSnapshot.from_bytes(snap.to_bytes()).load_into(other, spec)
    assert_same_weights(weights(other), weights(policy))


# ------------------------------------------------------------------ container rejections


def test_rejects_garbage_bytes():
    with pytest.raises(SnapshotError, match="not a safetensors container: header length"):
        WeightSnapshot.from_bytes(b"definitely not a safetensors file, just text")
    with pytest.raises(SnapshotError, match="expected at least 8"):
        WeightSnapshot.from_bytes(b"abc")


def test_rejects_truncated_bytes():
    data = make_snapshot().to_bytes()
    with pytest.raises(SnapshotError, match="not a readable safetensors container"):
        WeightSnapshot.from_bytes(data[:-7])  # header intact, tensor data short
    with pytest.raises(SnapshotError, match="truncated"):
        WeightSnapshot.from_bytes(data[:20])  # cut inside the header


def test_rejects_missing_metadata():
    data = safetensors.torch.save({"w": torch.zeros(2)})
    with pytest.raises(SnapshotError, match="no __metadata__"):
        WeightSnapshot.from_bytes(data)
    with pytest.raises(SnapshotError, match=r"missing keys \['run_id'\]"):
        WeightSnapshot.from_bytes(reframe(make_snapshot(), run_id=None))


def test_rejects_wrong_format_tag():
    with pytest.raises(SnapshotError, match=r"format: expected 'coirl\.snapshot/1', got 'coirl\.snapshot/2'"):
        WeightSnapshot.from_bytes(reframe(make_snapshot(), format="coirl.snapshot/2"))
    with pytest.raises(SnapshotError, match=r"format: expected 'coirl\.snapshot/1', got None"):
        WeightSnapshot.from_bytes(reframe(make_snapshot(), format=None))


@pytest.mark.parametrize("bad", ["-1", "1.5", "seven", "", " 3"])
def test_rejects_bad_version_number(bad):
    with pytest.raises(SnapshotError, match=rf"version: expected an integer >= 0, got '{bad}'"):
        WeightSnapshot.from_bytes(reframe(make_snapshot(), version=bad))


def test_rejects_negative_version_at_construction():
    with pytest.raises(SnapshotError, match="version: expected an integer >= 0, got -1"):
        make_snapshot(version=-1)


def test_rejects_malformed_spec_json():
    with pytest.raises(SnapshotError, match="metadata spec: expected JSON"):
        WeightSnapshot.from_bytes(reframe(make_snapshot(), spec="{not json"))
    spec = make_spec().to_dict()
    del spec["scale"]
    spec["colour"] = "red"
    with pytest.raises(SnapshotError, match=r"missing \['scale'\], unexpected \['colour'\]"):
        WeightSnapshot.from_bytes(reframe(make_snapshot(), spec=json.dumps(spec)))


# ------------------------------------------------------------------ tensor rejections


def _bytes_with_tensor(name: str, value: torch.Tensor) -> bytes:
    snap = make_snapshot()
    data = snap.to_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    metadata = json.loads(data[8 : 8 + n])["__metadata__"]
    tensors = dict(snap.tensors)
    tensors[name] = value
    return safetensors.torch.save(tensors, metadata=metadata)


def test_rejects_nan_tensor_naming_it_and_counting():
    w = torch.zeros(8, OBS_DIM)
    w[0, 0] = w[1, 2] = float("nan")
    with pytest.raises(SnapshotError, match=r"0\.weight: 2 non-finite values of 40 \(2 NaN, 0 inf\)"):
        WeightSnapshot.from_bytes(_bytes_with_tensor("0.weight", w))


def test_rejects_inf_tensor_naming_it_and_counting():
    b = torch.zeros(ACT_DIM)
    b[1] = float("inf")
    b[2] = float("-inf")
    with pytest.raises(SnapshotError, match=r"2\.bias: 2 non-finite values of 3 \(0 NaN, 2 inf\)"):
        WeightSnapshot.from_bytes(_bytes_with_tensor("2.bias", b))


def test_rejects_integer_tensor():
    msg = "2.bias: expected a floating-point tensor, got dtype torch.int64"
    with pytest.raises(SnapshotError, match=re.escape(msg)):
        WeightSnapshot.from_bytes(_bytes_with_tensor("2.bias", torch.zeros(ACT_DIM, dtype=torch.int64)))


def test_learner_cannot_publish_nan_weights():
    module = make_module()
    with torch.no_grad():
        module[0].bias[3] = float("nan")
    with pytest.raises(SnapshotError, match=r"0\.bias: 1 non-finite"):
        make_snapshot(module)


# ------------------------------------------------------------------ fit to the receiving module


def test_rejects_wrong_shape():
    snap = WeightSnapshot.from_bytes(_bytes_with_tensor("2.weight", torch.zeros(ACT_DIM, 9)))
    with pytest.raises(SnapshotError, match=r"2\.weight: expected shape \(3, 8\), got \(3, 9\)"):
        snap.validate_for(make_module(), make_spec())


def test_rejects_wrong_dtype():
    snap = make_snapshot()
    msg = "0.weight: expected dtype torch.float64, got torch.float32"
    with pytest.raises(SnapshotError, match=re.escape(msg)):
        snap.validate_for(make_module().double(), make_spec())


def test_rejects_missing_key():
    snap = make_snapshot()
    del snap.tensors["2.bias"]
    with pytest.raises(SnapshotError, match=r"missing \['2.bias'\], unexpected \[\]"):
        snap.validate_for(make_module(), make_spec())


def test_rejects_unexpected_key():
    snap = WeightSnapshot.from_bytes(_bytes_with_tensor("4.weight", torch.zeros(2, 2)))
    with pytest.raises(SnapshotError, match=r"missing \[\], unexpected \['4.weight'\]"):
        snap.validate_for(make_module(), make_spec())


def test_rejects_spec_mismatch_naming_fields():
    snap = make_snapshot()
    expected = make_spec(composition="ensemble", obs_keys=("observation.state", "action.base"))
    with pytest.raises(SnapshotError, match="policy spec mismatch") as info:
        snap.validate_for(make_module(), expected)
    msg = str(info.value)
    assert "composition: expected 'ensemble', got 'residual'" in msg
    assert "obs_keys: expected ('observation.state', 'action.base'), got" in msg
    assert "scale" not in msg  # only the mismatching fields are listed


def test_spec_diff_lists_each_field():
    diff = make_spec().diff(make_spec(scale=0.5, hidden_sizes=(8, 8)))
    assert diff == ["scale: expected 0.25, got 0.5", "hidden_sizes: expected (8,), got (8, 8)"]


@pytest.mark.parametrize("loaded", [3, 4])
def test_rejects_stale_or_replayed_version(loaded):
    snap = make_snapshot(version=3)
    msg = f"stale snapshot: version 3 is not newer than the loaded version {loaded}"
    with pytest.raises(SnapshotError, match=msg):
        snap.validate_for(make_module(), make_spec(), min_version=loaded)
    snap.validate_for(make_module(), make_spec(), min_version=2)  # strictly newer is fine


def test_failed_load_leaves_module_unchanged():
    module = make_module(seed=1)
    before = weights(module)
    # Everything right except the *last* tensor, so a naive key-by-key copy would have half-loaded.
    good = make_snapshot(make_module(seed=2))
    bad_tensors = dict(good.tensors)
    bad_tensors["2.bias"] = torch.zeros(ACT_DIM + 1)
    bad = WeightSnapshot(
        version=good.version,
        config_hash=good.config_hash,
        spec=good.spec,
        tensors=bad_tensors,
        method=good.method,
        created_unix=good.created_unix,
        updates=good.updates,
        env_steps=good.env_steps,
        run_id=good.run_id,
    )
    with pytest.raises(SnapshotError, match=r"2\.bias: expected shape \(3,\), got \(4,\)"):
        bad.load_into(module, make_spec())
    assert_same_weights(weights(module), before)
    with pytest.raises(SnapshotError, match="stale snapshot"):
        good.load_into(module, make_spec(), min_version=good.version)
    assert_same_weights(weights(module), before)


# ------------------------------------------------------------------ publishing


def test_published_snapshot_not_mutated_by_later_updates():
    module = make_module()
    snap = make_snapshot(module)
    published = {k: v.clone() for k, v in snap.tensors.items()}
    with torch.no_grad():
        for p in module.parameters():
            p.add_(1.0)
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    module(torch.randn(4, OBS_DIM)).sum().backward()
    opt.step()
    assert_same_weights(snap.tensors, published)
    assert all(t.device.type == "cpu" and not t.requires_grad for t in snap.tensors.values())


def test_atomic_write_leaves_no_temp_files(tmp_path):
    path = tmp_path / "policy.safetensors"
    write_snapshot(path, make_snapshot(version=1))
    write_snapshot(path, make_snapshot(version=2))  # overwrite in place
    assert os.listdir(tmp_path) == ["policy.safetensors"]
    assert read_snapshot(path).version == 2


def test_failed_write_keeps_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "policy.safetensors"
    write_snapshot(path, make_snapshot(version=1))

    def boom(*_args, **_kwargs):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk on fire"):
        write_snapshot(path, make_snapshot(version=2))
    assert os.listdir(tmp_path) == ["policy.safetensors"]
    assert read_snapshot(path).version == 1


def test_read_missing_file_names_path(tmp_path):
    path = tmp_path / "nope.safetensors"
    with pytest.raises(SnapshotError, match=re.escape(f"{path}: snapshot file not found")):
        read_snapshot(path)


def test_read_bad_file_names_path(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x00" * 4)
    with pytest.raises(SnapshotError, match=re.escape(f"{path}: not a safetensors container")):
        read_snapshot(path)
