"""`coirl bench learn` end to end at toy size: real MuJoCo rollouts, store, base, learner, curves."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from coirl_ros.configs import LearnerConfig
from coirl_ros.constants import ACTION, ACTION_BASE, ACTION_RESIDUAL
from coirl_ros.data import EpisodeStore
from coirl_ros.experiment import (
    ExperimentConfig,
    curves,
    plot_curves,
    prepare_demos,
    read_rows,
    run_experiment,
    summarise,
)
from coirl_ros.policies.local_bc_base import LocalBCConfig
from coirl_ros.sim.demos import generate_demos

TINY_LEARNER = LearnerConfig.model_validate({
    "batch_size": 32,
    "bc": {"steps": 30, "hidden_sizes": [32], "num_features": 16, "bottleneck": 4},
    "critic": {"hidden_sizes": [32], "pretrain_steps": 10, "num_bins": 21},
})  # fmt: skip


def tiny_experiment(out_dir: Path, env_steps: int) -> ExperimentConfig:
    """Base and CSIL on lift at toy size: 2 demos, 2 evaluation episodes every 100 env steps."""
    return ExperimentConfig(
        task="lift", methods=("base", "csil"), seeds=1, env_steps=env_steps, demos=2, eval_every=100,
        eval_episodes=2, base=LocalBCConfig(steps=30, hidden=(32,)), learner=TINY_LEARNER, out_dir=out_dir,
    )  # fmt: skip


def test_bench_learn_records_rollouts_trains_and_plots(tmp_path: Path) -> None:
    config = tiny_experiment(tmp_path, env_steps=150)
    rows = run_experiment(config)
    csil = [r for r in rows if r["method"] == "csil"]
    assert [r["env_steps"] for r in rows if r["method"] == "base"] == [0, 150]
    assert csil[0]["env_steps"] == 0 and csil[-1]["env_steps"] == 150 and len(csil) >= 3
    assert csil[-1]["updates"] > 0, "the learner must have trained on the rollouts"
    assert all(0.0 <= r["success_rate"] <= 1.0 and r["eval_episodes"] == 2 for r in rows)

    run_dir = tmp_path / "lift" / "csil_d2_s0"
    store = EpisodeStore.open(run_dir / "episodes.zarr")
    metas = store.list_episodes()
    assert [m.source for m in metas[:2]] == ["scripted", "scripted"], "the demos come first"
    rollouts = [store.read_episode(m.index) for m in metas if m.source == "policy"]
    assert sum(len(e) for e in rollouts) >= 150
    for episode in rollouts:
        base, executed = episode.data[ACTION_BASE], episode.data[ACTION]
        assert np.any(base != 0), "rollouts record the base action"
        assert np.allclose(executed - base, episode.data[ACTION_RESIDUAL], atol=1e-6)
        assert np.all(np.abs(executed - base) <= config.scale + 1e-6), "the residual is bounded by its scale"
    assert (run_dir / "learner.pt").is_file()

    csv_rows = read_rows(tmp_path / "lift" / "curves_d2.csv")
    assert len(csv_rows) == len(rows)
    table = {row["method"]: row for row in summarise(csv_rows)}
    assert table["csil"]["seeds"] == 1 and table["base"]["max_drop_below_base"] == 0.0
    png = plot_curves(csv_rows, tmp_path / "curves.png", "lift")
    assert png.stat().st_size > 1000


def test_resume_continues_each_run_from_its_checkpoint_to_a_longer_budget(tmp_path: Path) -> None:
    short = tiny_experiment(tmp_path, env_steps=100)
    first = run_experiment(short)
    run_dir = tmp_path / "lift" / "csil_d2_s0"
    episodes_before = len(EpisodeStore.open(run_dir / "episodes.zarr").list_episodes())
    with pytest.raises(ValueError, match="continue it with --resume"):  # nor is it overwritten
        run_experiment(replace(short, methods=("csil",)))

    # Seed 0 goes on from its checkpoint (no pre-training, no second evaluation at 0); seed 1 is new.
    longer = replace(short, env_steps=300, seeds=2, resume=True)
    second = run_experiment(longer)
    seed0 = [r for r in second if r["seed"] == 0]
    assert [r["method"] for r in seed0] == ["csil", "csil"], "base is complete: nothing to resume"
    assert [r["env_steps"] for r in seed0] == [200, 300]
    last_before = next(r for r in first if r["method"] == "csil" and r["env_steps"] == 100)
    assert seed0[0]["updates"] > last_before["updates"], "training went on from the checkpoint's updates"
    assert seed0[0]["actual_env_steps"] > last_before["actual_env_steps"]
    assert seed0[0]["wall_s"] > last_before["wall_s"], "wall_s goes on from the checkpoint's"
    seed1 = [r["env_steps"] for r in second if r["seed"] == 1 and r["method"] == "csil"]
    assert seed1 == [0, 100, 200, 300]
    metas = EpisodeStore.open(run_dir / "episodes.zarr").list_episodes()
    assert len(metas) > episodes_before, "new rollouts join the same store"
    logged = [json.loads(line)["episode"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, len(logged) + 1)), "episode numbers (and training seeds) go on"
    assert len(logged) == sum(m.source == "policy" for m in metas)

    assert run_experiment(replace(longer, seeds=1)) == [], "at its budget already: nothing to do"
    (run_dir / "learner.pt").unlink()
    with pytest.raises(ValueError, match=r"no learner\.pt to resume from"):
        run_experiment(replace(longer, env_steps=400))


def test_a_miscalibrated_base_gets_its_own_curves_and_rejects_a_centimetre_typo(tmp_path: Path) -> None:
    matched = ExperimentConfig(task="lift", demos=20, out_dir=tmp_path)
    off = ExperimentConfig(task="lift", demos=20, out_dir=tmp_path, base_offset_m=0.04)
    assert matched.csv_path.name == "curves_d20.csv"
    assert off.csv_path.name == "curves_d20_off4cm.csv", "runs with another base must not mix into one CSV"
    with pytest.raises(ValueError, match="metres"):
        ExperimentConfig(base_offset_m=4.0)


def test_noisier_demonstrations_are_cached_apart_from_the_default_ones(tmp_path: Path) -> None:
    default = prepare_demos(ExperimentConfig(task="lift", demos=1, out_dir=tmp_path))
    noisy = prepare_demos(ExperimentConfig(task="lift", demos=1, out_dir=tmp_path, demo_noise_m=0.004))
    assert default.root.name == "demos_1.zarr" and noisy.root.name == "demos_1_noise4mm.zarr"
    first, second = (s.read_episode(0, [ACTION]).data[ACTION] for s in (default, noisy))
    assert not np.array_equal(first[:10], second[:10]), (
        "the same expert seed with more noise acts differently"
    )
    with pytest.raises(ValueError, match="standard deviation"):
        ExperimentConfig(demo_noise_m=-0.001)


def test_curves_keep_variant_labels_after_the_methods() -> None:
    def row(method: str, seed: int, steps: int, rate: float) -> dict:
        return {"method": method, "seed": seed, "env_steps": steps, "success_rate": rate}

    rows = [
        row("csil beta 1", 0, 0, 0.7),
        row("csil beta 1", 0, 10, 0.8),
        row("csil", 0, 0, 0.7),
        row("csil", 0, 10, 0.4),
        row("csil beta 1", 1, 0, 0.6),
        row("csil beta 1", 1, 10, 0.6),
    ]
    got = {m: (list(steps), success.tolist()) for m, steps, success in curves(rows)}
    assert list(got) == ["csil", "csil beta 1"]  # methods first, then labels in order of appearance
    assert got["csil beta 1"] == ([0, 10], [[0.7, 0.8], [0.6, 0.6]])


def test_extra_demonstrations_join_the_residuals_store_not_the_bases(tmp_path: Path) -> None:
    extra = tmp_path / "extra.zarr"
    generate_demos("lift", 1, extra, action_mode="ee_delta", seed=100, progress=False)
    config = replace(tiny_experiment(tmp_path / "out", env_steps=100), methods=("bc",), extra_demos=extra)
    assert config.tag == "d2_plus1", "runs with other data get their own directories and CSV"
    run_experiment(config)
    store = EpisodeStore.open(tmp_path / "out" / "lift" / "bc_d2_plus1_s0" / "episodes.zarr")
    metas = store.list_episodes()
    assert [m.source for m in metas[:3]] == ["scripted"] * 3
    np.testing.assert_array_equal(
        store.read_episode(metas[2].index).data[ACTION], EpisodeStore.open(extra).read_episode(0).data[ACTION]
    )
    with pytest.raises(ValueError, match="not an episode store"):
        replace(config, extra_demos=tmp_path / "nowhere")
    joint = tmp_path / "joint.zarr"
    generate_demos("lift", 1, joint, action_mode="joint", seed=100, progress=False)
    with pytest.raises(ValueError, match="is not the demos'"):
        run_experiment(replace(config, extra_demos=joint, out_dir=tmp_path / "joint_out"))
    assert not (tmp_path / "joint_out" / "lift" / "bc_d2_plus1_s0").exists(), "refused before the run begins"
    weighted = replace(config, methods=("base",), extra_demos_weight=3, out_dir=tmp_path / "weighted")
    assert weighted.tag == "d2_plus1x3"
    run_experiment(weighted)
    store = EpisodeStore.open(tmp_path / "weighted" / "lift" / "base_d2_plus1x3_s0" / "episodes.zarr")
    assert [m.source for m in store.list_episodes()][:5] == ["scripted"] * 5, "2 demos, then 3 copies"
    with pytest.raises(ValueError, match="number of copies"):
        replace(config, extra_demos_weight=0)
