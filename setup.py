"""ament_python package definition: `colcon build` on a robot, `pip install -e .` in the venv."""

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "coirl_ros"
HERE = Path(__file__).parent


def share_files(folder: str) -> list[tuple[str, list[str]]]:
    """Every file under `folder`, installed under share/coirl_ros/<folder> with its sub-folders."""
    entries: dict[str, list[str]] = {}
    for path in sorted((HERE / folder).rglob("*")):
        if path.is_file():
            rel = path.relative_to(HERE)
            entries.setdefault(f"share/{PACKAGE}/{rel.parent}", []).append(str(rel))
    return sorted(entries.items())


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*", "bench"]),
    # The dashboard's page (HTML, CSS, JS) is served from the package itself.
    package_data={"coirl_ros.dashboard": ["static/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *share_files("launch"),
        *share_files("config"),
        *share_files("urdf"),
        *share_files("sim"),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="coirl_ros developers",
    maintainer_email="coirl-ros@example.org",
    description="Residual fine-tuning of a frozen pi0.5 policy with coherent imitation learning.",
    license="Apache-2.0",
    tests_require=["pytest"],
    python_requires=">=3.12",
    entry_points={
        "console_scripts": [
            # One user CLI; node executables are added here as the nodes land (executable = module stem).
            "coirl = coirl_ros.cli:entry_point",
            # Control: policy, teleoperation and the learner (coirl_ros/control + thin nodes).
            "policy_node = coirl_ros.nodes.policy_node:main",
            "teleop_node = coirl_ros.nodes.teleop_node:main",
            "learner_node = coirl_ros.nodes.learner_node:main",
            # Sensing, simulation and recording nodes.
            "sim_node = coirl_ros.nodes.sim_node:main",
            "camera_node = coirl_ros.nodes.camera_node:main",
            "joint_node = coirl_ros.nodes.joint_node:main",
            "recorder_node = coirl_ros.nodes.recorder_node:main",
            "episode_driver = coirl_ros.nodes.episode_driver:main",
            # The operator dashboard (coirl_ros/dashboard + a thin node).
            "dashboard_node = coirl_ros.nodes.dashboard_node:main",
        ],
    },
)
