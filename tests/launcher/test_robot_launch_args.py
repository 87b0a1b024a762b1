"""The robots' launch file (launch/robot.launch.yaml, one for every robot) takes every bringup argument, and
starts every robot's nodes as each role asks."""

from __future__ import annotations

import yaml

from mbrl_ros.robots import available_robots
from mbrl_ros.ros_env import REPO_ROOT

LAUNCH = REPO_ROOT / "launch"


def _args(entries: list[dict]) -> dict[str, dict]:
    return {e["arg"]["name"]: e["arg"] for e in entries if "arg" in e}


def test_the_robot_launch_file_takes_every_argument_bringup_passes():
    bringup = yaml.safe_load((LAUNCH / "bringup.launch.yaml").read_text())["launch"]
    group = next(e["group"] for e in bringup if "group" in e)
    include = next(e["include"] for e in group if "include" in e)
    assert include["file"] == "$(dirname)/robot.launch.yaml"
    passed = {a["name"] for a in include["arg"]}
    robots = [c["value"] for c in _args(bringup)["robot"]["choice"]]
    assert sorted(robots) == available_robots()
    declared = set(_args(yaml.safe_load((LAUNCH / "robot.launch.yaml").read_text())["launch"]))
    assert passed == declared, f"launch/robot.launch.yaml: passed {sorted(passed)}, declared {sorted(declared)}"


def test_every_node_but_the_hardware_driver_respawns():
    """Issue 9 §3: the stack restarts around the controller; the hardware driver (sim_* or real_*, which
    owns the device) does not respawn, so a dead driver is seen, not hidden."""
    nodes = [e["node"] for e in yaml.safe_load((LAUNCH / "robot.launch.yaml").read_text())["launch"] if "node" in e]
    drivers = [node["exec"] for node in nodes if node["exec"] in ("sim_$(var robot)", "real_$(var robot)")]
    assert sorted(drivers) == ["real_$(var robot)", "sim_$(var robot)"]
    for node in nodes:
        where = f"launch/robot.launch.yaml node {node['exec']}"
        if node["exec"] in drivers:
            assert "respawn" not in node, where
        else:
            assert node.get("respawn") == "true" and isinstance(node.get("respawn_delay"), float), where
            # A lasting failure (a configuration error) is not restarted for ever; an unquoted integer, the
            # only form upstream Jazzy's YAML front end handles (ros2/launch#968).
            assert type(node.get("respawn_max_retries")) is int and node["respawn_max_retries"] > 0, where


def test_roles_split_every_robots_stack_between_the_robot_and_the_workstation():
    """Issue 13 §1: role:=robot starts the hardware driver, estimator and controller; role:=workstation the
    dynamics_server, data_logger and trainer; role:=all (the default) both, each node once."""
    from mbrl_ros.launcher import load_launch_file
    from mbrl_ros.ros_env import workspace_env

    for robot in available_robots():
        for hardware in ("sim", "real"):
            started = {}
            for role in ("all", "robot", "workstation"):
                args = {"robot": robot, "hardware": hardware, "role": role}
                with load_launch_file(LAUNCH / "bringup.launch.yaml", args, environment=workspace_env()) as launch:
                    started[role] = [n.name for n in launch.nodes]
            assert started["robot"] == ["launch_check", f"{hardware}_{robot}", "estimator", "controller"], started
            assert started["workstation"] == ["launch_check", "dynamics_server", "data_logger", "trainer"], started
            assert sorted(started["all"]) == sorted(set(started["robot"] + started["workstation"])), started
