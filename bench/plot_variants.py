"""Success-rate curves of several `coirl bench learn` runs of one method, on one plot.

`coirl bench learn` draws every method of one CSV side by side; this compares variants of one method
(learner configs) that were run into separate CSVs, with the base and BC-residual levels of the
first CSV that has them as flat references. Also prints one table row per variant.

    python bench/plot_variants.py --out docs/results/lift_d20_off4cm/variants.png \
        default=docs/results/lift_d20_off4cm/csil.csv beta1=docs/results/lift_d20_off4cm/sharp_b1.csv \
        filtered-bc=docs/results/lift_d20_off4cm/reanchor_bc.csv@bc
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from coirl_ros.experiment import read_rows


def parse_run(text: str) -> tuple[str, Path, str | None]:
    """label=path.csv, or label=path.csv@method to plot another method than --method from that CSV."""
    label, sep, rest = text.partition("=")
    path, _, method = rest.partition("@")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"runs are label=path.csv[@method], got {text!r}")
    if not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"{path}: no such CSV")
    return label, Path(path), method or None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=parse_run, help="label=curves.csv[@method]")
    p.add_argument("--method", default="csil")
    p.add_argument("--title", default="")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()

    fig, ax = plt.subplots(figsize=(7, 4))
    references: dict[str, float] = {}
    print("| variant | seeds | eval episodes | success by env steps |")
    print("|---|---:|---:|---|")
    for label, path, run_method in args.runs:
        method = run_method or args.method
        rows = read_rows(path)
        for ref in ("base", "bc"):
            mine = [r["success_rate"] for r in rows if r["method"] == ref]
            if mine and ref not in references:
                references[ref] = mine[0]
        rows = [r for r in rows if r["method"] == method]
        rows.sort(key=lambda r: (r["seed"], r["env_steps"]))
        if not rows:
            raise SystemExit(f"{path}: no {method} rows")
        seeds = sorted({r["seed"] for r in rows})
        for seed in seeds:
            mine = [r for r in rows if r["seed"] == seed]
            steps = [r["env_steps"] for r in mine]
            rates = [100 * r["success_rate"] for r in mine]
            ax.plot(steps, rates, marker="o", label=f"{label} (seed {seed})")
        curve = " / ".join(f"{r['env_steps'] / 1000:g}k {r['success_rate']:.0%}" for r in rows)
        print(f"| {label} | {len(seeds)} | {rows[0]['eval_episodes']} | {curve} |")
    styles = {"base": ("k", "base alone"), "bc": ("grey", "BC residual (start)")}
    for ref, rate in references.items():
        colour, name = styles[ref]
        ax.axhline(100 * rate, color=colour, linestyle="--", label=f"{name} {rate:.0%}")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(args.title or f"{args.method} variants")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"plot: {args.out}")


if __name__ == "__main__":
    main()
