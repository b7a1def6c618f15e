"""The node graphs, described once (no ROS imports): what `ros2 launch` and `coirl launch` both start.

A graph is a list of `NodeSpec`s -- executable, node name, parameters, parameter files, remappings,
restart and ordering rules -- built by `build_graph(kind, sim, values)` from launch-argument values
(strings, as `ros2 launch ... name:=value` gives them). Two front ends turn the same list into
processes:

- `launch/finetune.launch.py`, `launch/record_demos.launch.py`, `launch/sim.launch.py` (launch_ros
  `Node` actions, on a machine with ROS 2 installed);
- `coirl launch finetune|record [--sim] [name:=value ...]` (coirl_ros/launcher.py: plain processes,
  for machines without ros2cli, and what the tests and `make demo` use).

Graphs (DESIGN.md section 3; `sim` adds sim_node and, when `episodes` > 0, episode_driver):

    record    joint_node, camera_node per camera, recorder_node (teleop source), teleop_node
    finetune  joint_node, camera_node per camera, recorder_node (policy source), policy_node,
              learner_node (respawned if it dies: it resumes from its checkpoint)

Every node gets the same `use_sim_time` (true in sim: the sim's /clock, which starts at 1 s) and
the same robot/task/policy/learner files, so the policy expects exactly what the learner publishes.
Config files are resolved (working directory first, then share/coirl_ros/config) and validated
with their typed models here, before any process starts; store and checkpoint paths are made
absolute, since each node would otherwise resolve them against its own working directory.

Adding a node (the operator dashboard, for instance): write a function returning its `NodeSpec`s
for a given `GraphContext` and append it to `EXTRA_NODES` below (or call `register_extra_nodes` from
the module that defines it and import that module here). Both launch front ends pick it up, and
test/test_graph.py checks that its executable is a console script with a `main()` and that every
`*_config` file it names parses. Add launch arguments it needs to `extra_arguments` likewise.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from coirl_ros.configs import (
    ConfigError,
    ConfigModel,
    LearnerConfig,
    PolicyConfig,
    RobotConfig,
    TaskConfig,
    load_config,
)
from coirl_ros.configs.recorder import RecorderConfig
from coirl_ros.configs.sim import SimConfig
from coirl_ros.configs.teleop import TeleopConfig
from coirl_ros.paths import config_dir

GraphKind = Literal["finetune", "record"]
GRAPH_KINDS: tuple[GraphKind, ...] = ("finetune", "record")
# Lines the nodes log, which the sim's episode_driver waits for: learner_node published weights, and a
# controller (policy_node, teleop_node) ticks. Controllers hear episode events on a volatile
# subscription, so a "start" sent before one is up would be lost to it.
WEIGHTS_PUBLISHED_LINE = "published weights v"
CONTROLLER_TICKING_LINE = "holding: no_episode"
WEIGHTS_VALIDATED_LINE = ") validated"  # policy_node: "weights v3 (<run id>) validated"
READY_LINES = {"sim_node": "sim: task ", "recorder_node": "recording "}  # their start-up lines
# recorder_node, once per camera: its own subscription has a frame. Camera frames are best effort, so
# the recorder's match with camera_node can come later than anyone else's, and a start waits only
# camera_wait_s for it (CI once saw none arrive in 7 s and the first start fail).
RECORDER_CAMERA_LINE = "camera {}: first frame"
# After those lines, time for DDS discovery between all of them (a volatile subscription that matches
# after the recorder's "start" event, or a recorder that has not yet seen the sim's object-state
# publisher when it creates the store, would spoil the first episode).
DISCOVERY_SETTLE_S = 2.0


class GraphError(ValueError):
    """A launch argument or a file it names is wrong; raised before anything starts."""


@dataclass(frozen=True)
class NodeSpec:
    """One node process of a graph.

    `executable` is a console script of this package and the module stem in `coirl_ros.nodes`.
    `parameters` are ROS parameters (the `*_config` files plus per-field overrides); `param_files`
    are ROS 2 parameter YAML files applied after them (later wins). `respawn`: restart it when it
    dies (after `respawn_delay_s`). `finite`: the node finishes by itself (episode_driver) and its
    exit ends the graph with its exit code. `start_after`: (node name, text) pairs -- start this
    node once each of those nodes has printed its text, and `start_delay_s` later.
    """

    executable: str
    name: str
    parameters: Mapping[str, Any]
    description: str
    param_files: tuple[str, ...] = ()
    remappings: tuple[tuple[str, str], ...] = ()
    respawn: bool = False
    respawn_delay_s: float = 2.0
    finite: bool = False
    start_after: tuple[tuple[str, str], ...] = ()
    start_delay_s: float = 0.0

    @property
    def module(self) -> str:
        return f"coirl_ros.nodes.{self.executable}"


@dataclass(frozen=True)
class LaunchArgument:
    """A launch argument: `name:=value` for both front ends; `default` as ros2 launch takes it."""

    name: str
    default: str
    description: str
    choices: tuple[str, ...] = ()


# ---- launch arguments ----------------------------------------------------------------------------
def launch_arguments(kind: GraphKind, sim: bool) -> list[LaunchArgument]:
    """The launch arguments of one graph, with the defaults for the robot or the sim."""
    if kind not in GRAPH_KINDS:
        raise GraphError(f"unknown graph {kind!r}; choose from {list(GRAPH_KINDS)}")
    args = [
        LaunchArgument(
            "robot_config", "robot_sim.yaml" if sim else "robot.yaml",
            "robot YAML (RobotConfig): joints, command topics, control rate, cameras; a path, or a file name"
            " in share/coirl_ros/config. robot_sim_state.yaml: the sim without cameras (fast, state only)",
        ),
        LaunchArgument(
            "task_config", "task_lift.yaml" if sim else "task.yaml",
            "task YAML (TaskConfig): task name stored with every episode, instruction, episode length",
        ),
        LaunchArgument(
            "policy_config", "policy_sim.yaml" if sim else "policy.yaml",
            "policy YAML (PolicyConfig): action space, frozen base, residual composition and scale",
        ),
        LaunchArgument(
            "store", "runs/sim/episodes.zarr" if sim else "runs/episodes.zarr",
            "episode store the recorder writes and the learner follows (created on the first episode)",
        ),
        LaunchArgument(
            "params_file", "",
            "optional ROS 2 parameter file (node_name: ros__parameters: ...) applied to every node after the"
            " graph's own parameters, e.g. to set policy_node's torch_threads",
        ),
    ]  # fmt: skip
    if kind == "record":
        args += [
            LaunchArgument("teleop_config", "teleop.yaml", "teleop YAML (TeleopConfig): devices, mappings"),
            LaunchArgument(
                "teleop_source", "scripted" if sim else "",
                "teleop source: joy (gamepad / SpaceMouse via the joy or spacenav driver), keyboard (the"
                " terminal teleop_node runs in), scripted (the task's expert on a mirror of the sim);"
                " empty = teleop_config's",
                ("", "joy", "keyboard", "scripted"),
            ),
        ]  # fmt: skip
    else:
        args += [
            LaunchArgument(
                "learner_config", "learner_sim.yaml" if sim else "learner.yaml",
                "learner YAML (LearnerConfig): method (csil, sparse, bc, base), networks, batch, UTD, publish"
                " and checkpoint periods",
            ),
            LaunchArgument(
                "base_checkpoint", "",
                "frozen base checkpoint directory (local BC base or pi0.5); empty = policy_config's"
                " base.checkpoint",
            ),
            LaunchArgument(
                "checkpoint", "",
                "learner checkpoint; empty = <store's folder>/learner/learner.pt. An existing one is resumed",
            ),
            LaunchArgument(
                "learner", "true",
                "start learner_node (false: the policy acts with initial_weights or whatever the last learner"
                " published)",
                ("true", "false"),
            ),
            LaunchArgument(
                "residual", "true",
                "run the residual (false: the frozen base alone; the learner is not started and weights are"
                " ignored)",
                ("true", "false"),
            ),
            LaunchArgument(
                "explore", "true",
                "sample the residual (rollouts for the learner); false: its mode (evaluation, deployment)",
                ("true", "false"),
            ),
            LaunchArgument(
                "explore_temperature", "0.3",
                "spread of exploring samples as a fraction of the residual's std (1: its exact distribution;"
                " on sim lift full-std rollouts fail: 6% vs 60% deterministic, 0.3 keeps 27%)",
            ),
            LaunchArgument(
                "initial_weights", "",
                "residual snapshot file (coirl_ros.learning.weight_snapshot) to act with until the learner"
                " publishes",
            ),
            LaunchArgument(
                "asynchronous_base", "false" if sim else "true",
                "compute base chunks on a worker thread (true on a robot); in a lockstep sim the loop waits"
                " for nothing, so the synchronous base gives the same actions as the in-process benchmark",
                ("true", "false"),
            ),
            LaunchArgument(
                "record_store", "",
                "where the recorder writes episodes; empty = store. Evaluation runs record elsewhere so the"
                " learner does not train on them",
            ),
        ]  # fmt: skip
    if sim:
        args += [
            LaunchArgument(
                "episodes", "10",
                "episodes episode_driver runs (reset, record, run to success or max_steps, label), then the"
                " graph stops; 0 = no driver (episodes by hand: /recorder/start, /recorder/stop)",
            ),
            LaunchArgument("seed", "0", "sim seed: the k-th episode's scene uses seed + k"),
            LaunchArgument(
                "state_timeout_s", "0.5",
                "joint states older than this (sim time) make joint_node drop them and the controller hold."
                " In lockstep the sim and the controller can run a few steps ahead of joint_node on a loaded"
                " machine; the robot's 0.2 s would make the sim graph hold for nothing",
            ),
            LaunchArgument("max_steps", "0", "steps per episode; 0 = task_config's max_episode_steps"),
            LaunchArgument(
                "real_time_factor", "1.0",
                "sim speed: 1 real time, 2 twice as fast. Controllers tick on the sim's /clock and act on"
                " the newest joint state, which comes one hop later (joint_node): at a fixed pace that is one"
                " step old, every step, as on a robot",
            ),
            LaunchArgument(
                "lockstep", "false",
                "step once per command, as fast as the graph runs. On a loaded machine joint_node then falls"
                " behind the sim-controller loop: controllers act on states 0-3 steps old (measured: 22% of"
                " steps repeat a state), so evaluations and recorded data are noisier than at a fixed pace",
                ("true", "false"),
            ),
        ]  # fmt: skip
    for extra in EXTRA_ARGUMENTS:
        args += extra(kind, sim)
    return args


# ---- resolved values -----------------------------------------------------------------------------
@dataclass(frozen=True)
class GraphContext:
    """Launch-argument values resolved and checked: what node builders read."""

    kind: GraphKind
    sim: bool
    values: Mapping[str, str]
    robot: RobotConfig
    task: TaskConfig
    files: Mapping[str, str] = field(default_factory=dict)  # argument name -> absolute config path

    def flag(self, name: str) -> bool:
        return parse_bool(name, self.values[name])

    def path(self, name: str) -> str:
        """An absolute path from a path argument ("" stays "")."""
        value = self.values[name]
        return str(Path(value).expanduser().resolve()) if value else ""


def parse_bool(name: str, value: str) -> bool:
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise GraphError(f"launch argument {name}: expected true or false, got {value!r}")


def _number(name: str, value: str, kind: type[int] | type[float], minimum: float) -> Any:
    try:
        number = kind(value)
    except ValueError:
        raise GraphError(f"launch argument {name}: expected a{'n integer' if kind is int else ' number'},"
                         f" got {value!r}") from None  # fmt: skip
    if number < minimum:
        raise GraphError(f"launch argument {name}: must be >= {minimum}, got {value!r}")
    return number


def resolve_config(path: str, what: str) -> Path:
    """A config file named by a launch argument: as given (relative to the working directory), else in
    share/coirl_ros/config; absolute."""
    candidate = Path(path).expanduser()
    if candidate.is_file():
        return candidate.resolve()
    if not candidate.is_absolute() and (config_dir() / candidate).is_file():
        return (config_dir() / candidate).resolve()
    raise GraphError(
        f"launch argument {what}: no file {path!r} (looked in the working directory and {config_dir()})"
    )


CONFIG_ARGUMENTS: dict[str, type[ConfigModel]] = {
    "robot_config": RobotConfig,
    "task_config": TaskConfig,
    "policy_config": PolicyConfig,
    "learner_config": LearnerConfig,
    "teleop_config": TeleopConfig,
}
# Files every graph passes without a launch argument (sim_node's and recorder_node's own).
FIXED_CONFIGS: dict[str, tuple[str, type[ConfigModel]]] = {
    "sim_config": ("sim.yaml", SimConfig),
    "recorder_config": ("recorder.yaml", RecorderConfig),
}


def resolve(kind: GraphKind, sim: bool, overrides: Mapping[str, str] | None = None) -> GraphContext:
    """Defaults + `overrides` (unknown names are errors), every config file found and validated."""
    arguments = {a.name: a for a in launch_arguments(kind, sim)}
    values = {name: a.default for name, a in arguments.items()}
    for name, value in (overrides or {}).items():
        if name not in arguments:
            raise GraphError(
                f"unknown launch argument {name!r} for the {'sim ' if sim else ''}{kind} graph;"
                f" known: {', '.join(sorted(arguments))}"
            )
        choices = arguments[name].choices
        if choices and str(value).lower() not in choices:
            raise GraphError(f"launch argument {name}: {value!r} is not one of {list(choices)}")
        values[name] = str(value)
    files: dict[str, str] = {}
    models: dict[str, ConfigModel] = {}
    for name, model_cls in CONFIG_ARGUMENTS.items():
        if name in values:
            path = resolve_config(values[name], name)
            try:
                models[name] = load_config(path, model_cls)
            except ConfigError as err:
                raise GraphError(f"launch argument {name}: {err}") from None
            files[name] = str(path)
    for name, (default, model_cls) in FIXED_CONFIGS.items():
        path = resolve_config(default, name)
        load_config(path, model_cls)
        files[name] = str(path)
    for name in ("explore_temperature",):
        if name in values and not 0.0 <= _number(name, values[name], float, 0.0) <= 1.0:
            raise GraphError(f"launch argument {name}: must be in [0, 1], got {values[name]!r}")
    if "state_timeout_s" in values:
        _number("state_timeout_s", values["state_timeout_s"], float, 0.01)
        _number("real_time_factor", values["real_time_factor"], float, 0.0)
    for name in ("episodes", "seed", "max_steps"):
        if name in values:
            _number(name, values[name], int, 0)
    for name in ("learner", "residual", "explore", "asynchronous_base", "lockstep"):
        if name in values:
            parse_bool(name, values[name])
    if values.get("params_file") and not Path(values["params_file"]).expanduser().is_file():
        raise GraphError(f"launch argument params_file: no file {values['params_file']!r}")
    robot = models["robot_config"]
    assert isinstance(robot, RobotConfig)
    task = models["task_config"]
    assert isinstance(task, TaskConfig)
    if sim and any(c.source != "sim" for c in robot.cameras):
        raise GraphError(
            f"{files['robot_config']}: the sim renders only `source: sim` cameras; this robot config has"
            f" {[c.name for c in robot.cameras if c.source != 'sim']} (use robot_sim[_state].yaml)"
        )
    return GraphContext(kind, sim, values, robot, task, files)


# ---- the graphs ----------------------------------------------------------------------------------
def build_graph(kind: GraphKind, sim: bool, overrides: Mapping[str, str] | None = None) -> list[NodeSpec]:
    """The node specs of one graph for launch-argument values `overrides` (module docstring)."""
    ctx = resolve(kind, sim, overrides)
    nodes = _sim_nodes(ctx) if sim else []
    nodes += _sensing_nodes(ctx)
    nodes += _record_nodes(ctx) if kind == "record" else _finetune_nodes(ctx)
    for extra in EXTRA_NODES:
        nodes += extra(ctx)
    if sim and int(ctx.values["episodes"]) > 0:
        nodes.append(_episode_driver(ctx, nodes))
    names = [n.name for n in nodes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise GraphError(f"node names used twice in the {kind} graph: {duplicates}")
    user_file = ctx.path("params_file")
    if user_file:
        nodes = [_with_param_file(n, user_file) for n in nodes]
    return nodes


def _with_param_file(node: NodeSpec, path: str) -> NodeSpec:
    return NodeSpec(**{**node.__dict__, "param_files": (*node.param_files, path)})


def _common(ctx: GraphContext) -> dict[str, Any]:
    return {
        "use_sim_time": ctx.sim,
        "robot_config": ctx.files["robot_config"],
        "task_config": ctx.files["task_config"],
    }


def _state_timeout(ctx: GraphContext, name: str) -> dict[str, Any]:
    """The sim's state timeout for a node that reads it (joint_node: `state_timeout_s`; the controllers
    `robot.state_timeout_s`); on a robot the robot config's value stands."""
    return {name: float(ctx.values["state_timeout_s"])} if ctx.sim else {}


