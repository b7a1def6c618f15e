"""The CSIL++ learning core (no ROS): HetStat BC policy, coherent reward, critics, losses.

Maths in ../shared/DESIGN.md section 2. Conventions used throughout:
- actions are normalised to [-1, 1]^d; the prior p is uniform there, log p(a) = -d log 2;
- policies return a `TanhNormal` (distributions.py) over actions;
- losses are plain functions returning (loss tensor, metrics dict with namespaced keys).
"""
