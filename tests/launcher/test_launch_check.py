"""Issue 9 §4: a combination of valid launch choices the stack cannot run ends the whole launch with the reason.

The rule lives in one place, mbrl_ros/launch_check.py, asked of the robot plug-ins and the config folder;
bringup.launch.yaml runs it as a node with on_exit: shutdown, which the upstream ros2 launch and
mbrl-ros launch both honour.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from mbrl_ros.io.config import launch_parameters
from mbrl_ros.launch_check import HARDWARE_FILES, check_combination
from mbrl_ros.robots import available_robots, get_robot
from mbrl_ros.ros_env import REPO_ROOT, free_domain_id, workspace_env

CONFIG = REPO_ROOT / "config"


def test_every_task_file_and_model_kind_of_each_robot_is_a_valid_combination():
    for robot in available_robots():
        tasks = [t for p in CONFIG.glob(f"{robot}_*.yaml") if (t := p.stem.split("_", 1)[1]) not in HARDWARE_FILES]
        assert tasks, robot
        for task in tasks:
            state_names = launch_parameters(CONFIG, robot, task, "trainer").get("state_names")
            for model in get_robot(robot).model_kinds(state_names):
                check_combination(robot, task, model, CONFIG)


@pytest.mark.parametrize("model", ["parametric", "semiparametric"])
def test_the_hands_prior_does_not_know_the_block_so_rotate_runs_the_ensemble_only(model):
    """Issue 10 §1: launch_check knows the rotate task, whose state holds the block the joints' prior lacks."""
    check_combination("hand", "rotate", "ensemble", CONFIG)
    with pytest.raises(ValueError, match=f"robot 'hand' task 'rotate' cannot run model '{model}'; its models: "
                                         "ensemble$"):
        check_combination("hand", "rotate", model, CONFIG)


@pytest.mark.parametrize("robot, task, model, why", [
    ("car", "reach", "parametric", "robot 'car' has no task 'reach' (no task file "),
    ("car", "real", "parametric", "robot 'car' has no task 'real'"),
    ("boat", "reach", "ensemble", "unknown robot 'boat'"),
])
def test_a_combination_the_stack_cannot_run_is_refused_with_the_reason(robot, task, model, why):
    with pytest.raises(ValueError) as refused:
        check_combination(robot, task, model, CONFIG)
    assert why in str(refused.value)
    if "no task" in why:
        assert "its tasks: parking, race" in str(refused.value)


@pytest.mark.parametrize("model", ["parametric", "semiparametric"])
def test_a_model_kind_on_a_physics_prior_the_robot_lacks_is_refused(monkeypatch, model):
    """Every shipped robot has a prior now; one without (the hand as it was) runs ensembles only."""
    from mbrl_ros.robots.hand import Hand
    from mbrl_ros.robots.robot import Robot

    check_combination("hand", "reach", model, CONFIG)
    monkeypatch.setattr(Hand, "physics_prior", Robot.physics_prior)
    with pytest.raises(ValueError, match=f"robot 'hand' task 'reach' cannot run model '{model}'; its models: ensemble$"):
        check_combination("hand", "reach", model, CONFIG)
    check_combination("hand", "reach", "ensemble", CONFIG)


def test_the_launch_ends_with_the_reason_and_exit_code_1(tmp_path):
    """robot:=hand model:=parametric for a hand without a physics prior (every process of the launch
    loads this sitecustomize, which takes the hand's away): every argument a valid choice, the
    combination not; the whole launch ends."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "from mbrl_ros.robots.hand import Hand\nfrom mbrl_ros.robots.robot import Robot\n"
        "Hand.physics_prior = Robot.physics_prior\n")
    domain = free_domain_id("launch-check")
    env = workspace_env(domain_id=domain)
    env = {**env, "ROS_LOG_DIR": str(tmp_path / "log"),
           "PYTHONPATH": ":".join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)}
    ended = subprocess.run([sys.executable, "-m", "mbrl_ros.launcher", str(REPO_ROOT / "launch" / "bringup.launch.yaml"),
                            "robot:=hand", "model:=parametric", f"config_dir:={CONFIG}", f"run_dir:={tmp_path / 'run'}"],
                           env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert ended.returncode == 1, ended.stderr[-3000:]
    assert "robot 'hand' task 'reach' cannot run model 'parametric'; its models: ensemble" in ended.stdout + ended.stderr
    assert "launch_check exited (on_exit: shutdown): stopping all nodes" in ended.stderr


def test_a_learned_policy_needs_the_tasks_policy_section():
    """controller:=policy (learn_policy) on a task with no trainer 'policy' section: refused naming the files
    and the tasks that have one, instead of a trainer that exits 1 and is respawned every second."""
    check_combination("car", "parking", "ensemble", CONFIG, learn_policy=True)
    for robot, task, others in (("car", "race", "parking"), ("base", "goal", "none")):
        check_combination(robot, task, get_robot(robot).model_kinds()[0], CONFIG)  # fine without a policy
        with pytest.raises(ValueError) as refused:
            check_combination(robot, task, get_robot(robot).model_kinds()[0], CONFIG, learn_policy=True)
        said = str(refused.value)
        assert f"robot '{robot}' task '{task}' has no learned policy" in said and f"{robot}_{task}.yaml" in said
        assert said.endswith(f"tasks with one: {others}"), said


def test_controller_policy_on_a_task_without_a_policy_ends_the_launch_with_the_reason(tmp_path):
    domain = free_domain_id("launch-check-policy")
    env = {**workspace_env(domain_id=domain), "ROS_LOG_DIR": str(tmp_path / "log")}
    ended = subprocess.run([sys.executable, "-m", "mbrl_ros.launcher", str(REPO_ROOT / "launch" / "bringup.launch.yaml"),
                            "robot:=car", "task:=race", "controller:=policy", f"config_dir:={CONFIG}",
                            f"run_dir:={tmp_path / 'run'}"],
                           env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert ended.returncode == 1, ended.stderr[-3000:]
    assert "robot 'car' task 'race' has no learned policy" in ended.stdout + ended.stderr
    assert "tasks with one: parking" in ended.stdout + ended.stderr
    assert "launch_check exited (on_exit: shutdown): stopping all nodes" in ended.stderr