def _sim_nodes(ctx: GraphContext) -> list[NodeSpec]:
    params = {
        **_common(ctx),
        "sim_config": ctx.files["sim_config"],
        "lockstep": ctx.flag("lockstep"),
        "real_time_factor": float(ctx.values["real_time_factor"]),
        "seed": int(ctx.values["seed"]),
    }
    return [NodeSpec("sim_node", "sim_node", params, "MuJoCo robot + task behind the robot's topics, /clock")]


def _sensing_nodes(ctx: GraphContext) -> list[NodeSpec]:
    joint = {**_common(ctx), **_state_timeout(ctx, "state_timeout_s")}
    nodes = [NodeSpec("joint_node", "joint_node", joint, "/joint_states -> /coirl/state, checked")]
    for camera in ctx.robot.cameras:
        nodes.append(
            NodeSpec(
                "camera_node", f"camera_{camera.name}", {**_common(ctx), "camera": camera.name},
                f"camera {camera.name} ({camera.source}) -> {camera.image_topic}",
            )
        )  # fmt: skip
    return nodes


def _recorder(ctx: GraphContext, source: str, store: str) -> NodeSpec:
    params = {
        **_common(ctx),
        "policy_config": ctx.files["policy_config"],
        "recorder_config": ctx.files["recorder_config"],
        "store": store,
        "source": source,
    }
    return NodeSpec("recorder_node", "recorder_node", params, f"{source} episodes -> {store}")


