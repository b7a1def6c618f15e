"""learner_node: the asynchronous learner as its own process, following the episode store.

Wraps `coirl_ros.learning.learner.Learner` exactly as its docstring describes, on a training thread:

    wait for the store -> resume from the checkpoint, or wait for demonstrations and pretrain ->
    repeat: refresh (new episodes), add the new rollout frames, train the updates due at the UTD
    ratio, publish a snapshot every `publish_every_updates`, checkpoint every `checkpoint_every_updates`

- weights: /coirl/policy/weights (UInt8MultiArray, reliable + transient local: a policy node that starts
  later still gets the latest), versioned; the versions published are remembered next to the
  checkpoint, so a learner resumed after a crash publishes newer versions than anything the robot runs;
- metrics: JSON on /coirl/learner/metrics (phase, counters, losses, updates/s, what it waits for);
- /learner/pause (SetBool): pause training (the policy keeps running on its last weights);
- killed at any point, it resumes from its last checkpoint; on a clean shutdown it checkpoints first;
- `keep_snapshots`: every published version also as a file, to go back to (policy_node's initial_weights).

Demonstrations recorded without the base (teleop) get its proposals filled in as they load
(`control.demo_base`), when `policy.base.checkpoint` names a base. CPU use is bounded by
`torch_threads` (default 1): the learner must not starve the control loop on a shared robot PC.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from rclpy.node import Node
from std_msgs.msg import String, UInt8MultiArray
from std_srvs.srv import SetBool

from coirl_ros.configs import ConfigError, LearnerConfig, config_from_dict
from coirl_ros.control.base_source import load_base_policy
from coirl_ros.control.demo_base import demo_base_filler
from coirl_ros.data import EpisodeStore, StoreError
from coirl_ros.data.episode_store import Episode
from coirl_ros.durable_files import write_atomically
from coirl_ros.learning.learner import Learner, LearnerError
from coirl_ros.nodes.control_messages import json_message, weights_message
from coirl_ros.nodes.interfaces import (
    COMMAND_QOS,
    LATCHED_QOS,
    LEARNER_METRICS_TOPIC,
    LEARNER_PAUSE_SERVICE,
    WEIGHTS_TOPIC,
)
from coirl_ros.nodes.node_configs import load_node_configs
from coirl_ros.nodes.node_runtime import run_node
from coirl_ros.nodes.ros_params import declare_overrides

LEARNER_FIELDS = [
    "batch_size",
    "utd_ratio",
    "publish_every_updates",
    "checkpoint_every_updates",
    "warmup_env_steps",
    "seed",
]


class _Stop(Exception):
    """Raised inside a long phase (pretraining) when the node shuts down."""


class LearnerNode(Node):
    """The learner process (module docstring)."""

    def __init__(self) -> None:
        super().__init__("learner_node")
        self.robot, self.policy, self.task, learner = load_node_configs(self)
        learner = declare_overrides(self, learner, LEARNER_FIELDS, "learner.")
        bc = declare_overrides(self, learner.bc, ["steps"], "learner.bc.")
        critic = declare_overrides(self, learner.critic, ["pretrain_steps"], "learner.critic.")
        self.config: LearnerConfig = config_from_dict(
            LearnerConfig,
            learner.model_dump() | {"bc": bc.model_dump(), "critic": critic.model_dump()},
            source="ROS parameters of learner_node (learner.*)",
        )
        p = {k: self.declare_parameter(k, v).value for k, v in {
            "checkpoint": "",  # "" = <store's folder>/learner/learner.pt
            "torch_threads": 1,
            "poll_period_s": 1.0,  # how often to look for new episodes when nothing is due
            "updates_per_slice": 50,  # updates between checks for pause/shutdown and new episodes
            "fill_demo_base": True,  # teleop demos: fill in the base's proposals when they load
            "metrics_period_s": 2.0,
            # Also write every published snapshot to <checkpoint dir>/snapshots/v<version>.weights: an
            # operator can go back to any version the robot ran (policy_node's initial_weights), e.g. to
            # the coherent BC start (v1) if fine-tuning made things worse. ~2 MB per version.
            "keep_snapshots": False,
        }.items()}  # fmt: skip
        if p["torch_threads"] < 1 or p["updates_per_slice"] < 1 or p["poll_period_s"] <= 0:
            raise ConfigError("learner_node: torch_threads, updates_per_slice >= 1 and poll_period_s > 0")
        torch.set_num_threads(p["torch_threads"])
        self.store_path = Path(self.config.store)
        default_checkpoint = self.store_path.parent / "learner" / "learner.pt"
        self.checkpoint = Path(p["checkpoint"]) if p["checkpoint"] else default_checkpoint
        self.published_file = self.checkpoint.with_name(self.checkpoint.name + ".published.json")
        self.poll_period = float(p["poll_period_s"])
        self.slice = int(p["updates_per_slice"])
        self.fill_demo_base = bool(p["fill_demo_base"])
        self.snapshot_dir = self.checkpoint.parent / "snapshots" if p["keep_snapshots"] else None
        residual = self.policy.residual
        self.composition = residual.composition if residual else "residual"
        self.scale = residual.scale if residual else 0.1

        self.pub_weights = self.create_publisher(UInt8MultiArray, WEIGHTS_TOPIC, LATCHED_QOS)
        self.pub_metrics = self.create_publisher(String, LEARNER_METRICS_TOPIC, COMMAND_QOS)
        self.create_service(SetBool, LEARNER_PAUSE_SERVICE, self._on_pause)
        self.create_timer(float(p["metrics_period_s"]), self._publish_metrics)

        self._lock = threading.Lock()
        self._status: dict[str, Any] = {"status": "starting", "resumed_from": None, "error": None}
        self._stop = threading.Event()
        self._paused = threading.Event()
        self.learner: Learner | None = None
        self._last_checkpoint = self._last_publish = 0
        self._rate = (time.monotonic(), 0)
        self._thread = threading.Thread(target=self._run, name="learner", daemon=True)
        self._thread.start()
        self.get_logger().info(
            f"learner: {self.config.method} on {self.store_path}, checkpoints at {self.checkpoint},"
            f" publishing every {self.config.publish_every_updates} updates,"
            f" {p['torch_threads']} torch thread(s)"
        )

    # ---- the training thread -------------------------------------------------------------------
    def _run(self) -> None:
        try:
            store = self._wait_for_store()
            self.learner = Learner(
                self.config, store, self.composition, self.scale, on_load=self._demo_hook()
            )
            if self.checkpoint.is_file():
                self._resume()
            if self.learner.state.phase == "new":
                self._pretrain()
            if not self.learner.trains_online:
                self._set(status="done", detail=f"method {self.config.method} does not train online")
                return
            self._train_forever()
        except _Stop:
            pass
        except Exception as err:  # the node stays up and says why on the metrics topic
            if self._shutting_down():
                # A publish raced the shutdown (Ctrl-C shuts rclpy's context down before close() runs):
                # nothing is lost, close() checkpoints what was learned.
                return
            self.get_logger().error(f"learner stopped: {type(err).__name__}: {err}")
            self._set(status="error", error=f"{type(err).__name__}: {err}")

    def _wait_for_store(self) -> EpisodeStore:
        """The store, once the recorder (or `coirl demos generate`) has created it."""
        said = False
        while True:
            self._check_stop()
            try:
                return EpisodeStore.open(self.store_path)
            except StoreError as err:
                if not said:
                    self.get_logger().info(f"waiting for the episode store: {err}")
                    said = True
                self._set(status="waiting_for_store", detail=str(err))
            time.sleep(self.poll_period)

    def _demo_hook(self) -> Callable[[Episode], None] | None:
        if not self.fill_demo_base or not self.policy.base.checkpoint:
            self.get_logger().info("demo base actions used as recorded (no base checkpoint configured)")
            return None
        base = load_base_policy(self.policy, self.robot, self.task)
        return demo_base_filler(base, self.policy.base.requery_every)

    def _resume(self) -> None:
        assert self.learner is not None
        state = self.learner.load_checkpoint(self.checkpoint)
        published = self._read_published()
        if published.get("run_id") == state.run_id:
            # Snapshots published after this checkpoint carried higher versions: continue above them.
            state.version = max(state.version, int(published.get("version", 0)))
        self._last_checkpoint = self._last_publish = state.updates
        self.get_logger().info(
            f"resumed from {self.checkpoint}: phase {state.phase}, {state.updates} updates,"
            f" {state.env_steps} env steps, last published version {state.version}"
        )
        self._set(resumed_from=str(self.checkpoint), resumed_updates=state.updates)
        if state.phase != "new" and self.config.method != "base":
            self._publish_snapshot()  # the latched weights died with the old process

    def _pretrain(self) -> None:
        assert self.learner is not None
        start = time.perf_counter()

        def progress(phase: str, step: int, total: int, metrics: dict[str, float]) -> None:
            self._check_stop()
            while self._paused.is_set():
                self._set(status="paused")
                self._check_stop()
                time.sleep(0.1)
            self._set(status="pretraining", detail=f"{phase} {step}/{total}", losses=metrics)

        while True:  # pretrain() refuses (before any work) while the store holds no demonstrations
            self._check_stop()
            self._set(status="pretraining")
            try:
                metrics = self.learner.pretrain(progress)
                break
            except LearnerError as err:
                if self.learner.sampler.num_transitions("demo") > 0:
                    raise
                self._set(status="waiting_for_demos", detail=str(err))
                time.sleep(self.poll_period)
        self.get_logger().info(f"pretrained in {time.perf_counter() - start:.1f} s")
        self._set(losses=metrics)
        self._save_checkpoint()
        if self.config.method != "base":
            self._publish_snapshot()

    def _train_forever(self) -> None:
        assert self.learner is not None
        learner, cfg = self.learner, self.config
        self._sync_env_steps()
        while True:
            self._check_stop()
            if self._paused.is_set():
                self._set(status="paused")
                time.sleep(0.1)
                continue
            if learner.refresh():
                self._sync_env_steps()
            due = learner.updates_due()
            if due <= 0 and not learner.reanchor_due:
                self._set(status="waiting_for_rollouts")
                time.sleep(self.poll_period)
                continue
            self._set(status="reanchoring" if learner.reanchor_due else "training")
            reanchors = learner.state.reanchors
            metrics = learner.train(min(due, self.slice))
            self._set(losses=metrics)
            updates = learner.state.updates
            # A re-anchoring replaces the policy wholesale: publish and checkpoint it at once.
            reanchored = learner.state.reanchors != reanchors
            if reanchored:
                self.get_logger().info(
                    f"re-anchored at {learner.state.env_steps} env steps on"
                    f" {learner.sampler.num_transitions('demo')} demo transitions (demos + successes)"
                )
            if reanchored or updates - self._last_publish >= cfg.publish_every_updates:
                self._publish_snapshot()
            if reanchored or updates - self._last_checkpoint >= cfg.checkpoint_every_updates:
                self._save_checkpoint()

    def _sync_env_steps(self) -> None:
        """The learner is told about every rollout frame in the store, including those recorded while
        this process was down (its env step count came back with the checkpoint)."""
        assert self.learner is not None
        rollout = sum(m.num_frames for m in self.learner.store.list_episodes() if m.source == "policy")
        new = rollout - self.learner.state.env_steps
        if new > 0:
            self.learner.add_env_steps(new)

    def _publish_snapshot(self) -> None:
        assert self.learner is not None
        snap = self.learner.snapshot()
        data = snap.to_bytes()
        if self.snapshot_dir is not None:  # before publishing: a version the robot may run is on disk
            self.snapshot_dir.mkdir(parents=True, exist_ok=True)
            # The bytes being published, written as `write_snapshot` would: serialised once.
            write_atomically(self.snapshot_dir / f"v{snap.version}.weights", data)
        self.pub_weights.publish(weights_message(data))
        self._last_publish = snap.updates
        _write_json_atomic(self.published_file, {"run_id": snap.run_id, "version": snap.version})
        self.get_logger().info(f"published weights v{snap.version} ({snap.updates} updates)")

    def _save_checkpoint(self) -> None:
        assert self.learner is not None
        self.learner.save_checkpoint(self.checkpoint)
        self._last_checkpoint = self.learner.state.updates
        self._set(last_checkpoint_updates=self._last_checkpoint)
        self.get_logger().info(f"checkpoint at {self._last_checkpoint} updates: {self.checkpoint}")

    def _read_published(self) -> dict[str, Any]:
        try:
            data = json.loads(self.published_file.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _shutting_down(self) -> bool:
        return self._stop.is_set() or not self.context.ok()

    def _check_stop(self) -> None:
        if self._shutting_down():
            raise _Stop

    # ---- ROS side ------------------------------------------------------------------------------
    def _set(self, **fields: Any) -> None:
        with self._lock:
            self._status.update(fields)

    def _on_pause(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        if request.data:
            self._paused.set()
        else:
            self._paused.clear()
        response.success = True
        response.message = "training paused" if request.data else "training resumed"
        self.get_logger().info(response.message)
        return response

    def metrics(self) -> dict[str, Any]:
        with self._lock:
            report = dict(self._status)
        learner = self.learner
        if learner is not None:
            state = learner.state
            now = time.monotonic()
            last_time, last_updates = self._rate
            rate = (state.updates - last_updates) / max(now - last_time, 1e-9)
            self._rate = (now, state.updates)
            report |= {
                "phase": state.phase,
                "updates": state.updates,
                "env_steps": state.env_steps,
                "version": state.version,
                "run_id": state.run_id,
                "bc_steps": state.bc_steps,
                "critic_pretrain_steps": state.critic_pretrain_steps,
                "reanchors": state.reanchors,
                "updates_per_s": round(rate, 2),
                "demo_transitions": learner.sampler.num_transitions("demo"),
                "rollout_transitions": learner.sampler.num_transitions("rollout"),
            }
        report |= {"method": self.config.method, "paused": self._paused.is_set(), "stamp": time.time()}
        report["losses"] = {k: float(v) for k, v in (report.get("losses") or {}).items()}
        return report

    def _publish_metrics(self) -> None:
        self.pub_metrics.publish(json_message(_finite(self.metrics())))

    def close(self) -> None:
        """Stop training at the next slice and checkpoint what was learned since the last one."""
        self._stop.set()
        self._thread.join(timeout=60)
        learner = self.learner
        if learner is None or learner.state.phase == "new":
            return
        if learner.state.updates > self._last_checkpoint:
            self._save_checkpoint()


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(data).encode())


def _finite(value: Any) -> Any:
    """NaN/inf (a loss before its first update) as None: JSON has no NaN."""
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def main(args: Sequence[str] | None = None) -> None:
    raise SystemExit(run_node(LearnerNode, args, threads=2))


if __name__ == "__main__":
    main()
