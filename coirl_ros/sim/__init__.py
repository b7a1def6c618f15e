"""MuJoCo simulation of the Panda work cell: tasks, gymnasium environment, scripted experts. No ROS."""

import os

# Offscreen rendering on a machine without a display: EGL (or OSMesa) must be chosen before mujoco
# is imported anywhere in the process.
os.environ.setdefault("MUJOCO_GL", "egl")
