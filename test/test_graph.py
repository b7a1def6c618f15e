"""The graph description and its two front ends, checked without starting ROS.

- every executable a graph names is a console script of the package and a module with `main()`;
- every `*_config` file a graph names exists and parses with its typed model;
- the launch files: `launch`/`launch_ros` are not installable here (no wheels), so each launch file is
  parsed with `ast` (it builds its description through coirl_ros.launch_actions) and then imported and
  run against a stand-in for those two packages (below), whose `Node` accepts exactly the keyword
  arguments launch_ros's `Node` (Jazzy) and launch's `ExecuteProcess` accept. What that checks: the
  arguments are declared with descriptions, and the actions built at launch time are the graph's
  nodes with their parameters, respawn, shutdown and start-order handlers. What it cannot check: launch
  itself (on a robot, `ros2 launch coirl_ros sim.launch.py --show-args` does).
- `coirl launch --dry-run`: the same nodes as processes, with their parameter files.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import yaml

from coirl_ros.configs import LearnerConfig, PolicyConfig, RobotConfig, TaskConfig, load_config
from coirl_ros.configs.dashboard import DashboardConfig
from coirl_ros.configs.recorder import RecorderConfig
from coirl_ros.configs.sim import SimConfig
from coirl_ros.configs.teleop import TeleopConfig
from coirl_ros.graph import GraphError, NodeSpec, build_graph, launch_arguments

ROOT = Path(__file__).resolve().parent.parent
LAUNCH_FILES = {
    "finetune.launch.py": ("finetune", False),
    "record_demos.launch.py": ("record", False),
    "sim.launch.py": (None, True),
}
CONFIG_MODELS = {
    "robot_config": RobotConfig,
    "task_config": TaskConfig,
    "policy_config": PolicyConfig,
    "learner_config": LearnerConfig,
    "teleop_config": TeleopConfig,
    "sim_config": SimConfig,
    "recorder_config": RecorderConfig,
    "dashboard_config": DashboardConfig,
}
# Graph variants: every node any of them starts is covered.
VARIANTS: list[tuple[str, bool, dict[str, str]]] = [
    ("finetune", False, {}),
    ("record", False, {"teleop_source": "joy"}),
    ("finetune", True, {}),
    ("finetune", True, {"robot_config": "robot_sim_state.yaml", "residual": "false", "episodes": "0"}),
    ("record", True, {}),
]


def all_nodes() -> list[NodeSpec]:
    return [node for kind, sim, values in VARIANTS for node in build_graph(kind, sim, values)]  # type: ignore[arg-type]


def test_every_executable_is_a_console_script_and_a_module_with_main() -> None:
    scripts = {ep.name: ep.value for ep in importlib.metadata.distribution("coirl_ros").entry_points}
    setup_text = (ROOT / "setup.py").read_text()
    executables = {node.executable for node in all_nodes()}
    assert {
        "sim_node",
        "joint_node",
        "camera_node",
        "recorder_node",
        "policy_node",
        "learner_node",
        "teleop_node",
        "episode_driver",
    } <= executables
    for exe in sorted(executables):
        assert scripts.get(exe) == f"coirl_ros.nodes.{exe}:main", f"{exe} is not an installed console script"
        assert f'"{exe} = coirl_ros.nodes.{exe}:main"' in setup_text
        # Parsed, not imported (importing every node pulls in torch and LeRobot): a top-level main().
        spec = importlib.util.find_spec(f"coirl_ros.nodes.{exe}")
        assert spec is not None and spec.origin, f"no module coirl_ros.nodes.{exe}"
        tree = ast.parse(Path(spec.origin).read_text())
        mains = [f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "main"]
        assert mains, f"coirl_ros.nodes.{exe} has no main()"


def test_every_config_file_named_exists_and_parses_with_its_model() -> None:
    checked = set()
    for node in all_nodes():
        for key, value in node.parameters.items():
            if key.endswith("_config"):
                assert key in CONFIG_MODELS, f"{node.name}: no model known for parameter {key}"
                path = Path(value)
                assert path.is_absolute() and path.is_file(), (node.name, key, value)
                load_config(path, CONFIG_MODELS[key])
                checked.add(path.name)
    assert {
        "robot.yaml",
        "robot_sim.yaml",
        "robot_sim_state.yaml",
        "task.yaml",
        "task_lift.yaml",
        "policy.yaml",
        "policy_sim.yaml",
        "learner.yaml",
        "learner_sim.yaml",
        "teleop.yaml",
        "sim.yaml",
        "recorder.yaml",
    } <= checked


def test_graphs_share_time_and_files_and_know_their_order() -> None:
    nodes = {n.name: n for n in build_graph("finetune", True, {"store": "rel/store.zarr"})}
    assert set(nodes) == {
        "sim_node",
        "joint_node",
        "camera_front",
        "camera_wrist",
        "recorder_node",
        "policy_node",
        "learner_node",
        "episode_driver",
        "dashboard_node",
    }
    assert all(n.parameters["use_sim_time"] is True for n in nodes.values())
    store = str((Path.cwd() / "rel/store.zarr").resolve())  # absolute: nodes resolve against their own cwd
    assert nodes["recorder_node"].parameters["store"] == store
    assert (
        nodes["learner_node"].parameters["learner.store"]
        == store
        == nodes["policy_node"].parameters["learner.store"]
    )
    for key in ("robot_config", "policy_config", "learner_config", "task_config"):
        assert nodes["policy_node"].parameters[key] == nodes["learner_node"].parameters[key]
    assert nodes["learner_node"].respawn and nodes["episode_driver"].finite
    assert ("learner_node", "published weights v") in nodes["episode_driver"].start_after
    for camera in ("front", "wrist"):  # the recorder hears every camera before the first start
        assert ("recorder_node", f"camera {camera}: first frame") in nodes["episode_driver"].start_after
    assert nodes["camera_wrist"].parameters["camera"] == "wrist"
    robot = {n.name: n for n in build_graph("finetune", False, {})}
    assert "sim_node" not in robot and "episode_driver" not in robot
    assert all(n.parameters["use_sim_time"] is False for n in robot.values())
    base_only = {n.name: n for n in build_graph("finetune", True, {"residual": "false"})}
    assert "learner_node" not in base_only and base_only["policy_node"].parameters["learner.method"] == "base"


@pytest.mark.parametrize(
    ("kind", "sim", "values", "message"),
    [
        ("finetune", True, {"bogus": "1"}, "unknown launch argument 'bogus'"),
        ("finetune", True, {"explore": "maybe"}, "explore"),
        ("finetune", True, {"explore_temperature": "2"}, "[0, 1]"),
        ("finetune", False, {"robot_config": "nope.yaml"}, "no file 'nope.yaml'"),
        ("record", False, {"teleop_source": "scripted"}, "only in the sim graph"),
        ("finetune", True, {"robot_config": "robot.yaml"}, "only `source: sim` cameras"),
        ("finetune", True, {"episodes": "-1"}, "episodes"),
    ],
)
def test_bad_launch_arguments_are_refused_before_anything_starts(
    kind: str, sim: bool, values: dict[str, str], message: str
) -> None:
    with pytest.raises(GraphError, match=None) as err:
        build_graph(kind, sim, values)  # type: ignore[arg-type]
    assert message in str(err.value)


# ---- launch files --------------------------------------------------------------------------------------
def test_launch_files_build_their_graph_through_launch_actions() -> None:
    for name, (kind, sim) in LAUNCH_FILES.items():
        tree = ast.parse((ROOT / "launch" / name).read_text(), name)
        functions = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
        assert "generate_launch_description" in functions, name
        calls = [n for n in ast.walk(functions["generate_launch_description"]) if isinstance(n, ast.Call)]
        call = next(c for c in calls if getattr(c.func, "id", "") == "generate_graph_launch_description")
        assert ast.literal_eval(call.args[0]) == kind and ast.literal_eval(call.keywords[0].value) is sim
        assert ast.get_docstring(tree), f"{name}: say how to run it"
    for kind in ("finetune", "record"):
        for sim in (False, True):
            for arg in launch_arguments(kind, sim):  # type: ignore[arg-type]
                assert len(arg.description) > 20, f"launch argument {arg.name} needs a description"


# Keyword arguments of launch_ros.actions.Node (Jazzy) and of launch.actions.ExecuteProcess, which it
# forwards to; the stand-in refuses anything else, as Python would.
NODE_KWARGS = {
    "executable",
    "package",
    "name",
    "namespace",
    "exec_name",
    "parameters",
    "remappings",
    "ros_arguments",
    "arguments",
}
EXECUTE_PROCESS_KWARGS = {
    "cwd",
    "env",
    "additional_env",
    "shell",
    "sigterm_timeout",
    "sigkill_timeout",
    "emulate_tty",
    "output",
    "output_format",
    "log_cmd",
    "cached_output",
    "on_exit",
    "respawn",
    "respawn_delay",
    "respawn_max_retries",
    "prefix",
    "name",
}


class _Action:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs


class _StubNode(_Action):
    def __init__(self, **kwargs: Any) -> None:
        unknown = set(kwargs) - NODE_KWARGS - EXECUTE_PROCESS_KWARGS
        assert not unknown, f"launch_ros Node takes no {unknown}"
        assert "executable" in kwargs
        super().__init__(**kwargs)


class _LaunchConfiguration:
    values: dict[str, str] = {}

    def __init__(self, name: str) -> None:
        self.name = name

    def perform(self, context: Any) -> str:
        return context[self.name]


def _stub_launch_modules() -> dict[str, types.ModuleType]:
    def module(name: str, **attrs: Any) -> types.ModuleType:
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        return mod

    return {
        "launch": module("launch", LaunchDescription=lambda actions: list(actions)),
        "launch.actions": module(
            "launch.actions",
            DeclareLaunchArgument=_Action,
            OpaqueFunction=_Action,
            EmitEvent=_Action,
            RegisterEventHandler=_Action,
            TimerAction=_Action,
        ),
        "launch.substitutions": module("launch.substitutions", LaunchConfiguration=_LaunchConfiguration),
        "launch.event_handlers": module("launch.event_handlers", OnProcessExit=_Action, OnProcessIO=_Action),
        "launch.events": module("launch.events", Shutdown=_Action),
        "launch_ros": module("launch_ros"),
        "launch_ros.actions": module("launch_ros.actions", Node=_StubNode),
        "launch_ros.parameter_descriptions": module(
            "launch_ros.parameter_descriptions", ParameterValue=lambda v, value_type: value_type(v)
        ),
    }


@pytest.fixture
def stub_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    """launch/launch_ros stand-ins, only where the real ones are absent (they are, here)."""
    if importlib.util.find_spec("launch_ros") is not None:
        pytest.skip("real launch_ros installed: use `ros2 launch ... --show-args` instead of the stand-in")
    for name, mod in _stub_launch_modules().items():
        monkeypatch.setitem(sys.modules, name, mod)


def _load_launch_file(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name.replace(".", "_"), ROOT / "launch" / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate_launch_description()


@pytest.mark.parametrize("name", sorted(LAUNCH_FILES))
def test_launch_files_turn_the_graph_into_launch_ros_actions(name: str, stub_launch: None) -> None:
    kind, sim = LAUNCH_FILES[name]
    actions = _load_launch_file(name)
    declared = {
        a.args[0]: a.kwargs for a in actions if type(a) is _Action and a.args and isinstance(a.args[0], str)
    }
    kinds = [kind] if kind else ["finetune", "record"]
    expected = {a.name for k in kinds for a in launch_arguments(k, sim)} | (
        {"graph"} if kind is None else set()
    )  # type: ignore[arg-type]
    assert set(declared) == expected
    assert all(kw["description"] for kw in declared.values())
    opaque = next(a for a in actions if "function" in a.kwargs)
    for graph in kinds:
        context = {n: kw["default_value"] for n, kw in declared.items()} | {"graph": graph}
        built = opaque.kwargs["function"](context, *opaque.kwargs["args"])
        nodes = [a for a in built if isinstance(a, _StubNode)]
        handlers = [
            a.args[0] for a in built if type(a) is _Action and a.args and isinstance(a.args[0], _Action)
        ]
        own = {a.name: context[a.name] for a in launch_arguments(graph, sim)}  # type: ignore[arg-type]
        specs = {s.name: s for s in build_graph(graph, sim, own)}  # type: ignore[arg-type]
        started_later = {s.name for s in specs.values() if s.start_after}
        assert {n.kwargs["name"] for n in nodes} == set(specs) - started_later
        for node in nodes:
            spec = specs[node.kwargs["name"]]
            assert node.kwargs["package"] == "coirl_ros" and node.kwargs["executable"] == spec.executable
            assert node.kwargs["parameters"][0] == dict(spec.parameters)
            assert node.kwargs["respawn"] == spec.respawn
        exits = [h for h in handlers if "on_exit" in h.kwargs]
        assert len(exits) == len([s for s in specs.values() if not s.respawn])  # any other exit: shutdown
        delayed = [h.kwargs["on_stdout"] for h in handlers if "on_stdout" in h.kwargs]
        if started_later:  # the driver starts once every condition's text was printed, and once only
            texts = [t for s in specs.values() for _, t in s.start_after]
            outputs = [types.SimpleNamespace(text=f"[INFO] {t}".encode()) for t in texts]
            assert all(cb(ev) is None for cb, ev in zip(delayed[:-1], outputs[:-1], strict=True))
            (timer,) = delayed[-1](outputs[-1])  # then a settling delay for DDS discovery
            (driver,) = timer.kwargs["actions"]
            assert timer.kwargs["period"] == specs["episode_driver"].start_delay_s > 0
            assert driver.kwargs["name"] == "episode_driver" and delayed[-1](outputs[-1]) is None


def test_coirl_launch_dry_run_prints_each_node_with_its_parameter_file(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "coirl_ros.cli",
            "launch",
            "finetune",
            "--sim",
            "--dry-run",
            "--log-dir",
            str(tmp_path),
            "base_checkpoint:=/opt/base",
            "explore:=false",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(": ", 1) for line in out.stdout.splitlines())
    assert (
        "-m coirl_ros.nodes.policy_node --ros-args -r __node:=policy_node --params-file"
        in lines["policy_node"]
    )
    assert "once policy_node prints" in lines["episode_driver"]
    params = yaml.safe_load((tmp_path / "policy_node.params.yaml").read_text())["/**"]["ros__parameters"]
    assert params["policy.base.checkpoint"] == "/opt/base" and params["explore"] is False
    assert params["use_sim_time"] is True and isinstance(params["explore_temperature"], float)