def _record_nodes(ctx: GraphContext) -> list[NodeSpec]:
    teleop = {
        **_common(ctx),
        "policy_config": ctx.files["policy_config"],
        "teleop_config": ctx.files["teleop_config"],
        **_state_timeout(ctx, "robot.state_timeout_s"),
    }
    source = ctx.values["teleop_source"]
    if source:
        teleop["teleop.source"] = source
    else:
        source = load_config(ctx.files["teleop_config"], TeleopConfig).source
    if source == "scripted" and not ctx.sim:
        raise GraphError("teleop_source scripted mirrors the sim: it runs only in the sim graph (--sim)")
    return [
        _recorder(ctx, "scripted" if source == "scripted" else "teleop", ctx.path("store")),
        NodeSpec("teleop_node", "teleop_node", teleop, f"teleoperation ({source}) -> robot commands + steps"),
    ]


def _finetune_nodes(ctx: GraphContext) -> list[NodeSpec]:
    store = ctx.path("store")
    record_store = ctx.path("record_store") or store
    residual = ctx.flag("residual")
    shared = {
        **_common(ctx),
        "policy_config": ctx.files["policy_config"],
        "learner_config": ctx.files["learner_config"],
        "learner.store": store,
    }
    if ctx.values["base_checkpoint"]:
        shared["policy.base.checkpoint"] = ctx.path("base_checkpoint")
    policy = {
        **shared,
        "explore": ctx.flag("explore"),
        "explore_temperature": float(ctx.values["explore_temperature"]),
        "asynchronous_base": ctx.flag("asynchronous_base"),
        **_state_timeout(ctx, "robot.state_timeout_s"),
    }
    if ctx.values["initial_weights"]:
        policy["initial_weights"] = ctx.path("initial_weights")
    if not residual:
        policy["learner.method"] = "base"  # no swapper: published weights are ignored
    what = "base + residual" if residual else "base only"
    nodes = [
        _recorder(ctx, "policy", record_store),
        NodeSpec("policy_node", "policy_node", policy, f"control loop ({what}) -> robot commands + steps"),
    ]
    if residual and ctx.flag("learner"):
        learner = dict(shared)
        if ctx.values["checkpoint"]:
            learner["checkpoint"] = ctx.path("checkpoint")
        nodes.append(
            NodeSpec(
                "learner_node", "learner_node", learner,
                "follows the store, trains, publishes weights; restarted after a crash (resumes)",
                respawn=True,
            )
        )  # fmt: skip
    return nodes


