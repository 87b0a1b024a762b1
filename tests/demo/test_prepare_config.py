"""A run's parameter files: the repository's, copied, with the run's overrides merged in."""

import pytest
import yaml

from mbrl_ros.stack_run import prepare_config
from mbrl_ros.io.config import ConfigError, node_parameters
from mbrl_ros.ros_env import REPO_ROOT


def test_overrides_land_in_the_task_file_and_the_rest_is_copied_unchanged(tmp_path):
    config = prepare_config(REPO_ROOT / "config", tmp_path / "config", "car", "parking",
                            {"trainer": {"random_transitions": 300},
                             "controller": {"exploration_steps": 300, "mppi": {"num_samples": 64}}})
    assert (config / "car.yaml").read_text() == (REPO_ROOT / "config" / "car.yaml").read_text()
    controller = node_parameters(config / "car_parking.yaml", "controller")
    assert controller["exploration_steps"] == 300
    # A nested override merges into its section instead of replacing it.
    assert controller["mppi"]["num_samples"] == 64 and controller["mppi"]["horizon"] == 30
    assert node_parameters(config / "car_parking.yaml", "trainer")["random_transitions"] == 300
    # Strings come out quoted: rcl's parser would read a bare y or n as a boolean.
    text = (config / "car_parking.yaml").read_text()
    assert "'form': 'parking_reward'" in text
    assert yaml.safe_load(text)["/**"]["ros__parameters"]["cost"]["goal_pose"]["form"] == "parking_reward"


def test_a_missing_task_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="car_fly.yaml"):
        prepare_config(REPO_ROOT / "config", tmp_path / "config", "car", "fly")


def test_an_override_for_every_node_lands_in_the_shared_section(tmp_path):
    """``"/**"`` is every node's section (``mbrl-ros bench latency --executor``): the task file's own
    entries there stay, and each node reads the new one."""
    config = prepare_config(REPO_ROOT / "config", tmp_path / "config", "car", "race", {"/**": {"executor": "single"}})
    shared = yaml.safe_load((config / "car_race.yaml").read_text())["/**"]["ros__parameters"]
    assert shared["executor"] == "single" and shared["dt"] == 0.05
    assert "/**/**" not in (config / "car_race.yaml").read_text()
    for node in ("estimator", "controller", "sim_car"):
        assert node_parameters(config / "car_race.yaml", node)["executor"] == "single"
