"""The task's scripted expert as a teleop device (sim only): demos through the path a person's device uses.

The expert (`WaypointExpert`) plans from the simulation state, which lives in another process (sim_node).
`ScriptedActor` keeps a *mirror* `ManipulationEnv` of the task and, every tick, copies the sim's state into
it (qpos, qvel and the mocap fixtures' poses, from /sim/state) before asking the expert for an action.
In ee_delta mode the expert reads the commanded TCP pose from the env's action-space object, and that
very object is the one the control loop integrates the actions with (`action_space`): the expert sees
exactly the commanded pose its actions produced, as in `ManipulationEnv.step`, and the executed action
is then limited, recorded and sent like a joystick's.

An episode plans from the first sim state that *arrives after* the episode's start. Stamps cannot tell
a pre-reset state from the reset's own: the teleop node stamps /sim/state on arrival, and a paused sim's
clock stands still, so the start event can find the old scene's state as new as any. CI recorded a
failed first demo that way (the expert planned a grasp at the previous scene's cube). Counting arrivals
needs no clock: the node counts the states it has received, and the actor waits for one more than it
had seen at the start (one held tick; the sim's reset precedes the recorder's start).
"""

from __future__ import annotations

from collections.abc import Callable

import mujoco
import numpy as np

from coirl_ros.configs.policy import ActionSpace
from coirl_ros.configs.teleop import ScriptedConfig
from coirl_ros.control.action_space import EEDeltaActionSpace, JointActionSpace
from coirl_ros.control.loop import ActorOutput
from coirl_ros.sim.env import EnvConfig, ManipulationEnv
from coirl_ros.sim.expert import WaypointExpert
from coirl_ros.sim.tasks import expert_plan, make_task

# Watchdog key of the flattened sim state [qpos, qvel, mocap_pos (3m), mocap_quat (4m)].
SIM_STATE_KEY = "sim.state"


class ScriptedActor:
    """Scripted expert on a mirror of the simulation (module docstring)."""

    def __init__(
        self,
        task: str,
        action_space: ActionSpace,
        control_hz: float,
        config: ScriptedConfig,
        joint_space: JointActionSpace | None = None,
        sim_states_received: Callable[[], int] | None = None,
    ) -> None:
        """`sim_states_received` counts the /sim/state messages the caller has fed the loop so far (the
        module docstring says why); without it (in-process use, states fed in order) the actor acts on
        whatever state the loop holds."""
        if action_space == "joint" and joint_space is None:
            raise ValueError("joint action space: pass the robot's JointActionSpace for the expert")
        env_config = EnvConfig(action_mode=action_space, control_hz=control_hz)
        self.env = ManipulationEnv(make_task(task), env_config)
        self.env.reset(seed=config.seed)  # compiles the scene and gives the mirror a valid state
        self.expert = WaypointExpert(self.env, expert_plan(task), noise=config.noise, seed=config.seed)
        self.kind = action_space
        self.joint_space = joint_space
        self._sim_states_received = sim_states_received
        self._episode = -1
        self._states_before_start: int | None = None  # arrivals counted when the episode started
        self._planned = False
        m = self.env.model
        self._sizes = (m.nq, m.nv, 3 * m.nmocap, 4 * m.nmocap)
        self.mocap_missing = False  # the sim sent no fixture poses (an older sim_node): planning may be off

    @property
    def action_space(self) -> EEDeltaActionSpace | JointActionSpace:
        """The action space the control loop must use: the mirror's own in ee_delta mode (shared pose)."""
        if self.kind == "ee_delta":
            return self.env.ee_action
        assert self.joint_space is not None
        return self.joint_space

    @property
    def done(self) -> bool:
        return self.expert.done

    def required_inputs(self) -> tuple[str, ...]:
        return (SIM_STATE_KEY,)

    def before_tick(self) -> None:
        """Nothing is prepared off the loop."""

    def reset(self) -> None:
        """A new episode: re-plan once the first sim state of this episode has arrived."""
        self._episode += 1
        if self._sim_states_received is not None:
            self._states_before_start = self._sim_states_received()
        self._planned = False

    def resume(self) -> None:
        """The expert's carrot stayed put during the hold; it simply continues."""

    def set_sim_state(self, flat: np.ndarray) -> None:
        """Copy [qpos, qvel, (mocap_pos, mocap_quat)] into the mirror and recompute its kinematics."""
        nq, nv, nmp, nmq = self._sizes
        flat = np.asarray(flat, dtype=np.float64)
        if len(flat) not in (nq + nv, nq + nv + nmp + nmq):
            raise ValueError(
                f"sim state has {len(flat)} values; the {self.env.task.name} mirror expects {nq + nv}"
                f" (qpos + qvel) or {nq + nv + nmp + nmq} (with mocap poses)"
            )
        data = self.env.data
        data.qpos[:] = flat[:nq]
        data.qvel[:] = flat[nq : nq + nv]
        if len(flat) > nq + nv:
            data.mocap_pos[:] = flat[nq + nv : nq + nv + nmp].reshape(-1, 3)
            data.mocap_quat[:] = flat[nq + nv + nmp :].reshape(-1, 4)
        else:
            self.mocap_missing = nmp > 0
        mujoco.mj_forward(self.env.model, data)

    def act(self, observation: dict[str, np.ndarray]) -> ActorOutput | str:
        if (
            not self._planned
            and self._sim_states_received is not None
            and self._states_before_start is not None
            and self._sim_states_received() <= self._states_before_start
        ):
            return "waiting_for_sim_state"  # the newest state may show the scene before the sim's reset
        self.set_sim_state(observation[SIM_STATE_KEY])
        if not self._planned:
            self.expert.reset(max(self._episode, 0))  # per-episode noise, reproducible per episode
            self._planned = True
        action = np.asarray(self.expert.act(None), dtype=np.float64)
        if self.kind == "joint":
            assert self.joint_space is not None
            action = self.joint_space.from_joint_targets(action)
        zeros = np.zeros_like(action)
        return ActorOutput(action, zeros, zeros.copy(), 0)
