"""ROS smoke test child: publishes sensor_msgs/JointState on /joint_states at 50 Hz until killed."""

import rclpy
from rclpy.node import Node
from sensor_msgs.msg import JointState


def main() -> None:
    rclpy.init()
    node = Node("smoke_talker")
    pub = node.create_publisher(JointState, "/joint_states", 10)
    count = [0]

    def tick() -> None:
        msg = JointState()
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.name = [f"panda_joint{i}" for i in range(1, 8)]
        msg.position = [0.1 * i + count[0] for i in range(7)]
        pub.publish(msg)
        count[0] += 1

    node.create_timer(0.02, tick)
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
