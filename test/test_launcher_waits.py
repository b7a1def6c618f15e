"""The launcher names what a node that starts after others is still waiting for."""

from __future__ import annotations

import io

import pytest

from coirl_ros import launcher as launcher_module
from coirl_ros.graph import NodeSpec
from coirl_ros.launcher import Launcher, RunningNode


def test_a_waiting_node_is_told_with_the_texts_still_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launcher_module, "WAIT_REPORT_S", 0.0)
    recorder = NodeSpec("recorder_node", "recorder_node", {}, "records")
    conditions = (("recorder_node", "recording "), ("recorder_node", "camera front: first frame"))
    driver = NodeSpec("episode_driver", "episode_driver", {}, "drives", start_after=conditions)
    out = io.StringIO()
    graph = Launcher([recorder, driver], stream=out)
    # The recorder printed its start-up line but never heard the camera (nothing is spawned here:
    # the supervisor's check runs on the lines a node printed).
    graph.instances["recorder_node"].append(
        RunningNode(recorder, None, None, lines=["[INFO] recording lift (teleop) into x.zarr"])  # type: ignore[arg-type]
    )
    graph._start_due()
    said = out.getvalue()
    assert "episode_driver still waits for recorder_node: 'camera front: first frame'" in said, said
    assert "'recording '" not in said and graph.instances["episode_driver"] == []
