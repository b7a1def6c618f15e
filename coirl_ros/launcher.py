"""Start a node graph (coirl_ros/graph.py) as processes, for machines without ros2cli: `coirl launch`.

What `ros2 launch` would do with the same `NodeSpec`s, with plain subprocesses (no ROS imports here):

- each node runs as `python -m coirl_ros.nodes.<executable> --ros-args -r __node:=<name>
  --params-file <its parameters as a ROS 2 parameter file> [--params-file <user file>] [-r a:=b]`,
  in its own session (a terminal's Ctrl-C reaches only the launcher, which forwards exactly one
  SIGINT per node: a second one would cut a node's own clean shutdown short), and gets SIGTERM if
  the launcher itself dies;
- its output (stdout and stderr) is streamed line by line with a `[name]` prefix, and kept in
  `<log_dir>/<name>.log`;
- `start_after` nodes start `start_delay_s` after the named nodes printed their texts; `respawn`
  nodes are restarted when they die (not after exit code 2, a configuration error); a `finite` node's
  exit ends the graph with its exit code; any other node that exits ends the graph with a message
  saying which and how;
- shutdown (Ctrl-C, SIGTERM, `stop()`, or one of the above): SIGINT to every node at once, SIGTERM
  after `sigint_timeout_s`, SIGKILL 5 s later; a second Ctrl-C skips to SIGTERM, a third to SIGKILL.

`launch_environment()` keeps DDS on this machine: ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and, where
the caller's environment sets none, a ROS_DOMAIN_ID that no other graph on this machine is using (two
graphs on one domain hear each other's /clock and topics: a demo and a test run at the same time
corrupted each other that way).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from coirl_ros.graph import NodeSpec, ros_parameters
from coirl_ros.scheduling import is_real_time, reset_to_default_policy

CONFIG_ERROR_EXIT = 2  # run_node's exit code for a configuration error: restarting cannot help
INTERRUPTED_EXIT = 130
WAIT_REPORT_S = 60.0  # how often the launcher names what a waiting node (episode_driver) still waits for
_PR_SET_PDEATHSIG = 1


def launch_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default os.environ) with loopback-only discovery, a domain id, unbuffered Python output
    and headless MuJoCo rendering, each only where unset."""
    env = dict(os.environ if base is None else base)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if "ROS_DOMAIN_ID" not in env:
        env["ROS_DOMAIN_ID"] = str(free_domain_id())
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("MUJOCO_GL", "egl")
    return env


def domain_in_use(domain: int) -> bool:
    """Whether some DDS participant holds `domain`'s first unicast discovery port (RTPS: 7400 + 250 *
    domain + 10, taken by the first participant on the machine, Fast DDS and Cyclone alike)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("127.0.0.1", 7400 + 250 * domain + 10))
        except OSError:
            return True
    return False


def free_domain_id(first: int = 51, last: int = 101) -> int:
    """A domain id in [first, last] nobody on this machine uses, starting at one derived from the pid.

    51-101: the tests take 1-50 (test/conftest.py) and ids above 101 put DDS ports into Linux's
    ephemeral range. Falls back to the pid-derived id when every one is taken.
    """
    span = last - first + 1
    start = os.getpid() % span
    for k in range(span):
        domain = first + (start + k) % span
        if not domain_in_use(domain):
            return domain
    return first + start


def _prepare_child() -> None:
    """In the child before exec: SIGTERM when the launcher dies (a killed launcher leaves no orphans),
    and the default scheduling policy (nodes are plain Python; at an inherited real-time priority a
    node waiting in a busy loop starves the machine, scheduling.py)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if is_real_time():
        with contextlib.suppress(OSError):
            reset_to_default_policy()


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}" + (" (configuration error)" if code == CONFIG_ERROR_EXIT else "")


@dataclass
class RunningNode:
    """One process of a node (a respawned node has several over time)."""

    spec: NodeSpec
    proc: subprocess.Popen[bytes]
    log: IO[str]
    started: float = field(default_factory=time.monotonic)
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


