"""Either graph in MuJoCo: sim_node behind the robot's topics, every node on the sim's /clock.

    ros2 launch coirl_ros sim.launch.py graph:=record episodes:=10            # scripted demos via teleop
    ros2 launch coirl_ros sim.launch.py graph:=finetune base_checkpoint:=runs/demo/base
    ros2 launch coirl_ros sim.launch.py --show-args

With `episodes` > 0, episode_driver runs that many episodes (lockstep sim: as fast as the graph
goes) and then the launch shuts down. The graph is coirl_ros/graph.py; `coirl launch record --sim`
and `coirl launch finetune --sim` start the same ones without ros2cli.
"""

from coirl_ros.launch_actions import generate_graph_launch_description


def generate_launch_description():
    return generate_graph_launch_description(None, sim=True)
