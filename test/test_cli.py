"""The `coirl` command as a user runs it: a real subprocess on a real store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import record

from coirl_ros.data import EpisodeStore
from coirl_ros.paths import config_dir


def coirl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coirl_ros.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_episodes_list_show_relabel_delete_verify(store: EpisodeStore) -> None:
    record(store, episodes=3, frames=6, source="teleop", task="square")
    root = str(store.root)
    out = coirl("episodes", "list", "--store", root)
    assert out.returncode == 0, out.stderr
    assert "3 episode(s), 18 frames" in out.stdout and "square" in out.stdout
    listed = json.loads(coirl("episodes", "list", "--store", root, "--json").stdout)
    assert [e["success"] for e in listed] == [True, False, True]

    shown = json.loads(coirl("episodes", "show", "--store", root, "1").stdout)
    assert shown["meta"]["index"] == 1 and shown["arrays"]["observation.state"]["shape"] == [6, 8]

    assert coirl("episodes", "relabel", "--store", root, "1", "success").returncode == 0
    assert store.read_meta(1).success is True

    refused = coirl("episodes", "delete", "--store", root, "2")
    assert refused.returncode == 2 and "--yes" in refused.stderr and store.episode_indices() == [0, 1, 2]
    assert coirl("episodes", "delete", "--store", root, "2", "--yes").returncode == 0
    assert store.episode_indices() == [0, 1]

    verified = coirl("episodes", "verify", "--store", root)
    assert verified.returncode == 0 and "2 episode(s) ok" in verified.stdout


def test_verify_fails_on_corruption_and_reports_it(store: EpisodeStore) -> None:
    record(store, episodes=2, frames=6)
    (store.episode_path(0) / "zarr.json").write_text("{")
    out = coirl("episodes", "verify", "--store", str(store.root))
    assert out.returncode == 1 and "CORRUPT  episode 0: metadata unreadable" in out.stdout


def test_missing_store_is_a_clean_error(tmp_path: Path) -> None:
    out = coirl("episodes", "list", "--store", str(tmp_path / "nope.zarr"))
    assert out.returncode == 2 and "no episode store here" in out.stderr and "Traceback" not in out.stderr


def test_config_check(tmp_path: Path) -> None:
    ok = coirl("config", "check")
    assert ok.returncode == 0 and ok.stdout.count("ok ") == len(list(config_dir().glob("*.yaml")))
    bad = tmp_path / "robot_bad.yaml"
    bad.write_text("name: x\njoints: []\n")
    out = coirl("config", "check", str(bad))
    assert out.returncode == 1 and "INVALID" in out.stdout and "joints" in out.stdout