def _episode_driver(ctx: GraphContext, nodes: list[NodeSpec]) -> NodeSpec:
    params: dict[str, Any] = {
        "use_sim_time": ctx.sim,
        "task_config": ctx.files["task_config"],
        "episodes": int(ctx.values["episodes"]),
    }
    if int(ctx.values["max_steps"]):
        params["max_steps"] = int(ctx.values["max_steps"])
    names = {n.name for n in nodes}
    after = [(n, CONTROLLER_TICKING_LINE) for n in ("policy_node", "teleop_node") if n in names]
    after += [(n, line) for n, line in READY_LINES.items() if n in names]
    if "recorder_node" in names:
        after += [("recorder_node", RECORDER_CAMERA_LINE.format(c.name)) for c in ctx.robot.cameras]
    if ctx.kind == "finetune" and ctx.values["initial_weights"] and ctx.flag("residual"):
        after.append(("policy_node", WEIGHTS_VALIDATED_LINE))  # no episode on the base alone by accident
    if "learner_node" in names:
        # Fine-tuning episodes start once the learner's first weights are out: before that the policy
        # would only roll the base out while the learner pretrains on the same cores.
        after.append(("learner_node", WEIGHTS_PUBLISHED_LINE))
    return NodeSpec(
        "episode_driver", "episode_driver", params,
        f"{params['episodes']} episodes (reset, record, run to success or max_steps, label), then stop",
        finite=True, start_after=tuple(after), start_delay_s=DISCOVERY_SETTLE_S,
    )  # fmt: skip


