"""Issue 13 §3: what can be verified of the robot image without a container engine.

hadolint lints docker/Dockerfile and shellcheck every shell script (both pinned in the test extra of
pyproject.toml); the launches the image and docker/compose.yaml start are valid bringup arguments and
split the stack into its robot and workstation roles. Building and running the image is not verified
here (no container engine; see docker/README.md).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mbrl_ros.launcher import load_launch_file
from mbrl_ros.ros_env import REPO_ROOT, workspace_env

SHELL_SCRIPTS = sorted([*REPO_ROOT.glob("scripts/*.sh"), REPO_ROOT / "setup.sh", REPO_ROOT / ".ci" / "run",
                        *REPO_ROOT.glob("docker/*.sh")])


def tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    assert path.exists(), f"{name} is not installed in {path.parent}: run ./setup.sh (the test extra pins it)"
    return str(path)


def lint(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}{done.stderr}"


def test_hadolint_finds_nothing_in_the_dockerfile():
    lint([tool("hadolint"), "docker/Dockerfile"])


def test_shellcheck_finds_nothing_in_the_shell_scripts():
    assert len(SHELL_SCRIPTS) >= 5, SHELL_SCRIPTS
    lint([tool("shellcheck"), *(str(p.relative_to(REPO_ROOT)) for p in SHELL_SCRIPTS)])


def test_the_image_stops_its_launch_with_sigint_and_starts_the_robots_side():
    dockerfile = (REPO_ROOT / "docker" / "Dockerfile").read_text()
    assert re.search(r"^FROM ros:jazzy$", dockerfile, re.M)
    assert re.search(r"^STOPSIGNAL SIGINT$", dockerfile, re.M)
    cmd = yaml.safe_load(re.search(r"^CMD (.*)$", dockerfile, re.M).group(1))  # the JSON (exec) form
    assert cmd[:4] == ["ros2", "launch", "mbrl_ros", "bringup.launch.yaml"], cmd
    assert started(cmd[4:]) == ["launch_check", "real_car", "estimator", "controller"]


@pytest.mark.parametrize("service, nodes", [
    ("robot", ["launch_check", "sim_car", "estimator", "controller"]),
    ("workstation", ["launch_check", "dynamics_server", "data_logger", "trainer"]),
])
def test_the_compose_services_launch_the_robot_and_the_workstation_roles(service, nodes):
    compose = yaml.safe_load((REPO_ROOT / "docker" / "compose.yaml").read_text())["services"][service]
    assert compose["stop_signal"] == "SIGINT"
    command = [re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", word) for word in compose["command"]]  # compose's defaults
    assert command[:4] == ["ros2", "launch", "mbrl_ros", "bringup.launch.yaml"], command
    assert started(command[4:]) == nodes


def started(arguments: list[str]) -> list[str]:
    """The nodes the pip launcher starts for these `name:=value` bringup arguments."""
    args = dict(a.split(":=", 1) for a in arguments)
    with load_launch_file(REPO_ROOT / "launch" / "bringup.launch.yaml", args, environment=workspace_env()) as launch:
        return [n.name for n in launch.nodes]
