"""A node run by `run_node`, for test_node_runtime.py: two executor threads whose timer callbacks each
take 0.3 s; close() reports how many were still running. `--slow-build`: the node takes 60 s to build
(as loading π0.5 does); `--slow-close`: its close() takes 3 s (saving a checkpoint)."""

from __future__ import annotations

import sys
import threading
import time

from rclpy.node import Node

from coirl_ros.nodes.node_runtime import run_node


class BusyNode(Node):
    def __init__(self) -> None:
        super().__init__("runtime_probe")
        if "--slow-build" in sys.argv:
            print("building", flush=True)
            time.sleep(60)
        self.running = 0
        self.ran = 0
        self.spinning = threading.Event()
        self.lock = threading.Lock()
        self.create_timer(0.05, self.tick)

    def tick(self) -> None:
        with self.lock:  # two executor threads: announce once
            if not self.spinning.is_set():
                self.spinning.set()
                print("spinning", flush=True)  # from a callback: run_node is spinning the node
        self.running += 1
        time.sleep(0.3)
        self.ran += 1
        self.running -= 1

    def close(self) -> None:
        if "--slow-close" in sys.argv:
            print("closing", flush=True)
            time.sleep(3)
        print(f"closed with {self.running} callbacks running after {self.ran}", flush=True)


if __name__ == "__main__":
    sys.exit(run_node(BusyNode, args=[a for a in sys.argv if not a.startswith("--slow-")], threads=2))