# ---- extension points ----------------------------------------------------------------------------
# Functions adding nodes (GraphContext -> [NodeSpec]) and launch arguments ((kind, sim) -> [LaunchArgument]).
EXTRA_NODES: list[Callable[[GraphContext], list[NodeSpec]]] = []
EXTRA_ARGUMENTS: list[Callable[[GraphKind, bool], list[LaunchArgument]]] = []


def register_extra_nodes(
    nodes: Callable[[GraphContext], list[NodeSpec]],
    arguments: Callable[[GraphKind, bool], list[LaunchArgument]] | None = None,
) -> None:
    """Add a node builder (and its launch arguments) to every graph."""
    EXTRA_NODES.append(nodes)
    if arguments is not None:
        EXTRA_ARGUMENTS.append(arguments)


# ---- for the front ends --------------------------------------------------------------------------
def ros_parameter_value(value: Any) -> Any:
    """A parameter value as a ROS parameter file holds it (paths as strings)."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def ros_parameters(node: NodeSpec) -> dict[str, Any]:
    return {k: ros_parameter_value(v) for k, v in node.parameters.items()}


# ---- registered extra nodes (imported last: they import this module) -----------------------------
import coirl_ros.dashboard.graph_nodes  # noqa: E402, F401  -- dashboard_node in every graph
