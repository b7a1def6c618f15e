"""The seam between the web app and the robot: what the dashboard reads and what it can ask for.

`create_app(source)` knows nothing of ROS. `dashboard_node` implements `DashboardSource` over the
running graph (topics and services); tests implement it over an in-process stand-in with a real
episode store. A control that cannot be carried out raises a `CommandError` subclass, which the app
turns into the matching HTTP status with the message for the operator.
"""

from __future__ import annotations

from typing import Protocol

from coirl_ros.dashboard.models import CommandResult, EpisodeList, EpisodeRow, LossCurves, StatusSnapshot


class CommandError(RuntimeError):
    """A control that was not carried out; `status_code` is the HTTP status the app answers with."""

    status_code = 500


class CommandUnavailable(CommandError):
    """The node that would carry it out is not running or did not answer in time (503)."""

    status_code = 503


class CommandRefused(CommandError):
    """The node answered but refused, e.g. stop while not recording (409)."""

    status_code = 409


class NotFound(CommandError):
    """The thing named does not exist, e.g. an episode index not in the store (404)."""

    status_code = 404


class DashboardSource(Protocol):
    """Status of the node graph, the episode store, and the operator's controls."""

    def status(self) -> StatusSnapshot:
        """Node liveness, control loop, learner, recorder and weights, as of now."""
        ...

    def loss_curves(self) -> LossCurves:
        """The learner's losses against its updates (revision increases when a point is added)."""
        ...

    def episodes(self) -> EpisodeList:
        """Every committed episode and the success curve (revision increases when the store changes)."""
        ...

    def start_episode(self) -> CommandResult:
        """Start recording an episode (/recorder/start)."""
        ...

    def stop_episode(self, success: bool) -> CommandResult:
        """Stop and commit the episode with its success label (/recorder/stop)."""
        ...

    def discard_episode(self) -> CommandResult:
        """Drop the episode being recorded (/recorder/discard)."""
        ...

    def label_episode(self, index: int | None, success: bool | None) -> EpisodeRow:
        """Relabel a committed episode (None: the last one) in the store."""
        ...

    def reset_sim(self) -> CommandResult:
        """New sim episode, next seed (/sim/reset)."""
        ...

    def pause_learner(self, paused: bool) -> CommandResult:
        """Pause or resume training (/learner/pause)."""
        ...

    def hold(self, hold: bool) -> CommandResult:
        """Emergency hold: the policy holds position until released (/policy/hold)."""
        ...
