"""The demonstration / rollout recorder (recorder_node)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from coirl_ros.configs.loading import ConfigModel
from coirl_ros.constants import EpisodeSource


class RecorderConfig(ConfigModel):
    """Where episodes go, what they are labelled, and how steps are paired with observations."""

    store: Annotated[str, Field(min_length=1)] = "runs/episodes.zarr"
    source: EpisodeSource = "teleop"
    task: str = ""  # "" = task.yaml's name
    flush_every: Annotated[int, Field(gt=0)] = 30  # frames per background write (EpisodeWriter)
    # States, camera frames and environment states are kept this long to pair them with steps.
    buffer_s: Annotated[float, Field(gt=0)] = 5.0
    # A step whose state has not arrived yet waits this long (wall time) before it is skipped. It only
    # bounds the wait for a stream that stopped; a loaded 2-core machine can hold joint_node back >0.5 s.
    step_wait_s: Annotated[float, Field(gt=0)] = 2.0
    # A camera frame more than this older than the step's observation is not paired (step skipped).
    max_image_lag_s: Annotated[float, Field(gt=0)] = 0.5
    # A start waits this long (wall time) for a first frame from every camera, then fails: an episode
    # begun before a camera's frames reach the recorder loses its first steps (best-effort frames sent
    # before discovery matched the recorder are gone), and one from a dead camera loses all of them.
    camera_wait_s: Annotated[float, Field(gt=0)] = 5.0
    # Object-state values per frame (/coirl/environment_state) when the store is created: 0 = none (a
    # robot), n = the sim task's object state; None = an existing store's, else the size of the
    # sim's (latched) message, else 0 when nothing publishes one (see recorder_node).
    env_state_dim: Annotated[int, Field(ge=0)] | None = None
    # With env_state_dim None and no store yet, "nobody publishes the object state" is concluded only
    # this long (wall time) after the recorder started: ROS's graph (count_publishers) learns of other
    # nodes through a topic of its own, which can lag the data. CI once saw a first start, with the
    # sim's camera frames already arriving, find no publisher and create a store without object state,
    # for good. On a robot only a start within this long of launch waits (up to 10 s) for it.
    env_state_discovery_s: Annotated[float, Field(ge=0)] = 5.0
