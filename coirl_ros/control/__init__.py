"""The ROS-free control core: normalised actions to limited joint commands, the per-tick policy runtime.

Shared by the simulator (`coirl_ros.sim.env`), the policy node and the teleop node, so an action means
the same joint command everywhere. Plain Python/NumPy/torch: importable without rclpy.
"""
