"""Base actions for demonstrations recorded without the base running (teleop, scripted).

The learner needs a_base at demonstration states (the residual's input and its target
u = (a_demo - a_base) / scale), but a person teleoperating does not run the base. Replaying the
frozen base over the recorded observations, with the control loop's re-query schedule, gives what it
would have proposed there. Used as the learner's `on_load` hook; the store itself is never modified.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from coirl_ros.constants import ACTION_BASE, DEMO_SOURCES, OBS_ENV_STATE, OBS_IMAGES, OBS_STATE
from coirl_ros.data.episode_store import Episode
from coirl_ros.policies.base_policy import BasePolicy
from coirl_ros.policies.composition import ChunkedBaseRunner, base_actions_along


def episode_observations(episode: Episode) -> list[dict[str, np.ndarray]]:
    """Per frame, the observation arrays the episode holds (state, object state, loaded images),
    under the store's keys, which is how the control loop hands observations to a base."""
    keys = [k for k in episode.data if k in (OBS_STATE, OBS_ENV_STATE) or k.startswith(OBS_IMAGES + ".")]
    return [{k: episode.data[k][t] for k in keys} for t in range(episode.meta.num_frames)]


def demo_base_filler(base: BasePolicy, requery_every: int) -> Callable[[Episode], None]:
    """`on_load` hook: a demonstration whose base actions are all zero gets the base's proposals."""
    runner = ChunkedBaseRunner(base, requery_every)

    def fill(episode: Episode) -> None:
        if episode.meta.source not in DEMO_SOURCES or np.any(episode.data[ACTION_BASE]):
            return
        try:
            episode.data[ACTION_BASE] = base_actions_along(runner, episode_observations(episode))
        except KeyError as err:
            raise ValueError(
                f"episode {episode.meta.index}: the base needs {err}, which the learner did not load"
                " (a camera-based base needs the images: fill base actions offline, or record demos"
                " with the base running)"
            ) from err

    return fill
