"""Fine-tune on the robot: joint + camera ingestion, recorder, policy (base + residual), learner.

    ros2 launch coirl_ros finetune.launch.py base_checkpoint:=/path/to/pi05_or_local_base
    ros2 launch coirl_ros finetune.launch.py --show-args

The robot's driver (ros2_control with the controllers named in robot.yaml `command:`) and the camera
hardware run outside this graph. Episodes start and stop through /recorder/start and /recorder/stop
(the operator dashboard, or `ros2 service call`). The graph is coirl_ros/graph.py; `coirl launch
finetune` starts the same one without ros2cli.
"""

from coirl_ros.launch_actions import generate_graph_launch_description


def generate_launch_description():
    return generate_graph_launch_description("finetune", sim=False)
