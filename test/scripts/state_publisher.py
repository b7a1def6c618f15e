"""Test child standing in for joint_node (+ sim_node's object state): publishes a constant robot state.

/coirl/state (JointState in config order, stamped now) and /coirl/environment_state at 25 Hz until
killed. Being its own process, a busy test process cannot make the state look stale; the test makes
it stale on purpose with SIGSTOP and brings it back with SIGCONT.

argv: JSON {"names": [...], "positions": [...], "env_state": [...]}
"""

import json
import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from coirl_ros.nodes.interfaces import ENV_STATE_TOPIC, STATE_QOS, STATE_TOPIC, encode_environment_state


def main() -> None:
    spec = json.loads(sys.argv[1])
    rclpy.init()
    node = Node("test_state_publisher")
    pub_state = node.create_publisher(JointState, STATE_TOPIC, STATE_QOS)
    pub_env = node.create_publisher(Float64MultiArray, ENV_STATE_TOPIC, STATE_QOS)

    def tick() -> None:
        now = node.get_clock().now()
        msg = JointState(name=spec["names"], position=spec["positions"])
        msg.header.stamp = now.to_msg()
        pub_state.publish(msg)
        sec, nsec = divmod(now.nanoseconds, 1_000_000_000)
        pub_env.publish(encode_environment_state(spec["env_state"], sec, nsec))

    node.create_timer(0.04, tick)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if rclpy.ok():
            raise  # a real failure; a publish racing the SIGTERM shutdown is not
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
