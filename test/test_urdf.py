"""urdf/panda.urdf: structure and limits as config/robot.yaml says, kinematics equal to sim/panda.xml."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import mujoco
import numpy as np
import pytest

from coirl_ros.configs import RobotConfig, load_config
from coirl_ros.paths import config_dir, share_dir

URDF = share_dir() / "urdf" / "panda.urdf"
MJCF = share_dir() / "sim" / "panda.xml"

ARM_JOINTS = [f"panda_joint{i}" for i in range(1, 8)]
FINGER_JOINTS = ["panda_finger_joint1", "panda_finger_joint2"]
LINKS = [f"panda_link{i}" for i in range(8)] + [
    "panda_hand",
    "panda_leftfinger",
    "panda_rightfinger",
    "panda_tcp",
]
# name: (type, parent, child)
JOINTS = {
    **{f"panda_joint{i}": ("revolute", f"panda_link{i - 1}", f"panda_link{i}") for i in range(1, 8)},
    "panda_hand_joint": ("fixed", "panda_link7", "panda_hand"),
    "panda_finger_joint1": ("prismatic", "panda_hand", "panda_leftfinger"),
    "panda_finger_joint2": ("prismatic", "panda_hand", "panda_rightfinger"),
    "panda_tcp_joint": ("fixed", "panda_hand", "panda_tcp"),
}
ARM_EFFORT = [87.0] * 4 + [12.0] * 3  # Nm, Franka datasheet
FINGER_EFFORT = 20.0  # N


def urdf_root() -> ET.Element:
    root = ET.parse(URDF).getroot()
    assert root.tag == "robot"
    return root


def joints_by_name(root: ET.Element) -> dict[str, ET.Element]:
    return {j.get("name"): j for j in root.findall("joint")}


def floats(text: str | None) -> list[float]:
    assert text is not None
    return [float(x) for x in text.split()]


# ---- structure --------------------------------------------------------------------------------
def test_links_and_joint_chain() -> None:
    root = urdf_root()
    assert root.get("name") == "panda"
    assert sorted(link.get("name") for link in root.findall("link")) == sorted(LINKS)
    joints = joints_by_name(root)
    assert set(joints) == set(JOINTS)
    for name, (kind, parent, child) in JOINTS.items():
        j = joints[name]
        assert j.get("type") == kind, name
        assert j.find("parent").get("link") == parent, name
        assert j.find("child").get("link") == child, name
    # A tree rooted at panda_link0: every other link is the child of exactly one joint.
    children = [j.find("child").get("link") for j in joints.values()]
    assert sorted(children) == sorted(set(LINKS) - {"panda_link0"})
    # Visual and collision geometry are primitives only (no meshes to ship or resolve).
    assert root.find(".//mesh") is None
    assert {g.tag for g in root.iterfind(".//geometry/*")} <= {"box", "cylinder", "sphere"}
    # Collision shapes equal the visuals (the kinematic tests below compile the collision ones).
    for link in root.findall("link"):

        def shapes(kind: str, link: ET.Element = link) -> list[tuple]:
            return [
                (e.find("origin").attrib, e.find("geometry")[0].tag, e.find("geometry")[0].attrib)
                for e in link.findall(kind)
            ]

        assert shapes("visual") == shapes("collision"), link.get("name")


def test_joint_names_and_limits_match_robot_config() -> None:
    robot = load_config(config_dir() / "robot.yaml", RobotConfig)
    joints = joints_by_name(urdf_root())
    assert robot.joint_names == ARM_JOINTS
    for cfg, effort in zip(robot.joints, ARM_EFFORT, strict=True):
        j = joints[cfg.name]
        assert floats(j.find("axis").get("xyz")) == [0.0, 0.0, 1.0]
        limit = j.find("limit")
        assert float(limit.get("lower")) == cfg.lower, cfg.name
        assert float(limit.get("upper")) == cfg.upper, cfg.name
        assert float(limit.get("velocity")) == cfg.max_velocity, cfg.name
        assert float(limit.get("effort")) == effort, cfg.name

    assert robot.gripper.joint == "panda_finger_joint1"
    for name in FINGER_JOINTS:
        limit = joints[name].find("limit")
        assert float(limit.get("lower")) == min(robot.gripper.open, robot.gripper.closed), name
        assert float(limit.get("upper")) == max(robot.gripper.open, robot.gripper.closed), name
        assert float(limit.get("velocity")) == robot.gripper.max_velocity, name
        assert float(limit.get("effort")) == FINGER_EFFORT, name
        assert floats(joints[name].find("axis").get("xyz")) == [0.0, 1.0, 0.0]
    mimic = joints["panda_finger_joint2"].find("mimic")
    assert mimic is not None and mimic.get("joint") == "panda_finger_joint1"
    assert float(mimic.get("multiplier", "1")) == 1.0 and float(mimic.get("offset", "0")) == 0.0
    assert joints["panda_finger_joint1"].find("mimic") is None


def test_inertials_are_physical() -> None:
    for link in urdf_root().findall("link"):
        inertial = link.find("inertial")
        if link.get("name") == "panda_tcp":
            assert inertial is None  # a frame, not a body
            continue
        assert inertial is not None, link.get("name")
        assert float(inertial.find("mass").get("value")) > 0
        i = {k: float(v) for k, v in inertial.find("inertia").attrib.items()}
        tensor = np.array(
            [
                [i["ixx"], i["ixy"], i["ixz"]],
                [i["ixy"], i["iyy"], i["iyz"]],
                [i["ixz"], i["iyz"], i["izz"]],
            ]
        )
        principal = np.linalg.eigvalsh(tensor)
        assert principal.min() > 0, link.get("name")
        # Triangle inequality of a rigid body's principal moments.
        assert 2 * principal.max() <= principal.sum() * (1 + 1e-9), link.get("name")


# ---- kinematic equivalence with the MJCF ------------------------------------------------------
def compile_urdf(path: Path) -> mujoco.MjModel:
    """MuJoCo's URDF compiler, keeping fixed links (panda_hand, panda_tcp) as bodies of their own."""
    text = path.read_text()
    head, sep, tail = text.partition('<robot name="panda">')
    assert sep, "no <robot> element"
    extension = '<mujoco><compiler fusestatic="false" discardvisual="true"/></mujoco>'
    return mujoco.MjModel.from_xml_string(head + sep + extension + tail)


