"""Scripted demonstrations flow into the episode store through the writer, with images."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from coirl_ros.constants import ACTION, DONE, OBS_STATE, image_key
from coirl_ros.data import EpisodeStore
from coirl_ros.sim.demos import generate_demos
from coirl_ros.sim.env import MAX_JOINT_VELOCITY


def test_generate_demos_records_successful_episodes_with_images(tmp_path: Path) -> None:
    report = generate_demos("lift", 2, tmp_path / "demos.zarr", image_size=(32, 32), progress=False)
    assert report.successes == report.attempts == 2 and len(report.saved) == 2
    store = EpisodeStore.open(tmp_path / "demos.zarr")
    assert store.verify().clean and store.spec.camera_names == ["front", "wrist"]
    for episode in store.iter_episodes():
        meta, data = episode.meta, episode.data
        assert (meta.task, meta.source, meta.success) == ("lift", "scripted", True)
        assert data[DONE][-1] and not data[DONE][:-1].any()  # terminated on success
        assert data[image_key("wrist")].shape == (meta.num_frames, 32, 32, 3)
        # Recorded actions are the expert's requests; consecutive states respect the velocity limits.
        dq = np.abs(np.diff(data[OBS_STATE], axis=0))
        assert np.all(dq <= MAX_JOINT_VELOCITY * 0.05 * 1.5)
        assert np.isfinite(data[ACTION]).all()


def test_cli_generates_into_an_existing_store_and_reports(tmp_path: Path) -> None:
    root = tmp_path / "demos.zarr"
    for seed in ("0", "10"):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "coirl_ros.cli",
                "demos",
                "generate",
                "--task",
                "lift",
                "--n",
                "2",
                "--store",
                str(root),
                "--seed",
                seed,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr
        assert "lift: 2/2 expert episodes succeeded (100%), 2 saved" in out.stdout
    assert EpisodeStore.open(root).episode_indices() == [0, 1, 2, 3]


def test_cli_refuses_a_negative_expert_noise_before_touching_the_store(tmp_path: Path) -> None:
    root = tmp_path / "demos.zarr"
    args = ["demos", "generate", "--task", "lift", "--n", "1", "--store", str(root), "--noise", "-0.001"]
    out = subprocess.run(
        [sys.executable, "-m", "coirl_ros.cli", *args], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 2 and "--noise must be >= 0" in out.stderr, out.stderr
    assert not root.exists()
