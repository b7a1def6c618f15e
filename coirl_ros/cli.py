"""The `coirl` command: one entry point for the user-facing tools.

coirl episodes list|show|verify|relabel|delete|export-lerobot|import-lerobot
coirl config check [FILE ...]
coirl launch finetune|record [--sim] [name:=value ...]
coirl demo | store-demo
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from coirl_ros.configs import (
    ConfigError,
    ConfigModel,
    LearnerConfig,
    PolicyConfig,
    RobotConfig,
    TaskConfig,
    load_config,
)
from coirl_ros.configs.dashboard import DashboardConfig
from coirl_ros.configs.ingestion import IngestionConfig
from coirl_ros.configs.recorder import RecorderConfig
from coirl_ros.configs.sim import SimConfig
from coirl_ros.configs.teleop import TeleopConfig
from coirl_ros.constants import EPISODE_SOURCES
from coirl_ros.data import EpisodeStore, StoreError
from coirl_ros.paths import config_dir

DEFAULT_STORE = "runs/episodes.zarr"
CONFIG_KINDS: dict[str, type[ConfigModel]] = {
    "robot": RobotConfig,
    "task": TaskConfig,
    "policy": PolicyConfig,
    "learner": LearnerConfig,
    "teleop": TeleopConfig,
    "sim": SimConfig,
    "recorder": RecorderConfig,
    "ingestion": IngestionConfig,
    "dashboard": DashboardConfig,
}


class CliError(Exception):
    """A user-facing failure: printed without a traceback, exit code 2."""


# ---- episodes ----------------------------------------------------------------------------------
def _open_store(path: str) -> EpisodeStore:
    return EpisodeStore.open(path)


def cmd_episodes_list(args: argparse.Namespace) -> int:
    store = _open_store(args.store)
    problems: list[tuple[int, str]] = []
    metas = store.list_episodes(problems)
    if args.task:
        metas = [m for m in metas if m.task == args.task]
    if args.source:
        metas = [m for m in metas if m.source == args.source]
    if args.json:
        print(json.dumps([m.to_attrs() for m in metas], indent=1))
        return 0
    print(f"{'index':>6} {'task':<16} {'source':<9} {'frames':>6} {'success':<8} {'version':>7}  created")
    for m in metas:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m.created_at))
        success = {True: "yes", False: "no", None: "-"}[m.success]
        version = "-" if m.policy_version is None else str(m.policy_version)
        print(
            f"{m.index:>6} {m.task:<16} {m.source:<9} {m.num_frames:>6} {success:<8} {version:>7}  {created}"
        )
    print(f"{len(metas)} episode(s), {sum(m.num_frames for m in metas)} frames")
    for index, reason in problems:
        print(f"warning: episode {index} unreadable: {reason}", file=sys.stderr)
    return 0


def cmd_episodes_show(args: argparse.Namespace) -> int:
    store = _open_store(args.store)
    episode = store.read_episode(args.index)
    info = {
        "meta": episode.meta.to_attrs(),
        "arrays": {
            k: {"shape": list(v.shape), "dtype": str(v.dtype)}
            | ({"min": float(v.min()), "max": float(v.max())} if v.dtype.kind == "f" else {})
            for k, v in episode.data.items()
        },
    }
    print(json.dumps(info, indent=1))
    return 0


def cmd_episodes_verify(args: argparse.Namespace) -> int:
    store = _open_store(args.store)
    report = store.verify()
    print(f"{store.root}: {len(report.ok)} episode(s) ok")
    for index, reason in report.corrupt:
        print(f"CORRUPT  episode {index}: {reason}")
    for p in report.partial:
        state = "in progress (writer alive)" if p.writer_alive else "abandoned (writer gone before saving)"
        print(f"PARTIAL  {p.name}: {p.frames_flushed} frame(s) flushed, {state}")
    if args.remove_partial:
        for name in store.remove_abandoned():
            print(f"removed abandoned partial episode {name}")
        report.partial = store.partial_episodes()
    return 0 if report.clean else 1


def cmd_episodes_relabel(args: argparse.Namespace) -> int:
    store = _open_store(args.store)
    success = {"success": True, "failure": False, "clear": None}[args.label]
    meta = store.relabel(args.index, success)
    print(f"episode {meta.index}: success = {meta.success}")
    return 0


def cmd_episodes_delete(args: argparse.Namespace) -> int:
    store = _open_store(args.store)
    if not args.yes:
        raise CliError(f"deleting episodes {args.indices} cannot be undone; add --yes to confirm")
    for index in args.indices:
        store.delete(index)
        print(f"deleted episode {index}")
    return 0


def cmd_export_lerobot(args: argparse.Namespace) -> int:
    from coirl_ros.data.lerobot_io import export_to_lerobot

    report = export_to_lerobot(
        _open_store(args.store), Path(args.out), repo_id=args.repo_id, use_videos=args.videos
    )
    print(report)
    return 0


def cmd_import_lerobot(args: argparse.Namespace) -> int:
    from coirl_ros.data.lerobot_io import import_from_lerobot

    report = import_from_lerobot(
        Path(args.dataset), Path(args.store), repo_id=args.repo_id, source=args.source
    )
    print(report)
    return 0


# ---- config ------------------------------------------------------------------------------------
def _config_kind(path: Path, kind: str | None) -> type[ConfigModel]:
    if kind:
        return CONFIG_KINDS[kind]
    for name, model in CONFIG_KINDS.items():
        if path.stem.startswith(name):
            return model
    raise CliError(
        f"{path}: cannot tell which config this is from its name; pass --kind {{{','.join(CONFIG_KINDS)}}}"
    )


def cmd_config_check(args: argparse.Namespace) -> int:
    files = [Path(f) for f in args.files] or sorted(config_dir().glob("*.yaml"))
    failed = 0
    for path in files:
        try:
            load_config(path, _config_kind(path, args.kind))
            print(f"ok      {path}")
        except ConfigError as err:
            failed += 1
            print(f"INVALID {err}")
    return 1 if failed else 0


# ---- demos -------------------------------------------------------------------------------------
def cmd_demos_generate(args: argparse.Namespace) -> int:
    from coirl_ros.sim.demos import EXPERT_NOISE_M, generate_demos

    if args.noise is not None and args.noise < 0:
        print(f"coirl: error: --noise must be >= 0 (metres), got {args.noise:g}", file=sys.stderr)
        return 2
    size = (args.image_size, args.image_size) if args.image_size else None
    report = generate_demos(
        args.task,
        args.n,
        Path(args.store),
        size,
        noise=EXPERT_NOISE_M if args.noise is None else args.noise,
        seed=args.seed,
        keep_failures=args.keep_failures,
        action_mode=args.action_mode,
    )
    print(report)
    if len(report.saved) < args.n:
        print(f"coirl: error: only {len(report.saved)} of {args.n} demos saved", file=sys.stderr)
        return 1
    return 0


# ---- bench -------------------------------------------------------------------------------------
def cmd_bench_learn(args: argparse.Namespace) -> int:
    import torch

    from coirl_ros.experiment import ExperimentConfig, plot_curves, read_rows, run_experiment, summarise
    from coirl_ros.policies.local_bc_base import LocalBCConfig

    torch.set_num_threads(args.threads)
    learner = load_config(args.learner_config, LearnerConfig) if args.learner_config else LearnerConfig()
    overrides = {
        "bc": learner.bc.model_copy(update={"steps": args.bc_steps} if args.bc_steps else {}),
        "critic": learner.critic.model_copy(
            update={"pretrain_steps": args.critic_pretrain_steps}
            if args.critic_pretrain_steps is not None
            else {}
        ),
    }
    if args.utd:
        overrides["utd_ratio"] = args.utd
    if args.batch_size:
        overrides["batch_size"] = args.batch_size
    if args.successes_as_demos:
        overrides["successes_as_demos"] = True
    # model_copy skips validation: round-trip through the validator so a bad override is a clear error.
    learner = LearnerConfig.model_validate(learner.model_copy(update=overrides).model_dump())
    config = ExperimentConfig(
        task=args.task,
        methods=tuple(args.method),
        seeds=args.seeds,
        first_seed=args.first_seed,
        env_steps=args.env_steps,
        demos=args.demos,
        eval_every=args.eval_every,
        eval_episodes=args.eval_episodes,
        requery_every=args.requery,
        scale=args.scale,
        base=LocalBCConfig(steps=args.base_steps),
        learner=learner,
        out_dir=Path(args.out),
        image_size=args.image_size,
        explore_temperature=args.explore_temperature,
        base_offset_m=args.base_offset,
        resume=args.resume,
        extra_demos=Path(args.extra_demos) if args.extra_demos else None,
        extra_demos_weight=args.extra_demos_weight,
    )
    csv_path = config.csv_path
    if not args.plot_only:
        run_experiment(config, csv_path)
    rows = [r for r in read_rows(csv_path, config.eval_every) if r["demos"] == config.demos]
    title = f"{config.task}, {config.demos} demos" + (
        f", base {config.base_offset_m * 100:g} cm off" if config.base_offset_m else ""
    )
    png = plot_curves(rows, csv_path.with_suffix(".png"), title)
    print("| method | seeds | eval episodes | success at 0 | final (mean ± std) | steps to 90% |", end="")
    print(" max drop below base |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in summarise(rows):
        reached = row["steps_to_target"]
        drop = row["max_drop_below_base"]
        print(
            f"| {row['method']} | {row['seeds']} | {row['eval_episodes']} | {row['start']:.0%} |"
            f" {row['final']:.0%} ± {row['final_std']:.0%} |"
            f" {reached if reached is not None else f'not within {row["last_step"]}'} |"
            f" {'' if drop is None else f'{drop:.0%}'} |"
        )
    print(f"curves: {csv_path} and {png}")
    return 0


# ---- launch ------------------------------------------------------------------------------------
def cmd_launch(args: argparse.Namespace) -> int:
    from coirl_ros.graph import build_graph, launch_arguments
    from coirl_ros.launcher import Launcher, run_graph

    if args.show_args:
        for arg in launch_arguments(args.graph, args.sim):
            choices = f" (one of {', '.join(c or "''" for c in arg.choices)})" if arg.choices else ""
            print(f"{arg.name}:=  default {arg.default!r}{choices}\n    {arg.description}")
        return 0
    overrides = {}
    for item in args.arguments:
        name, sep, value = item.partition(":=")
        if not sep or not name:
            raise CliError(f"launch arguments are name:=value (as for ros2 launch), got {item!r}")
        overrides[name] = value
    nodes = build_graph(args.graph, args.sim, overrides)
    if args.dry_run:
        launcher = Launcher(nodes, log_dir=args.log_dir or None, stream=None)
        for node in nodes:
            waits = [f"{other} prints {text!r}" for other, text in node.start_after]
            after = f"  (once {' and '.join(waits)}, then {node.start_delay_s:g} s)" if waits else ""
            print(f"{node.name}: {' '.join(launcher.command(node))}{after}")
        return 0
    return run_graph(nodes, log_dir=args.log_dir or None)


# ---- demo --------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from coirl_ros.sim_demo import DemoConfig, run_sim_demo

    config = DemoConfig(
        out=Path(args.out), task_config=args.task_config, demos=args.demos, eval_episodes=args.eval_episodes,
        train_episodes=args.train_episodes, base_steps=args.base_steps, base_offset_m=args.base_offset,
    )  # fmt: skip
    return run_sim_demo(config)


def cmd_store_demo(args: argparse.Namespace) -> int:
    from coirl_ros.store_demo import run_store_demo

    run_store_demo(Path(args.out), episodes=args.episodes)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coirl", description="coirl_ros tools")
    sub = parser.add_subparsers(dest="command", required=True)

    episodes = sub.add_parser("episodes", help="inspect and manage an episode store")
    eps = episodes.add_subparsers(dest="action", required=True)

    def add(name: str, help_text: str, func) -> argparse.ArgumentParser:
        p = eps.add_parser(name, help=help_text)
        p.add_argument(
            "--store", default=DEFAULT_STORE, help=f"episode store directory (default {DEFAULT_STORE})"
        )
        p.set_defaults(func=func)
        return p

    p = add("list", "list committed episodes", cmd_episodes_list)
    p.add_argument("--task")
    p.add_argument("--source", choices=EPISODE_SOURCES)
    p.add_argument("--json", action="store_true")
    p = add("show", "show one episode's metadata and arrays", cmd_episodes_show)
    p.add_argument("index", type=int)
    p = add(
        "verify", "read every episode; report corrupt and partial ones (exit 1 if any)", cmd_episodes_verify
    )
    p.add_argument("--remove-partial", action="store_true", help="delete partial episodes of dead writers")
    p = add("relabel", "set an episode's success label", cmd_episodes_relabel)
    p.add_argument("index", type=int)
    p.add_argument("label", choices=["success", "failure", "clear"])
    p = add("delete", "delete episodes", cmd_episodes_delete)
    p.add_argument("indices", type=int, nargs="+")
    p.add_argument("--yes", action="store_true", help="confirm deletion")
    p = add("export-lerobot", "export to a LeRobotDataset v3 directory", cmd_export_lerobot)
    p.add_argument("out", help="output dataset directory (must not exist)")
    p.add_argument("--repo-id", default="local/coirl_export")
    p.add_argument("--videos", action="store_true", help="encode images as video (lossy, smaller)")
    p = add("import-lerobot", "import a local LeRobotDataset v3 into the store", cmd_import_lerobot)
    p.add_argument("dataset", help="LeRobotDataset root directory")
    p.add_argument("--repo-id", default=None)
    p.add_argument("--source", choices=EPISODE_SOURCES, default="teleop")

    demos = sub.add_parser("demos", help="scripted demonstrations in simulation")
    dem = demos.add_subparsers(dest="action", required=True)
    p = dem.add_parser("generate", help="roll out a task's scripted expert into the episode store")
    p.add_argument("--task", required=True, help="lift, square, nut_assembly, coffee, mug_cleanup, ...")
    p.add_argument("--n", type=int, default=50, help="episodes to save")
    p.add_argument("--store", default=DEFAULT_STORE)
    p.add_argument("--image-size", type=int, default=0, help="render both cameras at NxN (0: state only)")
    p.add_argument(
        "--noise",
        type=float,
        default=None,
        help="expert noise, metres (std of the TCP target; default sim.demos.EXPERT_NOISE_M, 0.002)",
    )
    p.add_argument("--seed", type=int, default=0, help="first seed; episodes use seed, seed+1, ...")
    p.add_argument("--keep-failures", action="store_true", help="also save failed attempts (success=false)")
    p.add_argument(
        "--action-mode",
        choices=["joint", "ee_delta"],
        default="joint",
        help="record joint targets (8) or normalised TCP deltas (7, what the local BC base acts in)",
    )
    p.set_defaults(func=cmd_demos_generate)

    config = sub.add_parser("config", help="validate configuration files")
    cfg = config.add_subparsers(dest="action", required=True)
    p = cfg.add_parser("check", help="validate YAML files (default: every file in the package's config/)")
    p.add_argument("files", nargs="*")
    p.add_argument("--kind", choices=list(CONFIG_KINDS))
    p.set_defaults(func=cmd_config_check)

    bench = sub.add_parser("bench", help="learning-curve experiments in simulation")
    ben = bench.add_subparsers(dest="action", required=True)
    p = ben.add_parser("learn", help="fine-tune the residual on a sim task; curves of every method")
    p.add_argument("--task", default="square")
    p.add_argument(
        "--method",
        nargs="+",
        default=["base", "bc", "csil", "sparse"],
        choices=["base", "bc", "csil", "sparse"],
    )
    p.add_argument("--seeds", type=int, default=3, help="number of seeds")
    p.add_argument("--first-seed", type=int, default=0, help="run seeds first, first+1, ... (extend a CSV)")
    p.add_argument("--env-steps", type=int, default=50_000, help="online env steps per run")
    p.add_argument("--demos", type=int, default=25)
    p.add_argument("--eval-every", type=int, default=5_000, help="env steps between evaluations")
    p.add_argument("--eval-episodes", type=int, default=50)
    p.add_argument("--requery", type=int, default=10, help="control steps between base queries")
    p.add_argument(
        "--scale",
        type=float,
        default=0.5,
        help="residual scale (normalised units). The local base's per-step error is 0.1-0.3, so at 0.1 most"
        " demo residuals would be clipped (the learner warns about that)",
    )
    p.add_argument("--base-steps", type=int, default=3000, help="training steps of the local BC base")
    p.add_argument(
        "--base-offset", type=float, default=0.0,
        help="deploy the base seeing the object this far off in +y (metres; make demo uses 0.04): a base"
        " not trained on the residual's own demonstrations, as pi0.5 on a robot",
    )  # fmt: skip
    p.add_argument(
        "--extra-demos", default="",
        help="an episode store of further demonstrations for the residual (not the base), e.g. the"
        " operator takeovers bench/takeover_rounds.py collects; runs and CSV get a _plus<N> tag",
    )  # fmt: skip
    p.add_argument(
        "--extra-demos-weight", type=int, default=1,
        help="copies of --extra-demos in every run's store (as takeover_rounds --takeover-weight);"
        " the tag becomes _plus<N>x<k>",
    )  # fmt: skip
    p.add_argument("--learner-config", default="", help="learner YAML (default: built-in defaults)")
    p.add_argument("--bc-steps", type=int, default=0, help="override bc.steps")
    p.add_argument("--critic-pretrain-steps", type=int, default=None, help="override critic.pretrain_steps")
    p.add_argument("--utd", type=float, default=0.0, help="override utd_ratio")
    p.add_argument("--batch-size", type=int, default=0, help="override batch_size")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument(
        "--successes-as-demos", action="store_true",
        help="self-imitation: successful rollouts join the demos in each batch (reads success labels)",
    )  # fmt: skip
    p.add_argument(
        "--explore-temperature", type=float, default=1.0,
        help="exploration spread of training rollouts as a fraction of the policy's std (0: mode)",
    )  # fmt: skip
    p.add_argument(
        "--image-size",
        type=int,
        default=0,
        help="render both cameras at NxN and learn the residual from images + robot state (0: state)",
    )
    p.add_argument("--out", default="runs/bench_learn")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue runs from their checkpoints (saved after pre-training and at each evaluation) up"
        " to --env-steps, with the same options and learner config; runs not started yet start fresh",
    )
    p.add_argument("--plot-only", action="store_true", help="re-plot and summarise the existing CSV")
    p.set_defaults(func=cmd_bench_learn)

    p = sub.add_parser(
        "launch",
        help="start a node graph as processes (what `ros2 launch coirl_ros ...` starts, without ros2cli)",
        description="Start the finetune or record graph (coirl_ros/graph.py) as processes, streaming each"
        " node's output with its name; Ctrl-C stops every node cleanly. Launch arguments are name:=value,"
        " as for ros2 launch (--show-args lists them).",
    )
    p.add_argument(
        "graph", choices=["finetune", "record"], help="finetune (policy + learner) or record (teleop demos)"
    )
    p.add_argument("--sim", action="store_true", help="in MuJoCo: sim_node, sim time, episode_driver")
    p.add_argument("arguments", nargs="*", metavar="name:=value", help="launch arguments")
    p.add_argument("--show-args", action="store_true", help="list the launch arguments and exit")
    p.add_argument("--dry-run", action="store_true", help="print each node's command line and exit")
    p.add_argument("--log-dir", default="", help="node logs and parameter files (default runs/launch/<time>)")
    p.set_defaults(func=cmd_launch)

    p = sub.add_parser(
        "demo",
        help="the whole loop in sim through the node graph: teleop demos, BC base, fine-tuning, evaluation",
    )
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--task-config", default="task_lift.yaml", help="task YAML (default: lift)")
    p.add_argument("--demos", type=int, default=20, help="scripted demonstrations recorded through teleop")
    p.add_argument("--eval-episodes", type=int, default=30, help="deterministic episodes per evaluation")
    p.add_argument("--train-episodes", type=int, default=20, help="exploring episodes (learner training)")
    p.add_argument("--base-steps", type=int, default=3000, help="training steps of the local BC base")
    p.add_argument(
        "--base-offset",
        type=float,
        default=0.04,
        help="metres (+y) the base misjudges the cube by: a calibration error for the residual to correct,"
        " standing in for a frozen base deployed in a new cell; 0 = the matched base",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("store-demo", help="the episode store demo: crash safety, relabel, LeRobot round trip")
    p.add_argument("--out", default="runs/store_demo")
    p.add_argument("--episodes", type=int, default=6, help="scripted Lift demonstrations to record")
    p.set_defaults(func=cmd_store_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `coirl launch finetune --sim a:=1 --dry-run b:=2`: launch arguments may sit between options.
    if extra and getattr(args, "func", None) is cmd_launch and all(":=" in e for e in extra):
        args.arguments += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args))
    except (CliError, StoreError, ConfigError, FileExistsError, ValueError) as err:
        print(f"coirl: error: {err}", file=sys.stderr)
        return 2


def entry_point() -> None:
    """Console-script entry: exit with `main()`'s status."""
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
