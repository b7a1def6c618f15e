"""coirl_ros: residual fine-tuning of a frozen pi0.5 policy with coherent imitation learning."""

__version__ = "0.1.0"
