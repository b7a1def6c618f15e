"""ROS smoke test child: waits for 5 JointState messages, prints them as JSON (exit 1 on timeout)."""

import json
import sys
import time

import rclpy
from rclpy.node import Node
from sensor_msgs.msg import JointState


def main() -> int:
    rclpy.init()
    node = Node("smoke_listener")
    got: list[JointState] = []
    node.create_subscription(JointState, "/joint_states", got.append, 10)
    deadline = time.monotonic() + 30
    while len(got) < 5 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    node.destroy_node()
    rclpy.try_shutdown()
    if len(got) < 5:
        return 1
    print(json.dumps({"names": list(got[-1].name), "positions": [list(m.position) for m in got]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
