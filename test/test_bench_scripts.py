"""The benchmark scripts still run: every one parses its arguments, and the scripts that analyse a
finished `coirl bench learn` run (README's rerun commands) run on a toy run made here.

bench/ has no package; its scripts import each other (`failure_seeds` -> `critic_guided_eval`) and the
learning core, so a renamed function there breaks them without failing any other test. Their
numbers are not checked here (they are the README's measurements); that they run, and write what
they say they write, is.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from coirl_ros.configs import LearnerConfig
from coirl_ros.data import EpisodeStore
from coirl_ros.experiment import ExperimentConfig, run_experiment
from coirl_ros.policies.local_bc_base import LocalBCConfig

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if p.name != "bench_common.py")

TINY_LEARNER = {
    "batch_size": 32,
    "bc": {"steps": 30, "hidden_sizes": [32], "num_features": 16, "bottleneck": 4},
    "critic": {"hidden_sizes": [32], "pretrain_steps": 10, "num_bins": 21},
}
# The run's arguments as every run-reading script takes them (critic_guided_eval.add_run_arguments).
DEMOS, OFFSET = 2, 0.04

# One interpreter for all --help calls: importing torch and MuJoCo once, not once per script.
HELP_ALL = """
import contextlib, io, runpy, sys
sys.path.insert(0, sys.argv[1])
failed = []
for name in sys.argv[2:]:
    sys.argv = [name, "--help"]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(f"{sys.path[0]}/{name}", run_name="__main__")
        failed.append(f"{name}: --help returned without exiting")
    except SystemExit as e:
        if e.code not in (0, None) or "usage:" not in out.getvalue():
            failed.append(f"{name}: --help exited {e.code!r}: {out.getvalue()[-300:]}")
    except Exception as e:
        failed.append(f"{name}: {type(e).__name__}: {e}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def _bench(*args: str | Path, cwd: Path) -> str:
    """Run one bench script as a user would (bench/ on the path through the script's own directory)."""
    env = os.environ | {"MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    done = subprocess.run(
        [sys.executable, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, f"{args[0]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_every_bench_script_parses_its_arguments() -> None:
    assert "critic_guided_eval.py" in SCRIPTS and len(SCRIPTS) >= 10
    done = subprocess.run(
        [sys.executable, "-c", HELP_ALL, str(BENCH), *SCRIPTS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, f"bench scripts broken:\n{done.stdout}\n{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A finished toy CSIL run on the miscalibrated base (the README's setting at toy size), and its
    learner YAML."""
    out = tmp_path_factory.mktemp("bench_run")
    learner_yaml = out / "learner.yaml"
    learner_yaml.write_text(yaml.safe_dump(TINY_LEARNER))
    config = ExperimentConfig(
        task="lift", methods=("base", "csil"), seeds=1, env_steps=120, demos=DEMOS, eval_every=120,
        eval_episodes=2, base=LocalBCConfig(steps=30, hidden=(32,)), base_offset_m=OFFSET,
        out_dir=out, learner=LearnerConfig.model_validate(TINY_LEARNER),
    )  # fmt: skip
    run_experiment(config)
    return out, learner_yaml


def _run_args(run: tuple[Path, Path], episodes: int) -> list[str]:
    out, learner_yaml = run
    return ["--run", str(out), "--learner-config", str(learner_yaml), "--demos", str(DEMOS),
            "--base-offset", str(OFFSET), "--episodes", str(episodes)]  # fmt: skip


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_critic_guided_eval_and_failure_seeds_read_a_finished_run(toy_run: tuple[Path, Path]) -> None:
    out, _ = toy_run
    run_dir = out / "lift" / f"csil_d{DEMOS}_off4cm_s0"
    printed = _bench(
        BENCH / "critic_guided_eval.py", *_run_args(toy_run, 2), "--n", "2",
        "--rules", "mode,sample,argmax,ascend",
        cwd=ROOT,
    )  # fmt: skip
    trained = re.search(r"(\d+) env steps, (\d+) updates", printed)
    assert trained and int(trained[1]) >= 120, "the run's checkpoint is loaded"
    assert "actor vs pi_BC on demo states: std ratio" in printed, "the spread against π_BC is printed"
    rows = _csv(run_dir / "critic_guided_eval_t0.3_n2_step0.1.csv")
    assert [r["rule"] for r in rows] == ["mode", "sample", "argmax-2", "ascend-0.1"]
    assert all(r["episodes"] == "2" and 0.0 <= float(r["success_rate"]) <= 1.0 for r in rows)

    printed = _bench(
        BENCH / "failure_seeds.py", *_run_args(toy_run, 3), "--samples", "1", "--proposer", "bc", cwd=ROOT
    )
    assert "cube y" in printed
    rows = _csv(run_dir / "failure_seeds_t0.3_bc.csv")
    assert [int(r["seed"]) for r in rows] == [10000, 10001, 10002]
    assert all(r["samples"] == "1" and r["proposer"] == "bc" for r in rows)
    assert all(-0.2 <= float(r["cube_y"]) <= 0.2 for r in rows), "the cube's start is read from the sim"


def test_training_success_and_plot_variants_read_the_runs_files(
    toy_run: tuple[Path, Path], tmp_path: Path
) -> None:
    out, _ = toy_run
    metrics = out / "lift" / f"csil_d{DEMOS}_off4cm_s0" / "metrics.jsonl"
    episodes = [r for r in map(json.loads, metrics.read_text().splitlines()) if "train_success" in r]
    assert episodes, "the run logs its training episodes"
    printed = _bench(BENCH / "training_success.py", "--window", "60", f"toy={metrics}", cwd=ROOT)
    assert printed.startswith("toy: per 60 steps: ") and "first half" in printed

    png = tmp_path / "variants.png"
    curves = out / "lift" / f"curves_d{DEMOS}_off4cm.csv"
    printed = _bench(BENCH / "plot_variants.py", f"toy={curves}", "--out", png, cwd=ROOT)
    assert "| toy | 1 | 2 |" in printed
    assert png.stat().st_size > 1000


def test_base_saturation_reads_a_finished_run(toy_run: tuple[Path, Path]) -> None:
    out, _ = toy_run
    printed = _bench(BENCH / "base_saturation.py", *_run_args(toy_run, 2), cwd=ROOT)
    assert "| episodes | n | steps | base saturated |" in printed
    rows = _csv(out / "lift" / f"csil_d{DEMOS}_off4cm_s0" / "base_saturation_2.csv")
    assert [int(r["seed"]) for r in rows] == [10000, 10001]
    for r in rows:
        assert 0.0 <= float(r["base_saturated"]) <= 1.0 and 0.0 <= float(r["residual_mean"]) <= 0.5
        assert 1 <= int(r["steps"]) <= 100, "lift's horizon"
        assert float(r["object_max_z"]) >= 0.02, "the cube's centre is read from the sim, resting or lifted"


def test_takeover_rounds_adds_the_operators_corrections_and_retrains(tmp_path: Path) -> None:
    learner_yaml = tmp_path / "learner.yaml"
    learner_yaml.write_text(yaml.safe_dump(TINY_LEARNER))
    printed = _bench(
        BENCH / "takeover_rounds.py", "--task", "mug_cleanup", "--demos", "2", "--base-steps", "30",
        "--rounds", "1", "--collect", "2", "--episodes", "1", "--saturated-steps", "1000000",
        "--deadline", "30", "--takeover-weight", "2", "--learner-config", learner_yaml, "--out", tmp_path,
        cwd=ROOT,
    )  # fmt: skip
    assert "collection 0:" in printed
    run = tmp_path / "mug_cleanup" / "takeovers_sat1000000_dl30_w2_s0"
    rounds = _csv(run / "rounds.csv")
    assert [r["round"] for r in rounds] == ["0", "1"]
    collected = _csv(run / "collection.csv")
    assert [(r["takeover_step"], r["reason"]) for r in collected] == [("30", "deadline")] * 2
    kept = sum(r["expert_success"] == "True" for r in collected)
    assert kept >= 1, "the expert finishes from step 30 of a mug episode"
    assert (rounds[0]["takeover_episodes"], rounds[1]["takeover_episodes"]) == ("0", str(kept))
    frames = sum(int(r["frames"]) for r in collected)
    assert int(rounds[1]["takeover_frames"]) == frames > 0
    trained_on = [e.source for e in EpisodeStore.open(run / "round1" / "episodes.zarr").list_episodes()]
    assert trained_on.count("takeover") == 2 * kept, "--takeover-weight 2: each takeover twice"
    assert len(trained_on) == 2 + 2 * kept

    # The plot reads the same folder: one row per round in its table, one per collection round.
    plotted = _bench(
        BENCH / "plot_takeover_rounds.py", f"s0={run}", "--reference", "more demos=0.5",
        "--out", tmp_path / "rounds.png", cwd=ROOT,
    )  # fmt: skip
    assert f"| s0 | {100 * float(rounds[0]['success']):.0f}% (0) → " in plotted
    assert "| s0 | 0 | 2 | " in plotted and (tmp_path / "rounds.png").stat().st_size > 0
