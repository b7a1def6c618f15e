"""π_BC's success by takeover round, for several seeds, from `bench/takeover_rounds.py` run folders.

Each run is `label=dir[,dir...]`: a run and the runs that went on from it (`--start-from` writes
`<name>_more`); a round evaluated in two of them (the one `--start-from` re-evaluates) is taken from
the later. Draws success against the round and against the operator's takeover frames so far (the
operator's time at the controls), prints one table of π_BC's success by round and one of what each
collection round held (takeovers, untriggered failures, how often the expert finished, env steps).

    python bench/plot_takeover_rounds.py --out docs/results/mug_cleanup_d200_takeovers/rounds.png \
        s0=runs/mug_d200/mug_cleanup/takeovers_sat2_s0,runs/mug_d200/mug_cleanup/takeovers_sat2_s0_more \
        s1=runs/mug_d200/mug_cleanup/takeovers_sat2_s1 --reference "400 demonstrations, s0=0.67"
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from bench_common import read_csv  # bench/ is on sys.path when run as a script
from matplotlib.ticker import MaxNLocator


def parse_run(text: str) -> tuple[str, list[Path]]:
    """label=dir[,dir...] -> (label, dirs), each holding a rounds.csv."""
    label, sep, rest = text.partition("=")
    dirs = [Path(d) for d in rest.split(",") if d]
    if not sep or not label or not dirs:
        raise argparse.ArgumentTypeError(f"runs are label=dir[,dir...], got {text!r}")
    for d in dirs:
        if not (d / "rounds.csv").is_file():
            raise argparse.ArgumentTypeError(f"{d}: no rounds.csv (not a takeover_rounds.py run)")
    return label, dirs


def parse_reference(text: str) -> tuple[str, float]:
    label, sep, value = text.rpartition("=")
    try:
        rate = float(value)
    except ValueError:
        rate = -1.0
    if not sep or not label or not 0.0 <= rate <= 1.0:
        raise argparse.ArgumentTypeError(f"references are label=rate in [0, 1], got {text!r}")
    return label, rate


def merged(dirs: list[Path], name: str) -> dict[int, list[dict[str, str]]]:
    """Rows of `name` from every dir by round; a round present in a later dir replaces the earlier."""
    by_round: dict[int, list[dict[str, str]]] = {}
    for d in dirs:
        mine: dict[int, list[dict[str, str]]] = {}
        for row in read_csv(d / name) if (d / name).is_file() else []:
            mine.setdefault(int(row["round"]), []).append(row)
        by_round.update(mine)
    return dict(sorted(by_round.items()))


def collection_summary(r: int, rows: list[dict[str, str]]) -> str:
    """One markdown row: what the operator did while round r's π_BC acted."""
    taken = [x for x in rows if x["reason"]]
    untriggered_failures = sum(1 for x in rows if not x["reason"] and x["policy_success"] != "True")
    finished = sum(1 for x in taken if x["expert_success"] == "True")
    median_step = statistics.median(int(x["takeover_step"]) for x in taken) if taken else float("nan")
    frames = sum(int(x["frames"]) for x in rows)
    env_steps = sum(int(x["env_steps"]) for x in rows) if "env_steps" in rows[0] else None
    return (
        f"| {r} | {len(rows)} | {sum(x['policy_success'] == 'True' for x in rows)} | {len(taken)} | "
        f"{untriggered_failures} | {finished} | {median_step:.0f} | {frames} | "
        f"{env_steps if env_steps is not None else 'not counted'} |"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=parse_run, help="label=dir[,dir...]")
    p.add_argument(
        "--reference", action="append", type=parse_reference, default=[],
        help="label=rate: a flat line, e.g. π_BC from more demonstrations instead",
    )  # fmt: skip
    p.add_argument("--title", default="π_BC with operator takeovers")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()

    fig, (by_round, by_frames) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    print("| run | π_BC success by round (takeover episodes so far) |\n|---|---|")
    collections_table = []
    for label, dirs in args.runs:
        rounds = {r: rows[-1] for r, rows in merged(dirs, "rounds.csv").items()}
        xs = list(rounds)
        rates = [100 * float(rounds[r]["success"]) for r in xs]
        frames = [int(rounds[r]["takeover_frames"]) for r in xs]
        (line,) = by_round.plot(xs, rates, marker="o", label=label)
        by_frames.plot(frames, rates, marker="o", color=line.get_color(), label=label)
        cells = " → ".join(
            f"{100 * float(rounds[r]['success']):.0f}% ({rounds[r]['takeover_episodes']})" for r in xs
        )
        print(f"| {label} | {cells} |")
        for r, rows in merged(dirs, "collection.csv").items():
            collections_table.append(f"| {label} " + collection_summary(r, rows))
    for name, rate in args.reference:
        for ax in (by_round, by_frames):
            ax.axhline(100 * rate, color="grey", linestyle="--", label=f"{name} {rate:.0%}")
    by_round.set_xlabel("round (π_BC retrained on demonstrations + takeovers so far)")
    by_frames.set_xlabel("takeover frames so far (the operator's control steps)")
    by_round.set_ylabel("π_BC success (%)")
    by_round.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (by_round, by_frames):
        ax.axhline(90, color="k", linewidth=0.8)
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    by_round.legend(fontsize=7, loc="lower right")
    fig.suptitle(args.title)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(
        "\n| run | collected by round | episodes | policy alone succeeded | taken over |"
        " untriggered failures | expert finished | median takeover step | takeover frames | env steps |"
        "\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    print("\n".join(collections_table))
    print(f"plot: {args.out}")


if __name__ == "__main__":
    main()
