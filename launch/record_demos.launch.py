"""Record teleoperated demonstrations on the robot: joint + camera ingestion, recorder, teleop.

    ros2 launch coirl_ros record_demos.launch.py teleop_source:=joy   # with `ros2 run joy joy_node`
    ros2 launch coirl_ros record_demos.launch.py --show-args

Start and stop each demonstration with /recorder/start and /recorder/stop (data: success). The graph
is coirl_ros/graph.py; `coirl launch record` starts the same one without ros2cli.
"""

from coirl_ros.launch_actions import generate_graph_launch_description


def generate_launch_description():
    return generate_graph_launch_description("record", sim=False)