@pytest.fixture(scope="module")
def models() -> tuple[mujoco.MjModel, mujoco.MjModel]:
    return compile_urdf(URDF), mujoco.MjModel.from_xml_path(str(MJCF))


def set_joints(model: mujoco.MjModel, data: mujoco.MjData, q: dict[str, float]) -> None:
    for name, value in q.items():
        data.qpos[model.joint(name).qposadr[0]] = value
    mujoco.mj_kinematics(model, data)


def test_urdf_compiles_with_the_same_joints_ranges_and_masses(models) -> None:
    urdf, mjcf = models
    names = ARM_JOINTS + FINGER_JOINTS
    assert sorted(urdf.joint(i).name for i in range(urdf.njnt)) == sorted(names)
    for name in names:
        np.testing.assert_array_equal(urdf.joint(name).range, mjcf.joint(name).range, err_msg=name)
        np.testing.assert_array_equal(urdf.joint(name).axis, mjcf.joint(name).axis, err_msg=name)
        assert urdf.joint(name).type == mjcf.joint(name).type, name
    for link in LINKS[:-1]:  # panda_tcp is a site in the MJCF
        np.testing.assert_allclose(urdf.body(link).mass, mjcf.body(link).mass, rtol=1e-9, err_msg=link)
        np.testing.assert_allclose(urdf.body(link).ipos, mjcf.body(link).ipos, atol=1e-9, err_msg=link)


def test_link_and_tcp_poses_match_mjcf(models) -> None:
    urdf, mjcf = models
    d_urdf, d_mjcf = mujoco.MjData(urdf), mujoco.MjData(mjcf)
    tcp = mjcf.site("tcp").id
    rng = np.random.default_rng(0)
    names = ARM_JOINTS + FINGER_JOINTS
    lower = np.array([mjcf.joint(n).range[0] for n in names])
    upper = np.array([mjcf.joint(n).range[1] for n in names])
    for _ in range(20):
        q = rng.uniform(lower, upper)
        q[-1] = q[-2]  # the mimic: both fingers open alike
        set_joints(urdf, d_urdf, dict(zip(names, q, strict=True)))
        set_joints(mjcf, d_mjcf, dict(zip(names, q, strict=True)))
        for link in LINKS[:-1]:
            a, b = urdf.body(link).id, mjcf.body(link).id
            np.testing.assert_allclose(d_urdf.xpos[a], d_mjcf.xpos[b], atol=1e-6, err_msg=link)
            np.testing.assert_allclose(d_urdf.xmat[a], d_mjcf.xmat[b], atol=1e-6, err_msg=link)
        a = urdf.body("panda_tcp").id
        np.testing.assert_allclose(d_urdf.xpos[a], d_mjcf.site_xpos[tcp], atol=1e-6, err_msg="tcp")
        np.testing.assert_allclose(d_urdf.xmat[a], d_mjcf.site_xmat[tcp], atol=1e-6, err_msg="tcp")


def test_geometry_matches_mjcf(models) -> None:
    """Each MJCF geom has a URDF collision twin of the same size and world pose (capsule -> cylinder)."""
    urdf, mjcf = models
    d_urdf, d_mjcf = mujoco.MjData(urdf), mujoco.MjData(mjcf)
    q = {name: 0.5 * sum(mjcf.joint(name).range) for name in ARM_JOINTS + FINGER_JOINTS}
    set_joints(urdf, d_urdf, q)
    set_joints(mjcf, d_mjcf, q)
    prim = {mujoco.mjtGeom.mjGEOM_CYLINDER, mujoco.mjtGeom.mjGEOM_BOX}
    for g in range(mjcf.ngeom):
        body = mjcf.body(mjcf.geom_bodyid[g]).name
        twins = [
            h
            for h in range(urdf.ngeom)
            if urdf.body(urdf.geom_bodyid[h]).name == body
            and urdf.geom_type[h] in prim
            and np.allclose(d_urdf.geom_xpos[h], d_mjcf.geom_xpos[g], atol=1e-9)
        ]
        assert len(twins) == 1, body
        h = twins[0]
        np.testing.assert_allclose(urdf.geom_size[h], mjcf.geom_size[g], atol=1e-9, err_msg=body)
        axes_u, axes_m = d_urdf.geom_xmat[h].reshape(3, 3), d_mjcf.geom_xmat[g].reshape(3, 3)
        if mjcf.geom_type[g] == mujoco.mjtGeom.mjGEOM_BOX:
            np.testing.assert_allclose(np.abs(axes_u.T @ axes_m), np.eye(3), atol=1e-9, err_msg=body)
        else:  # round: only the axis counts, either way along it
            assert abs(axes_u[:, 2] @ axes_m[:, 2]) == pytest.approx(1.0, abs=1e-9), body
