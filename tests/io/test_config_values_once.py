"""Values that must agree across nodes (the control period, the exploration budget) are written once."""

from __future__ import annotations

import pytest
import yaml

from mbrl_ros.io.config import ConfigError, derived, launch_parameters, model_section_at
from mbrl_ros.ros_env import REPO_ROOT

CONFIG = REPO_ROOT / "config"
TASKS = {"car": ("parking", "race"), "hand": ("reach", "rotate"), "base": ("goal", "path")}
DERIVED = {"controller": ("rate_hz", "exploration_steps"), "real_car": ("control_period",),
           "real_hand": ("control_period",)}


def test_a_derived_key_may_be_left_out_or_agree_but_never_differ():
    assert derived(5.0, None, "rate_hz", "dt", "controller") == 5.0
    assert derived(5.0, 5.000000000000001, "rate_hz", "dt", "controller") == 5.0
    with pytest.raises(ConfigError, match=r"controller: 'rate_hz' is 20.0, but it follows from 'dt' \(5.0\)"):
        derived(5.0, 20.0, "rate_hz", "dt", "controller")


def test_a_model_section_steps_the_control_period():
    assert model_section_at({"type": "parametric", "substeps": 3}, 0.2, "trainer.parametric")["dt"] == 0.2
    semi = model_section_at({"type": "semiparametric", "prior": {"type": "parametric"}}, 0.05, "trainer.semi")
    assert semi["prior"]["dt"] == 0.05
    assert "dt" not in model_section_at({"type": "ensemble", "state_dim": 5, "action_dim": 2}, 0.2, "e")
    with pytest.raises(ConfigError, match=r"trainer.parametric.dt' is 0.1, but it follows from 'dt' \(0.2\)"):
        model_section_at({"type": "parametric", "dt": 0.1}, 0.2, "trainer.parametric")


@pytest.mark.parametrize("robot, task", [(r, t) for r, tasks in TASKS.items() for t in tasks])
def test_the_repository_config_writes_dt_and_the_budget_once(robot, task):
    for file in (CONFIG / f"{robot}.yaml", CONFIG / f"{robot}_{task}.yaml"):
        sections = yaml.safe_load(file.read_text())
        for name, body in sections.items():
            params = body["ros__parameters"]
            if name != "/**":
                assert "dt" not in params and "random_transitions" not in params, f"{file}: {name}"
            for node, keys in DERIVED.items():
                if name.endswith(node):
                    assert not set(keys) & set(params), f"{file}: {name} sets {set(keys) & set(params)}"
    trainer = launch_parameters(CONFIG, robot, task, "trainer")
    for kind in ("parametric", "ensemble", "semiparametric"):
        if kind in trainer:
            assert "dt" not in trainer[kind] and "dt" not in (trainer[kind].get("prior") or {}), kind
    dts = {node: launch_parameters(CONFIG, robot, task, node)["dt"] for node in ("estimator", "controller", "trainer")}
    assert len(set(dts.values())) == 1, dts


def test_a_task_with_a_learned_policy_gives_the_trainer_the_controllers_cost_and_bounds():
    """Issue 12: the policy learns the planners' cost within the controller's bounds; the robot config writes
    them once, in '/**', so the launch files give the trainer exactly the controller's."""
    with_policy = [(r, t) for r, tasks in TASKS.items() for t in tasks
                   if "policy" in launch_parameters(CONFIG, r, t, "trainer")]
    assert ("car", "parking") in with_policy, with_policy
    for robot, task in with_policy:
        trainer = launch_parameters(CONFIG, robot, task, "trainer")
        controller = launch_parameters(CONFIG, robot, task, "controller")
        for key in ("cost", "action_low", "action_high"):
            assert key in controller and trainer.get(key) == controller[key], (robot, task, key)
        for file in (CONFIG / f"{robot}.yaml", CONFIG / f"{robot}_{task}.yaml"):
            for name, body in yaml.safe_load(file.read_text()).items():
                shared = {"cost", "action_low", "action_high"} & set(body["ros__parameters"])
                assert name == "/**" or not shared, f"{file}: {name} sets {shared}: '/**' is the one place"


@pytest.mark.parametrize("task", TASKS["car"])
def test_the_car_models_steer_as_fast_as_the_estimator_does(task):
    """The physics prior's steering rate limit is the estimator's (known, not fitted): a model that steered
    faster or slower than the state it is fitted to would be identified wrong."""
    limit = launch_parameters(CONFIG, "car", task, "estimator").get("steer_rate_limit", 0.0)
    trainer = launch_parameters(CONFIG, "car", task, "trainer")
    priors = [trainer[kind] for kind in ("parametric",) if kind in trainer]
    priors += [trainer[kind]["prior"] for kind in ("semiparametric",) if kind in trainer]
    assert priors
    for prior in priors:
        assert prior.get("steer_rate_limit", 0.0) == limit, (task, prior)
