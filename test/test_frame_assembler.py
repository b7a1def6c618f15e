"""FrameAssembler (ROS-free): each step is paired with the observation it was computed from, whatever
order the streams arrive in, and waits are counted in stamps, so a stalled recorder pairs the same."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from coirl_ros.constants import ACTION, OBS_ENV_STATE, OBS_STATE, image_key
from coirl_ros.data import EpisodeSpec
from coirl_ros.recording.frame_assembler import FrameAssembler, Skip

SPEC = EpisodeSpec(state_dim=8, action_dim=7, cameras=(("front", (4, 6)),), fps=20.0, env_state_dim=3)
FPS = 20.0  # camera rate: 1.5 periods = 75 ms
WAIT = 0.5  # step_wait_s


def t(k: int) -> float:
    return 100.0 + 0.05 * k


@dataclass
class Step:
    observation_stamp: float
    tick: int = 0
    stamp: float = 0.0
    policy_version: int = 0
    executed: np.ndarray = field(default_factory=lambda: np.zeros(7))
    base: np.ndarray = field(default_factory=lambda: np.zeros(7))
    residual: np.ndarray = field(default_factory=lambda: np.zeros(7))


def step(k: int, stamp: float | None = None) -> Step:
    return Step(t(k) if stamp is None else stamp, tick=k, executed=np.full(7, k / 100))


def assembler() -> FrameAssembler:
    return FrameAssembler(SPEC, {"front": FPS}, step_wait_s=WAIT)


def observe(a: FrameAssembler, k: int, image: bool = True, image_dt: float = -0.01) -> None:
    """State, object state and (captured just before the state) a camera frame, values encoding k."""
    a.add_state(t(k), np.full(8, k))
    a.add_env_state(t(k), np.full(3, k))
    if image:
        a.add_image("front", t(k) + image_dt, np.full((4, 6, 3), k, np.uint8))


def test_a_step_waits_for_its_own_state_and_takes_nothing_older() -> None:
    a = assembler()
    observe(a, 0)
    observe(a, 1)
    a.submit(step(2), now=0.0)  # overtook its observation
    assert a.drain(now=0.1) == []
    observe(a, 2)
    observe(a, 3)  # the camera has moved past the observation: frame 2 is the newest at or before
    [(s, frame)] = a.drain(now=0.1)
    assert s.tick == 2 and frame[OBS_STATE][0] == 2 and frame[OBS_ENV_STATE][0] == 2
    assert frame[image_key("front")].mean() == 2 and frame[ACTION][0] == np.float32(0.02)


def test_unpairable_steps_are_skipped_in_order_never_mispaired() -> None:
    a = assembler()
    for k in range(4):
        observe(a, k)
    a.submit(step(1, stamp=t(1) + 0.02), now=0.0)  # between two states: no such state
    a.submit(step(9), now=0.0)  # not arrived yet: waits, and so does every step behind it
    a.submit(step(3), now=0.0)
    [(s, skip)] = a.drain(now=0.0)
    assert s.tick == 1 and isinstance(skip, Skip) and skip.kind == "no_state"
    assert a.drain(now=WAIT - 0.01) == [] and a.pending == 2
    (s9, skip9), (_, frame3) = a.drain(now=WAIT)  # step_wait_s of wall time: the stream stopped
    assert (s9.tick, skip9.kind) == (9, "no_state") and frame3[OBS_STATE][0] == 3


def test_a_stalled_recorder_still_takes_the_frame_that_was_in_flight() -> None:
    """A second of wall time passes (the recorder was not scheduled) with the camera frame not yet
    taken: the step keeps waiting, since nothing shows that the frame will not come."""
    a = assembler()
    observe(a, 0)
    a.submit(step(1), now=0.0)
    observe(a, 1, image=False)
    assert a.drain(now=0.3) == []  # 0.3 s: far beyond 1.5 camera periods, within step_wait_s
    a.add_image("front", t(1) - 0.01, np.full((4, 6, 3), 1, np.uint8))
    observe(a, 2)
    [(_, frame)] = a.drain(now=0.31)
    assert frame[image_key("front")].mean() == 1


def test_a_camera_behind_by_more_than_its_period_gives_the_newest_frame_once_states_move_on() -> None:
    a = assembler()
    observe(a, 0)
    observe(a, 1, image=False)  # the camera dropped this frame
    a.submit(step(1), now=0.0)
    observe(a, 2, image=False)  # 50 ms of state past the observation: a frame may still come
    assert a.drain(now=0.0) == []
    observe(a, 3, image=False)  # 100 ms >= 1.5 camera periods: it will not
    [(_, frame)] = a.drain(now=0.0)
    assert frame[image_key("front")].mean() == 0


def test_a_camera_with_no_frame_yet_is_waited_for_even_when_states_move_on() -> None:
    """The first frames of a best-effort stream can be lost to discovery, or queued behind states:
    states moving on must not skip a step whose camera has delivered nothing at or before it."""
    a = assembler()
    for k in range(4):
        observe(a, k, image=False)
    a.submit(step(0), now=0.0)
    assert a.drain(now=0.1) == []  # 150 ms of states past it, but no frame at all: wait
    a.add_image("front", t(0) - 0.01, np.full((4, 6, 3), 7, np.uint8))
    [(_, frame)] = a.drain(now=0.1)
    assert frame[image_key("front")].mean() == 7
    a.submit(step(1), now=1.0)
    [(_, frame1)] = a.drain(now=1.0)  # a frame at or before exists now: states moving on settle it
    assert frame1[image_key("front")].mean() == 7
    b = assembler()
    for k in range(4):
        observe(b, k, image=False)
    b.submit(step(0), now=0.0)
    assert b.drain(now=WAIT - 0.01) == []
    [(_, skip)] = b.drain(now=WAIT)  # a camera that never delivers: skipped after step_wait_s
    assert isinstance(skip, Skip) and skip.kind == "no_image"


def test_stale_frames_and_wrong_sizes_are_refused() -> None:
    a = FrameAssembler(SPEC, {"front": FPS}, step_wait_s=WAIT, max_image_lag_s=0.08)
    observe(a, 0)
    for k in (1, 2, 3, 4):
        observe(a, k, image=False)
    a.submit(step(3), now=0.0)
    [(_, skip)] = a.drain(now=0.0, force=True)
    assert skip.kind == "image_lag"
    a.add_env_state(t(5), np.zeros(4))
    a.add_state(t(5), np.zeros(8))
    a.add_image("front", t(5), np.zeros((8, 12, 3), np.uint8))  # another size: resized to the store's
    assert a.resized_from == {"front": (8, 12)}
    a.submit(step(5), now=0.0)
    [(_, skip)] = a.drain(now=0.0)
    assert skip.kind == "env_state_dim"
    a.submit(Step(t(5), executed=np.zeros(8), base=np.zeros(8), residual=np.zeros(8)), now=0.0)
    [(_, skip)] = a.drain(now=0.0)
    assert skip.kind == "action_dim"


def test_force_resolves_everything_left() -> None:
    a = assembler()
    observe(a, 0)
    a.submit(step(0), now=0.0)
    a.submit(step(1), now=0.0)
    out = a.drain(now=0.0, force=True)
    assert [s.tick for s, _ in out] == [0, 1] and isinstance(out[1][1], Skip) and a.pending == 0
    assert out[0][1][image_key("front")].mean() == 0