class Launcher:
    """Runs one graph; `start()`, then `wait()` or `stop()` (or use it as a context manager)."""

    def __init__(
        self,
        nodes: Sequence[NodeSpec],
        env: Mapping[str, str] | None = None,
        log_dir: str | Path | None = None,
        cwd: str | Path | None = None,
        stream: IO[str] | None = sys.stdout,
        sigint_timeout_s: float = 30.0,
        echo: Callable[[str, str], bool] | None = None,
    ) -> None:
        self.nodes = list(nodes)
        self.env = launch_environment(env)
        default_dir = f"runs/launch/{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        self.log_dir = Path(log_dir or default_dir).resolve()
        self.cwd = Path(cwd).resolve() if cwd else Path.cwd()
        self.stream = stream
        self.echo = echo  # (node name, line) -> print it? (None: every line; the logs keep all)
        self.sigint_timeout_s = sigint_timeout_s
        self.instances: dict[str, list[RunningNode]] = {n.name: [] for n in self.nodes}
        self.exit_code: int | None = None
        self.reason = ""
        self._width = max((len(n.name) for n in self.nodes), default=8)
        self._print_lock = threading.Lock()
        self._state = threading.Condition()
        self._pending = [n for n in self.nodes if n.start_after]
        self._respawn_at: dict[str, float] = {}
        self._due_at: dict[str, float] = {}  # start_after nodes whose conditions are met: start time
        # A node that waits long is said to (which texts are missing), so a silent camera or a slow
        # pretraining does not look like a hang.
        self._next_wait_report = time.monotonic() + WAIT_REPORT_S
        self._stop_requested: str | None = None
        self._interrupts = 0
        self._done = threading.Event()
        self._supervisor: threading.Thread | None = None

    # ---- output ------------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        """A launcher message, prefixed like the nodes' lines."""
        self._emit(f"[{'launch':<{self._width}}] {text}")

    def _emit(self, line: str) -> None:
        if self.stream is None:
            return
        with self._print_lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def _read(self, node: RunningNode) -> None:
        assert node.proc.stdout is not None
        prefix = f"[{node.spec.name:<{self._width}}] "
        for raw in iter(node.proc.stdout.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            node.log.write(line + "\n")
            node.log.flush()
            with self._state:
                node.lines.append(line)
                self._state.notify_all()
            if self.echo is None or self.echo(node.spec.name, line):
                self._emit(prefix + line)
        node.log.close()

    # ---- processes ---------------------------------------------------------------------------------
    def command(self, spec: NodeSpec) -> list[str]:
        """The command line of one node (its parameter file is written under log_dir)."""
        params_file = self.log_dir / f"{spec.name}.params.yaml"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(params_file, "w") as fh:
            yaml.safe_dump({"/**": {"ros__parameters": ros_parameters(spec)}}, fh, sort_keys=False)
        cmd = [sys.executable, "-m", spec.module, "--ros-args", "-r", f"__node:={spec.name}"]
        for path in (str(params_file), *spec.param_files):
            cmd += ["--params-file", path]
        for src, dst in spec.remappings:
            cmd += ["-r", f"{src}:={dst}"]
        return cmd

    def _spawn(self, spec: NodeSpec) -> RunningNode:
        cmd = self.command(spec)
        log = open(self.log_dir / f"{spec.name}.log", "a")  # noqa: SIM115 (closed by the reader)
        proc = subprocess.Popen(
            cmd,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_prepare_child,
        )
        node = RunningNode(spec, proc, log)
        node.reader = threading.Thread(target=self._read, args=(node,), name=f"out-{spec.name}", daemon=True)
        node.reader.start()
        with self._state:
            self.instances[spec.name].append(node)
        again = len(self.instances[spec.name]) > 1
        self.say(f"{'restarted' if again else 'started'} {spec.name} (pid {proc.pid}): {spec.description}")
        return node

    def start(self) -> Launcher:
        """Start every node that waits for nothing, and the supervisor thread."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.say(
            f"{len(self.nodes)} nodes, ROS_DOMAIN_ID={self.env['ROS_DOMAIN_ID']},"
            f" discovery {self.env['ROS_AUTOMATIC_DISCOVERY_RANGE']}; logs in {self.log_dir}"
        )
        try:
            for spec in self.nodes:
                if not spec.start_after:
                    self._spawn(spec)
        except OSError as err:
            self.say(f"could not start a node: {err}")
            self._stop_requested = f"start failed: {err}"
        self._supervisor = threading.Thread(target=self._supervise, name="launcher", daemon=True)
        self._supervisor.start()
        return self

    def current(self, name: str) -> RunningNode | None:
        runs = self.instances.get(name)
        if runs is None:
            raise KeyError(f"no node {name!r} in this graph ({', '.join(self.instances)})")
        return runs[-1] if runs else None

    def _supervise(self) -> None:
        try:
            while self._stop_requested is None:
                self._start_due()
                self._check_exits()
                time.sleep(0.05)
            self._shutdown(self._stop_requested)
        finally:
            self._done.set()

    def _start_due(self) -> None:
        now = time.monotonic()
        for spec in list(self._pending):
            if spec.name not in self._due_at:
                if all(self._printed(other, text) for other, text in spec.start_after):
                    self._due_at[spec.name] = now + spec.start_delay_s
            elif now >= self._due_at[spec.name]:
                self._pending.remove(spec)
                self._spawn(spec)
        if now >= self._next_wait_report:
            self._next_wait_report = now + WAIT_REPORT_S
            for spec in self._pending:
                missing = [f"{n}: {t!r}" for n, t in spec.start_after if not self._printed(n, t)]
                if missing:
                    self.say(f"{spec.name} still waits for {'; '.join(missing)}")
        for name, when in list(self._respawn_at.items()):
            if now >= when:
                del self._respawn_at[name]
                self._spawn(self.current(name).spec)  # type: ignore[union-attr]

    def _printed(self, name: str, text: str) -> bool:
        """Whether any process of node `name` printed `text` so far."""
        with self._state:
            return any(text in line for node in self.instances[name] for line in node.lines)

    def _check_exits(self) -> None:
        for spec in self.nodes:
            node = self.current(spec.name)
            if node is None or spec.name in self._respawn_at:
                continue
            code = node.proc.poll()
            if code is None:
                continue
            if node.reader is not None:
                node.reader.join(timeout=2.0)  # its last lines (the reason it exited) come first
            how = describe_exit(code)
            if spec.finite:
                if code == 0:
                    self.say(f"{spec.name} finished; stopping the graph")
                else:
                    self.say(f"{spec.name} failed ({how}); stopping the graph")
                self._request(f"{spec.name} {how}", code)
                return
            if spec.respawn and code != CONFIG_ERROR_EXIT:
                self.say(f"{spec.name} died ({how}); restarting it in {spec.respawn_delay_s:g} s (respawn)")
                self._respawn_at[spec.name] = time.monotonic() + spec.respawn_delay_s
                continue
            self.say(f"{spec.name} exited unexpectedly ({how}; its last lines are above); stopping the graph")
            self._request(f"{spec.name} {how}", 1)
            return

    def _request(self, reason: str, code: int) -> None:
        with self._state:
            if self._stop_requested is None:
                self._stop_requested = reason
                self.exit_code = code
                self.reason = reason

    def _alive(self) -> list[RunningNode]:
        return [n for runs in self.instances.values() for n in runs if n.proc.poll() is None]

    def _signal_all(self, sig: signal.Signals) -> None:
        for node in self._alive():
            with contextlib.suppress(ProcessLookupError):
                node.proc.send_signal(sig)

    def _shutdown(self, reason: str) -> None:
        self._pending.clear()
        self._respawn_at.clear()
        alive = self._alive()
        if alive:
            self.say(f"shutting down {', '.join(n.spec.name for n in alive)} ({reason})")
        self._signal_all(signal.SIGINT)
        steps = [(self.sigint_timeout_s, signal.SIGTERM), (5.0, signal.SIGKILL), (5.0, None)]
        level = 1
        for timeout, next_signal in steps:
            deadline = time.monotonic() + timeout
            while self._alive() and time.monotonic() < deadline and self._interrupts <= level:
                time.sleep(0.05)
            still = self._alive()
            if not still or next_signal is None:
                break
            self.say(f"{', '.join(n.spec.name for n in still)} still running: {next_signal.name}")
            self._signal_all(next_signal)
            level += 1
        for runs in self.instances.values():
            for node in runs:
                if node.reader is not None:
                    node.reader.join(timeout=2.0)
        if self.exit_code is None:
            self.exit_code = 0
        self.say(f"all nodes stopped ({reason})")

    # ---- control -----------------------------------------------------------------------------------
    def stop(self, reason: str = "stopped", code: int = 0, timeout: float | None = None) -> int:
        """Shut the graph down (clean, as module docstring) and return its exit code."""
        self._request(reason, code)
        return self.wait(timeout)

    def interrupt(self) -> None:
        """Ctrl-C: the first stops the graph cleanly, later ones escalate (SIGTERM, then SIGKILL)."""
        self._interrupts += 1
        if self._interrupts == 1:
            self.say("interrupted: stopping the graph (Ctrl-C again to terminate at once)")
        self._request("interrupted", INTERRUPTED_EXIT)

    def wait(self, timeout: float | None = None) -> int:
        """Block until the graph has stopped (a finite node finished, a node died, or `stop()`)."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"the graph is still running after {timeout} s")
        assert self.exit_code is not None
        return self.exit_code

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    def pid(self, name: str) -> int:
        node = self.current(name)
        if node is None:
            raise RuntimeError(f"{name} has not started")
        return node.proc.pid

    def send_signal(self, name: str, sig: signal.Signals) -> None:
        """Signal one node's current process (tests: SIGKILL the learner, SIGSTOP a sensor)."""
        node = self.current(name)
        if node is None:
            raise RuntimeError(f"{name} has not started")
        node.proc.send_signal(sig)

    def output(self, name: str, instance: int = -1) -> str:
        runs = self.instances[name]
        return runs[instance].output if runs else ""

    def wait_output(self, name: str, text: str, timeout: float = 60.0, instance: int = -1) -> bool:
        """Whether `name` (its `instance`-th process; -1: the newest) printed `text` within `timeout`."""
        deadline = time.monotonic() + timeout
        with self._state:
            while time.monotonic() < deadline:
                runs = self.instances[name]
                present = runs and len(runs) > (instance if instance >= 0 else 0)
                if present and any(text in line for line in runs[instance].lines):
                    return True
                self._state.wait(min(0.2, max(deadline - time.monotonic(), 0.0)))
        return False

    def __enter__(self) -> Launcher:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        if self.running:
            self.stop("closed")


def run_graph(nodes: Sequence[NodeSpec], **kwargs: Any) -> int:
    """Start `nodes` and block until the graph ends; Ctrl-C / SIGTERM shut it down cleanly."""
    launcher = Launcher(nodes, **kwargs)
    previous = {
        sig: signal.signal(sig, lambda *_: launcher.interrupt()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        launcher.start()
        while True:
            try:
                return launcher.wait(timeout=0.5)
            except TimeoutError:
                continue
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
