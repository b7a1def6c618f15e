"""The node graph's contract: topic and service names, QoS profiles, and the one custom payload.

Every node imports its names from here, so a topic is spelt once. Only standard messages are used
(DESIGN.md 3); where a message must carry more than a standard type holds -- the per-tick record of
what the policy or the teleoperator did -- it is a `std_msgs/Float64MultiArray` whose layout is
defined and parsed only by `encode_step` / `decode_step` below.

Graph (sim or robot; the sim node stands in for the robot driver and the camera hardware):

    /joint_states (robot|sim_node) -> joint_node -> /coirl/state ------------------+
    camera hardware | /sim/cameras/<c>/image_raw -> camera_node -> /cameras/<c>/... |
    /coirl/environment_state (sim_node only: privileged object state)             |
                                                                                   v
    teleop_node | policy_node -> robot command topic (robot.yaml `command:`) + /coirl/step
    recorder_node <- /coirl/state, cameras, /coirl/environment_state, /coirl/step
    learner_node -> /coirl/policy/weights (reliable, transient local) -> policy_node
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from std_msgs.msg import Float64MultiArray, MultiArrayDimension

# ---- topics --------------------------------------------------------------------------------------
STATE_TOPIC = "/coirl/state"  # sensor_msgs/JointState: the policy's state vector, config order
ENV_STATE_TOPIC = "/coirl/environment_state"  # std_msgs/Float64MultiArray (sim only)
STEP_TOPIC = "/coirl/step"  # std_msgs/Float64MultiArray, see encode_step
WEIGHTS_TOPIC = "/coirl/policy/weights"  # std_msgs/UInt8MultiArray: WeightSnapshot.to_bytes()
WEIGHTS_STATUS_TOPIC = "/coirl/policy/weights_status"  # std_msgs/String (JSON): accepted/rejected
LEARNER_METRICS_TOPIC = "/coirl/learner/metrics"  # std_msgs/String (JSON)
POLICY_DIAGNOSTICS_TOPIC = "/coirl/policy/diagnostics"  # std_msgs/String (JSON)
TELEOP_TOPIC = "/coirl/teleop/action"  # std_msgs/Float64MultiArray: normalised action
# std_msgs/String (JSON), published by the recorder: {"event": "start"|"stop"|"discard", "index": n,
# "success": bool|null, "stamp": t}. Policy and teleop nodes reset per-episode state on "start".
# The recorder publishes it with LATCHED_QOS: a subscriber asking for transient local durability
# gets the latest event even if it matched late (volatile subscribers are compatible too).
EPISODE_TOPIC = "/coirl/episode"
# std_msgs/Float64MultiArray from sim_node only: [sim time, qpos..., qvel...] (layout dims labelled
# "qpos" and "qvel"), so a scripted expert in another process can mirror the exact sim state.
# Optionally followed by the mocap bodies' poses (dims "mocap_pos", "mocap_quat"): task fixtures
# (pegs, cabinet, coffee machine, tripod) are mocap bodies placed at reset, outside qpos, so a mirror
# needs them too. Build and parse it with `encode_sim_state` / `decode_sim_state` below.
SIM_STATE_TOPIC = "/sim/state"
CLOCK_TOPIC = "/clock"  # rosgraph_msgs/Clock (sim_node, when use_sim_time)
# std_msgs/String (JSON) from joint_node: {"status": "ok"|"stale"|"inconsistent"|"no_data", "reason",
# "age_s", "published", "late" (passed on, arrived older than the timeout), "rejected": {reason kind:
# count}, "stamp"}; on every status change and periodically.
JOINT_DIAGNOSTICS_TOPIC = "/coirl/joint/diagnostics"
# std_msgs/String (JSON) from camera_node: {"camera", "source", "device", "status": "streaming"|
# "retrying"|"waiting", "error", "attempt", "retry_in_s", "published", "dropped_stale", "rate_hz", "stamp"}.
CAMERA_DIAGNOSTICS_TOPIC = "/coirl/cameras/diagnostics"


def sim_camera_topic(camera: str) -> str:
    """Where sim_node publishes its raw renders; camera_node (source: sim) republishes them."""
    return f"/sim/cameras/{camera}/image_raw"


def camera_info_topic(image_topic: str) -> str:
    """CameraInfo beside an image topic, as image_transport names it."""
    return image_topic.rsplit("/", 1)[0] + "/camera_info"


# ---- services (std_srvs) -------------------------------------------------------------------------
SIM_RESET_SERVICE = "/sim/reset"  # Trigger: new episode (next seed); message = JSON {"seed": ...}
SIM_SUCCESS_SERVICE = "/sim/success"  # Trigger: success = task solved now
# SetBool: true = freeze the sim (no steps, commands still kept); episode_driver wraps a reset and
# the recorder's start in it, so the scene waits for the controller's first command after "start".
SIM_PAUSE_SERVICE = "/sim/pause"
RECORDER_START_SERVICE = "/recorder/start"  # Trigger
RECORDER_STOP_SERVICE = "/recorder/stop"  # SetBool: data = success label; commits the episode
RECORDER_DISCARD_SERVICE = "/recorder/discard"  # Trigger
POLICY_HOLD_SERVICE = "/policy/hold"  # SetBool: true = hold position until released
LEARNER_PAUSE_SERVICE = "/learner/pause"  # SetBool: true = pause training

# ---- QoS -----------------------------------------------------------------------------------------
# Sensors: best effort, keep last few; a late frame is worthless, a queued one is harmful.
SENSOR_QOS = qos_profile_sensor_data
# Joint states into joint_node: best effort like SENSOR_QOS (matches every driver), but deep. Each one
# is a recorded frame's observation, and a burst queued while joint_node was descheduled is passed on
# with its stamps in microseconds; at depth 5 a lockstep sim that ran ahead lost states to the queue.
JOINT_INPUT_QOS = QoSProfile(
    depth=50, reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST
)
# Commands: reliable, shallow; only the newest command matters to the arm.
COMMAND_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
# Per-tick records (/coirl/step) and what the recorder pairs them with: reliable and deep on both
# ends. A dropped record is a hole in an episode, and KEEP_LAST overwrites the oldest sample a reader
# has not taken yet: at depth 10 a subscriber descheduled for a second at 10 Hz (a busy 2-core CI
# machine did exactly that) lost two ticks. 100 buys 5 s at 20 Hz. Not KEEP_ALL: a full KEEP_ALL
# writer blocks, and the control loop must never wait on a slow recorder.
RECORD_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
# Robot state (/joint_states, /coirl/state, /coirl/environment_state): reliable publishers, like
# ros2_control's joint_state_broadcaster, so both reliable and best-effort subscribers match; a
# subscriber that must not stall on a slow link subscribes with SENSOR_QOS.
STATE_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
# Weights: a policy node that (re)starts after the learner published still gets the latest snapshot.
LATCHED_QOS = QoSProfile(
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
    history=HistoryPolicy.KEEP_LAST,
)
# sim_node's /coirl/environment_state: STATE_QOS, but transient local, so a node that starts (or
# matches) while the sim is paused still gets the current object state -- the recorder sizes a new
# store's environment state from it. Volatile subscribers (STATE_QOS, SENSOR_QOS) match as before.
ENV_STATE_QOS = QoSProfile(
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
    history=HistoryPolicy.KEEP_LAST,
)

# ---- the per-tick step record --------------------------------------------------------------------
STEP_LAYOUT_LABEL = "coirl_step/1"
_HEADER = 4  # stamp, observation stamp, policy version, tick


@dataclass(frozen=True)
class StepRecord:
    """What was executed at one control tick, in the learner's normalised action space.

    `stamp` is when the command was sent, `observation_stamp` the capture time of the state it was
    computed from (seconds, ROS time); `policy_version` 0 means no learned weights (teleop, base only).
    """

    stamp: float
    observation_stamp: float
    policy_version: int
    tick: int
    executed: np.ndarray
    base: np.ndarray
    residual: np.ndarray


def encode_step(step: StepRecord) -> Float64MultiArray:
    """[stamp, obs stamp, version, tick, executed(d), base(d), residual(d)] with a labelled layout."""
    d = len(step.executed)
    if len(step.base) != d or len(step.residual) != d:
        raise ValueError("executed, base and residual actions must have the same length")
    msg = Float64MultiArray()
    msg.layout.dim = [
        MultiArrayDimension(label=STEP_LAYOUT_LABEL, size=_HEADER + 3 * d, stride=_HEADER + 3 * d),
        MultiArrayDimension(label="action_dim", size=d, stride=d),
    ]
    header = [step.stamp, step.observation_stamp, float(step.policy_version), float(step.tick)]
    msg.data = np.concatenate([header, step.executed, step.base, step.residual]).astype(float).tolist()
    return msg


def decode_step(msg: Float64MultiArray) -> StepRecord:
    """The inverse of `encode_step`; raises ValueError on any other layout (never guesses)."""
    dims = msg.layout.dim
    if len(dims) != 2 or dims[0].label != STEP_LAYOUT_LABEL or dims[1].label != "action_dim":
        raise ValueError(f"not a {STEP_LAYOUT_LABEL} message (layout {[x.label for x in dims]})")
    d = int(dims[1].size)
    data = np.asarray(msg.data, dtype=np.float64)
    if d <= 0 or len(data) != _HEADER + 3 * d:
        raise ValueError(f"{STEP_LAYOUT_LABEL}: {len(data)} values for action_dim {d}")
    body = data[_HEADER:]
    return StepRecord(
        stamp=float(data[0]),
        observation_stamp=float(data[1]),
        policy_version=int(data[2]),
        tick=int(data[3]),
        executed=body[:d].copy(),
        base=body[d : 2 * d].copy(),
        residual=body[2 * d :].copy(),
    )


# ---- the sim state (sim_node -> teleop_node's scripted expert) -----------------------------------
_SIM_DIMS = ("qpos", "qvel", "mocap_pos", "mocap_quat")


@dataclass(frozen=True)
class SimState:
    """MuJoCo state a mirror needs: time, qpos, qvel and the mocap poses ([m, 3], [m, 4]; may be empty)."""

    time: float
    qpos: np.ndarray
    qvel: np.ndarray
    mocap_pos: np.ndarray
    mocap_quat: np.ndarray


def encode_sim_state(state: SimState) -> Float64MultiArray:
    """[time, qpos, qvel, mocap_pos (flat), mocap_quat (flat)] with dims labelled by part."""
    parts = [np.asarray(getattr(state, name), dtype=float).reshape(-1) for name in _SIM_DIMS]
    msg = Float64MultiArray()
    msg.layout.dim = [
        MultiArrayDimension(label=name, size=len(p), stride=len(p))
        for name, p in zip(_SIM_DIMS, parts, strict=True)
    ]
    msg.data = np.concatenate([[float(state.time)], *parts]).tolist()
    return msg


def decode_sim_state(msg: Float64MultiArray) -> SimState:
    """The inverse of `encode_sim_state`; also reads the mocap-less [time, qpos, qvel] layout.

    Raises ValueError on any other layout (never guesses)."""
    labels = [d.label for d in msg.layout.dim]
    if labels not in (list(_SIM_DIMS[:2]), list(_SIM_DIMS)):
        raise ValueError(f"not a sim state message (layout {labels}, expected {list(_SIM_DIMS)})")
    sizes = [int(d.size) for d in msg.layout.dim]
    data = np.asarray(msg.data, dtype=np.float64)
    if len(data) != 1 + sum(sizes):
        raise ValueError(f"sim state: {len(data)} values for parts {dict(zip(labels, sizes, strict=True))}")
    parts, offset = {}, 1
    for label, size in zip(labels, sizes, strict=True):
        parts[label] = data[offset : offset + size].copy()
        offset += size
    mocap_pos = parts.get("mocap_pos", np.zeros(0)).reshape(-1, 3)
    mocap_quat = parts.get("mocap_quat", np.zeros(0)).reshape(-1, 4)
    if len(mocap_pos) != len(mocap_quat):
        raise ValueError(f"sim state: {len(mocap_pos)} mocap positions but {len(mocap_quat)} orientations")
    return SimState(float(data[0]), parts["qpos"], parts["qvel"], mocap_pos, mocap_quat)


# ---- the environment state (sim_node -> recorder, state-based policies) --------------------------
_ENV_STATE_LABEL = "environment_state"
_ENV_STAMP_LABEL = "stamp"


def encode_environment_state(values: np.ndarray, stamp_sec: int, stamp_nanosec: int) -> Float64MultiArray:
    """`data` is exactly the task's object state; the capture stamp rides in the layout.

    Float64MultiArray has no header, and a consumer that reads `data` alone must get the state
    unchanged, so the stamp is a second dimension labelled "stamp" with size = seconds and
    stride = nanoseconds (both fit uint32 until 2106). The recorder pairs it with the state by stamp.
    """
    values = np.asarray(values, dtype=float).reshape(-1)
    msg = Float64MultiArray()
    msg.layout.dim = [
        MultiArrayDimension(label=_ENV_STATE_LABEL, size=len(values), stride=len(values)),
        MultiArrayDimension(label=_ENV_STAMP_LABEL, size=int(stamp_sec), stride=int(stamp_nanosec)),
    ]
    msg.data = values.tolist()
    return msg


def decode_environment_state(msg: Float64MultiArray) -> tuple[float | None, np.ndarray]:
    """(stamp in seconds, or None for an unstamped array, values); ValueError if sizes disagree."""
    data = np.asarray(msg.data, dtype=np.float64)
    dims = msg.layout.dim
    stamp = None
    if len(dims) == 2 and dims[0].label == _ENV_STATE_LABEL and dims[1].label == _ENV_STAMP_LABEL:
        if int(dims[0].size) != len(data):
            raise ValueError(f"environment state: {len(data)} values, layout says {dims[0].size}")
        stamp = int(dims[1].size) + int(dims[1].stride) * 1e-9
    return stamp, data
