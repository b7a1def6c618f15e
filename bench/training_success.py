"""Success of the exploring (training) rollouts of `coirl bench learn` runs, per window of env steps.

The evaluation curves show the deterministic policy (the mean action); the learner trains on the
exploring policy's rollouts, whose success each run's `metrics.jsonl` records per episode. This
prints, for each run, the share of successful training episodes in each window, with the episode
count, and the two halves of the run pooled (with the standard error of their difference).

    python bench/training_success.py --window 5000 \
        csil=runs/exp/long_csil/lift/csil_d20_off4cm_s0/metrics.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def episode_outcomes(path: Path) -> list[tuple[int, bool]]:
    """(env steps at the episode's end, success) for every training episode in a metrics.jsonl."""
    if not path.is_file():
        raise SystemExit(f"{path}: no such file")
    out = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if "episode" in row and "train_success" in row:
            out.append((int(row["env_steps"]), bool(row["train_success"])))
    if not out:
        raise SystemExit(f"{path}: no training episodes (is it a `coirl bench learn` metrics.jsonl?)")
    return out


def rate(outcomes: list[bool]) -> float:
    return sum(outcomes) / len(outcomes) if outcomes else math.nan


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="label=metrics.jsonl")
    p.add_argument("--window", type=int, default=5000, help="env steps per window")
    args = p.parse_args()
    for run in args.runs:
        label, sep, path = run.partition("=")
        if not sep:
            raise SystemExit(f"runs are label=metrics.jsonl, got {run!r}")
        episodes = episode_outcomes(Path(path))
        last = episodes[-1][0]
        count = max(1, round(last / args.window))  # the run overshoots its budget by < one episode
        windows: dict[int, list[bool]] = {}
        for steps, success in episodes:
            windows.setdefault(min((steps - 1) // args.window, count - 1), []).append(success)
        cells = [f"{100 * rate(v):.0f}% ({len(v)})" for _, v in sorted(windows.items())]
        first = [s for steps, s in episodes if steps <= last / 2]
        second = [s for steps, s in episodes if steps > last / 2]
        p1, p2 = rate(first), rate(second)
        se = math.sqrt(p1 * (1 - p1) / max(len(first), 1) + p2 * (1 - p2) / max(len(second), 1))
        print(f"{label}: per {args.window} steps: " + " / ".join(cells))
        print(
            f"  first half {100 * p1:.0f}% of {len(first)}, second half {100 * p2:.0f}% of {len(second)}"
            f" (difference {100 * (p2 - p1):+.0f} points, standard error {100 * se:.0f})"
        )


if __name__ == "__main__":
    main()
