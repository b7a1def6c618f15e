"""Names shared across the package: batch/episode keys (LeRobot's naming) and episode sources."""

from typing import Literal

OBS_STATE = "observation.state"
OBS_ENV_STATE = "observation.environment_state"  # privileged object state (sim), optional
OBS_IMAGES = "observation.images"  # one array per camera: f"{OBS_IMAGES}.{camera}"
ACTION = "action"  # the action actually executed on the robot
ACTION_BASE = "action.base"  # what the frozen base policy proposed
ACTION_RESIDUAL = "action.residual"  # what the residual policy added
REWARD = "reward"
DONE = "done"
TIMESTAMP = "timestamp"

EpisodeSource = Literal["teleop", "policy", "scripted"]
EPISODE_SOURCES: tuple[str, ...] = ("teleop", "policy", "scripted")
DEMO_SOURCES: tuple[str, ...] = ("teleop", "scripted")  # what counts as a demonstration


def image_key(camera: str) -> str:
    """Episode/batch key of one camera's images."""
    return f"{OBS_IMAGES}.{camera}"


NEXT = "next."  # prefix of successor-state keys in sampled batches: f"{NEXT}{OBS_STATE}"
