"""What the dashboard's API sends and accepts: pydantic models, so every payload has one schema.

Requests are strict (`extra="forbid"`, strict booleans): `{"success": "yes"}` or a misspelt key is a
422 naming the field, never a silently wrong label on the robot's data.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool


class NodeState(BaseModel):
    """One node of the graph: alive from the freshness of its diagnostics, else from ROS graph presence."""

    name: str
    alive: bool
    seen: bool  # ever heard from (a node listed in advance may not have started yet)
    via: Literal["diagnostics", "graph", "none"]
    age_s: float | None = None  # since its last diagnostics message (None: judged by graph presence)
    detail: str = ""  # the node's own status word, e.g. "ok", "stale", "holding: operator_hold"


class Quantiles(BaseModel):
    p50: float | None = None
    p99: float | None = None
    max: float | None = None


class ControlState(BaseModel):
    """The policy node's control loop, from its last diagnostics report."""

    rate_hz: float | None = None  # measured between the last two reports (ticks / node time)
    target_rate_hz: float | None = None
    tick_latency_ms: Quantiles = Quantiles()
    missed_ticks: int | None = None
    hold_reason: str | None = None  # None: acting
    operator_hold: bool = False
    episode_active: bool = False
    active_version: int | None = None  # the residual's weights version (0/None: base only)
    commands_sent: int | None = None
    age_s: float | None = None


class LearnerState(BaseModel):
    """The learner node's last metrics report."""

    status: str | None = None
    phase: str | None = None
    updates: int | None = None
    env_steps: int | None = None
    version: int | None = None
    updates_per_s: float | None = None
    paused: bool | None = None
    method: str | None = None
    error: str | None = None
    losses: dict[str, float | None] = {}
    age_s: float | None = None


class RecordingState(BaseModel):
    """The recorder, from its latched episode events."""

    active: bool = False
    index: int | None = None  # the episode being recorded, else the last one the recorder reported
    last_event: str | None = None  # start | stop | discard
    success: bool | None = None  # the label of the last stop
    frames: int | None = None


class WeightsState(BaseModel):
    """The policy node's verdict on the last weight snapshot it received."""

    accepted: bool | None = None
    version: int | None = None
    reason: str | None = None


class StatusSnapshot(BaseModel):
    """Everything live on the page's status panels."""

    time: float
    nodes: list[NodeState]
    control: ControlState | None = None  # None: no policy diagnostics yet
    learner: LearnerState | None = None
    recording: RecordingState = RecordingState()
    weights: WeightsState | None = None


class EpisodeRow(BaseModel):
    """One committed episode of the store."""

    index: int
    task: str
    source: str
    length: int  # frames (= environment steps)
    success: bool | None
    policy_version: int | None
    created_at: float


class CurvePoint(BaseModel):
    """Rolling success rate after a labelled episode, against cumulative environment steps."""

    index: int
    env_steps: int
    success: bool
    success_rate: float
    window: int  # labelled episodes the rate is over (fewer than the window at the start)


class EpisodeList(BaseModel):
    """The store's episodes and the success curve, at one revision of the store."""

    store: str
    revision: int
    available: bool  # False: no store there yet (the recorder creates it on the first start)
    message: str = ""
    episodes: list[EpisodeRow] = []
    curve: list[CurvePoint] = []
    curve_sources: list[str] = []
    problems: list[str] = []  # unreadable episodes, one line each


class LossSeries(BaseModel):
    """One learner loss against learner updates."""

    key: str
    points: list[tuple[int, float]]


class LossCurves(BaseModel):
    revision: int
    series: list[LossSeries]


class CommandResult(BaseModel):
    """What a control did: the node's answer, as text and parsed JSON where it sent JSON."""

    ok: bool
    message: str
    detail: dict[str, Any] = {}


# ---- requests ----------------------------------------------------------------------------------
class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmptyRequest(_Request):
    """A control without arguments (still a JSON object: `{}`)."""


class StopRequest(_Request):
    success: StrictBool  # the episode's label, given as it is committed


class LabelRequest(_Request):
    # None = the store's last committed episode (what "mark last episode" on a real robot means)
    index: Annotated[int, Field(ge=0)] | None = None
    success: StrictBool | None  # required; null clears the label


class PauseRequest(_Request):
    paused: StrictBool


class HoldRequest(_Request):
    hold: StrictBool
