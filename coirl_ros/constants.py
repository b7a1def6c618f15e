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

# "takeover": an operator's correction from a state the policy reached (the policy's part of that
# episode is not in it), HG-DAgger's data; it is a demonstration like the others.
EpisodeSource = Literal["teleop", "policy", "scripted", "takeover"]
EPISODE_SOURCES: tuple[str, ...] = ("teleop", "policy", "scripted", "takeover")
DEMO_SOURCES: tuple[str, ...] = ("teleop", "scripted", "takeover")  # what counts as a demonstration


def image_key(camera: str) -> str:
    """Episode/batch key of one camera's images."""
    return f"{OBS_IMAGES}.{camera}"


NEXT = "next."  # prefix of successor-state keys in sampled batches: f"{NEXT}{OBS_STATE}"
