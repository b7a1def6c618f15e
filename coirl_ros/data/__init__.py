"""Episode storage (zarr v3): spec, store, writer, minibatch sampler, LeRobot import/export. No ROS."""

from coirl_ros.data.episode_spec import ArraySpec, EpisodeSpec, FrameError
from coirl_ros.data.episode_store import (
    CorruptEpisodeError,
    Episode,
    EpisodeMeta,
    EpisodeStore,
    PartialEpisode,
    StoreError,
    VerifyReport,
)
from coirl_ros.data.episode_writer import EpisodeWriter

__all__ = [
    "ArraySpec",
    "CorruptEpisodeError",
    "Episode",
    "EpisodeMeta",
    "EpisodeSpec",
    "EpisodeStore",
    "EpisodeWriter",
    "FrameError",
    "PartialEpisode",
    "StoreError",
    "VerifyReport",
]
