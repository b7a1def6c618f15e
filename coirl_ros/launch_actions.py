"""The ros2-launch front end of coirl_ros/graph.py: launch_ros actions from the same `NodeSpec`s.

Used by launch/*.launch.py. `launch` and `launch_ros` exist only on a ROS 2 install (no wheels), so
they are imported inside the functions: this module imports anywhere, and the tests check it with a
stand-in for those two packages (test/test_graph.py says how).

Behaviour matches `coirl launch` (coirl_ros/launcher.py): every launch argument declared with its
description; nodes built from the argument values at launch time (OpaqueFunction); `respawn` nodes
restarted; a `finite` node's exit, or any other node's, shuts the launch down with a reason;
`start_after` nodes started `start_delay_s` after the named nodes printed their texts.
"""

from __future__ import annotations

from typing import Any

from coirl_ros.graph import GraphKind, LaunchArgument, NodeSpec, build_graph, launch_arguments

PACKAGE = "coirl_ros"


def declared_arguments(kinds: tuple[GraphKind, ...], sim: bool) -> list[LaunchArgument]:
    """The union of the graphs' launch arguments (first description wins), in declaration order."""
    seen: dict[str, LaunchArgument] = {}
    for kind in kinds:
        for arg in launch_arguments(kind, sim):
            seen.setdefault(arg.name, arg)
    return list(seen.values())


def generate_graph_launch_description(kind: GraphKind | None, sim: bool) -> Any:
    """A LaunchDescription for one graph (`kind`), or, with `kind=None`, for the graph named by the
    launch argument `graph` (sim.launch.py)."""
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    from launch import LaunchDescription

    kinds: tuple[GraphKind, ...] = (kind,) if kind is not None else ("finetune", "record")
    actions: list[Any] = []
    if kind is None:
        actions.append(
            DeclareLaunchArgument(
                "graph",
                default_value="finetune",
                description="which graph to run in sim: finetune (policy + learner) or record (teleop demos)",
                choices=["finetune", "record"],
            )
        )
    for arg in declared_arguments(kinds, sim):
        extra = {"choices": list(arg.choices)} if arg.choices else {}
        actions.append(
            DeclareLaunchArgument(arg.name, default_value=arg.default, description=arg.description, **extra)
        )
    actions.append(OpaqueFunction(function=_graph_actions, args=[kind, sim]))
    return LaunchDescription(actions)


def _graph_actions(context: Any, kind: GraphKind | None, sim: bool) -> list[Any]:
    from launch.substitutions import LaunchConfiguration

    if kind is None:
        kind = LaunchConfiguration("graph").perform(context)  # type: ignore[assignment]
    assert kind is not None
    values = {a.name: LaunchConfiguration(a.name).perform(context) for a in launch_arguments(kind, sim)}
    return node_actions(build_graph(kind, sim, values))


def node_actions(nodes: list[NodeSpec]) -> list[Any]:
    """launch_ros Node actions plus the event handlers for finite, dying and start_after nodes."""
    from launch.actions import EmitEvent, RegisterEventHandler, TimerAction
    from launch.event_handlers import OnProcessExit, OnProcessIO
    from launch.events import Shutdown

    built = {spec.name: _node(spec) for spec in nodes}
    actions: list[Any] = []
    for spec in nodes:
        action = built[spec.name]
        if not spec.start_after:
            actions.append(action)
        else:
            delayed = action
            if spec.start_delay_s > 0:
                delayed = TimerAction(period=spec.start_delay_s, actions=[action])
            gate = _StartGate(delayed, len(spec.start_after))
            for index, (other, text) in enumerate(spec.start_after):
                on_output = gate.callback(index, text)
                actions.append(
                    RegisterEventHandler(
                        OnProcessIO(target_action=built[other], on_stdout=on_output, on_stderr=on_output)
                    )
                )
        if spec.respawn:
            continue  # launch restarts it itself
        what = "finished" if spec.finite else "exited"
        actions.append(
            RegisterEventHandler(
                OnProcessExit(
                    target_action=action,
                    on_exit=lambda event, _ctx, name=spec.name, what=what: [
                        EmitEvent(event=Shutdown(reason=f"{name} {what} (exit code {event.returncode})"))
                    ],
                )
            )
        )
    return actions


class _StartGate:
    """Starts `action` once each of `count` conditions (a text in some node's output) has been seen."""

    def __init__(self, action: Any, count: int) -> None:
        self.action = action
        self.seen = [False] * count
        self.started = False

    def callback(self, index: int, text: str) -> Any:
        """An OnProcessIO callback for condition `index`; returns the action when the last one is met."""

        def on_output(event: Any) -> list[Any] | None:
            if self.started or text not in event.text.decode(errors="replace"):
                return None
            self.seen[index] = True
            if not all(self.seen):
                return None
            self.started = True
            return [self.action]

        return on_output


def _node(spec: NodeSpec) -> Any:
    from pathlib import Path

    from launch_ros.actions import Node
    from launch_ros.parameter_descriptions import ParameterValue

    # Strings pinned as strings: launch would otherwise parse "1.0" or "true" in a path as YAML.
    params = {
        k: ParameterValue(v, value_type=str) if isinstance(v, str) else v for k, v in spec.parameters.items()
    }
    return Node(
        package=PACKAGE,
        executable=spec.executable,
        name=spec.name,
        parameters=[params, *(Path(p) for p in spec.param_files)],
        remappings=list(spec.remappings),
        respawn=spec.respawn,
        respawn_delay=spec.respawn_delay_s,
        output="screen",
        additional_env={"PYTHONUNBUFFERED": "1"},
    )
