"""`make demo`'s report (intervals, verdicts, the plot and the summary, from episode outcomes).

The demo itself (six graphs, ~10 min) is not part of the test run; its phases are the graphs that
test_sim_graph.py runs, and this covers what turns their stores into the verdict it prints.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from coirl_ros.sim_demo import DemoError, compare, evaluation_row, plot, prepare_out, print_summary, wilson


def outcomes(successes: int, n: int) -> list[dict]:
    return [{"success": i < successes, "frames": 80, "policy_version": 1 + i // 5} for i in range(n)]


def test_wilson_interval_is_sensible_at_the_edges() -> None:
    low, high = wilson(0, 30)
    assert low == 0.0 and 0.08 < high < 0.13  # a normal interval would claim [0, 0]
    low, high = wilson(15, 30)
    assert low == pytest.approx(0.332, abs=0.005) and high == pytest.approx(0.668, abs=0.005)
    assert wilson(0, 0) == (0.0, 1.0)


def test_verdicts_say_when_a_difference_is_not_significant() -> None:
    base = evaluation_row("base", "base only", 0, 0, outcomes(8, 30), 1.0)
    same = evaluation_row("x", "x", 1, 0, outcomes(8, 30), 1.0)
    close = evaluation_row("x", "x", 1, 0, outcomes(12, 30), 1.0)
    far = evaluation_row("x", "x", 1, 0, outcomes(27, 30), 1.0)
    assert compare(same, base, "the base") == (
        "equal to the base (the 95% intervals overlap: not a significant difference)"
    )
    assert compare(close, base, "the base").startswith("better than the base by 13 points (the 95% intervals")
    assert compare(far, base, "b").endswith("(significant at 95%)")
    assert compare(base, far, "b").startswith("worse than b by 63 points")


def test_summary_and_plot_from_three_evaluations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        evaluation_row("base", "base only", 0, 0, outcomes(8, 30), 90.0),
        evaluation_row("start", "base + residual start (pi_BC)", 1, 0, outcomes(14, 30), 95.0),
        evaluation_row("finetuned", "base + residual", 6, 800, outcomes(12, 30), 95.0),
    ]
    training = outcomes(6, 20)
    png = plot(rows, training, tmp_path / "success.png")
    assert png.stat().st_size > 10_000
    report = {
        "evaluation": rows,
        "learner": {
            "version": 6,
            "bc_steps": 4000,
            "critic_pretrain_steps": 1000,
            "updates": 800,
            "env_steps": 1600,
        },
        "training_rollouts": {"episodes": 20, "successes": 6, "env_steps": 1600},
        "seconds": {"total": 600.0},
    }
    print_summary(report, png)
    out = capsys.readouterr().out
    assert "| base only | 30 | 8 | 27% |" in out and "| base + residual | 30 | 12 | 40% |" in out
    assert "and worse than its start by 7 points" in out


def test_an_output_folder_the_demo_did_not_write_is_refused(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(DemoError, match="not an earlier demo's output"):
        prepare_out(tmp_path)
    demo = tmp_path / "demo"
    prepare_out(demo)
    (demo / "results.csv").write_text("old")
    prepare_out(demo)  # an earlier demo's folder is cleared
    assert not (demo / "results.csv").exists() and (tmp_path / "mine.txt").exists()
