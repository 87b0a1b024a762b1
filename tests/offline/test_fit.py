"""``mbrl-ros fit`` on bags of simulated driving: checkpoint, report, JSON, and clear errors."""

from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest
from car_bags import write_car_bag, write_vector_bag

from mbrl_ros.cli import main
from mbrl_ros.core.data import multistep_error
from mbrl_ros.core.retraining import split_episodes
from mbrl_ros.io import checkpoint
from mbrl_ros.io.model_registry import ModelRegistry
from mbrl_ros.io.config import node_parameters
from mbrl_ros.io.model_update import pack
from mbrl_ros.offline.fit import FitError, fit_bags, read_transitions, trainer_parameters


@pytest.fixture(scope="module")
def fitted(car_bag, fast_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("fit")
    code = main(["fit", str(car_bag.parent), "--robot", "car", "--model", "ensemble", "--out", str(out / "report"),
                 "--json", str(out / "errors.json"), "--config-dir", str(fast_config), "--task", "parking"])
    assert code == 0
    return out / "report", json.loads((out / "errors.json").read_text())


def test_the_checkpoint_loads_as_the_dynamics_server_loads_it(fitted):
    out, _ = fitted
    model, config, metrics = checkpoint.load(out / "model.pt")  # DynamicsServerNode.load_checkpoint
    registry = ModelRegistry(state_dim=5, action_dim=2)
    verdict = registry.offer(pack(model, config, metrics, version=0, kind=config["type"]), source="model.pt")
    assert verdict.status == "accepted", verdict.reason
    assert config["type"] == "ensemble" and metrics["val_transitions"] > 0
    assert {"parametric.pt", "semiparametric.pt"} == {p.name for p in (out / "compared").iterdir()}


def test_the_json_holds_each_models_held_out_error_as_recomputed_from_its_checkpoint(fitted, car_bag, fast_config):
    out, document = fitted
    assert document["requested_model"] == "ensemble"
    assert set(document["models"]) == {"parametric", "ensemble", "semiparametric"}
    params, _ = trainer_parameters("car", "parking", fast_config)
    _, _, val = split_episodes(read_transitions([car_bag], params, {}), [params["val_fraction"], params["gate_fraction"]],
                               params["split_seed"])
    assert document["val_episodes"] == [e for e, _, _ in val.episodes()]
    for kind, path in (("ensemble", out / "model.pt"), ("parametric", out / "compared" / "parametric.pt")):
        model, _, _ = checkpoint.load(path)
        expected = multistep_error(model, val, document["horizons"], angle_dims=params["angle_dims"],
                                   scale=params["error_scale"])
        # The ensemble propagates each start state through a randomly drawn member (TS1): close, not equal.
        tolerance = 1e-4 if kind == "parametric" else 0.05
        for h in document["horizons"]:
            assert document["models"][kind]["val_rmse"][str(h)] == pytest.approx(expected.rmse[h], rel=tolerance)
            assert document["models"][kind]["windows"][str(h)] == expected.num_windows[h]


def test_the_report_has_the_table_and_the_plots(fitted):
    out, document = fitted
    with open(out / "errors.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == ["ensemble (requested)", "parametric", "semiparametric"]
    for row in rows:
        assert all(math.isfinite(float(row[f"h{h}"])) for h in document["horizons"]), row
    report = (out / "report.md").read_text()
    assert "| ensemble (requested) |" in report and "trajectories.png" in report
    for plot in ("error_vs_horizon.png", "trajectories.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", plot


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = main(["fit", *args])
    return code, capsys.readouterr().err


def test_no_bags_is_a_clear_error(capsys, tmp_path, fast_config):
    common = ["--robot", "car", "--out", str(tmp_path / "out"), "--config-dir", str(fast_config)]
    code, err = run_cli(capsys, *common)
    assert code == 2 and "no bags given" in err
    (tmp_path / "empty").mkdir()
    code, err = run_cli(capsys, str(tmp_path / "empty"), *common)
    assert code == 2 and f"{tmp_path / 'empty'}: holds no bag" in err
    code, err = run_cli(capsys, str(tmp_path / "missing"), *common)
    assert code == 2 and "does not exist" in err
    assert not (tmp_path / "out").exists(), "an error must leave no half-written output"


def test_a_bag_without_the_command_topic_names_the_bag_and_topic(capsys, tmp_path, fast_config):
    bag = write_car_bag(tmp_path / "states_only", 60, topics=("state",))
    code, err = run_cli(capsys, str(bag), "--robot", "car", "--out", str(tmp_path / "out"),
                        "--config-dir", str(fast_config))
    assert code == 2
    assert str(bag) in err and "no topic 'hw/command'" in err and "/car/state" in err


def test_an_unknown_model_is_refused_with_the_known_ones(capsys, tmp_path, car_bag, fast_config):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", str(car_bag), "--robot", "car", "--model", "gaussian_process", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "invalid choice: 'gaussian_process'" in capsys.readouterr().err
    with pytest.raises(FitError, match=r"unknown model kind 'gaussian_process'.*'parametric', 'ensemble'"):
        fit_bags([car_bag], "car", "gaussian_process", tmp_path, config_dir=fast_config)


def test_one_episode_cannot_be_split_for_validation(capsys, tmp_path, fast_config):
    bag = write_car_bag(tmp_path / "short", 20)  # 20 steps: one episode
    code, err = run_cli(capsys, str(bag), "--robot", "car", "--out", str(tmp_path / "out"),
                        "--config-dir", str(fast_config))
    assert code == 2 and str(bag) in err and "at least 3 episodes" in err


def test_the_hand_without_its_config_says_what_is_missing(capsys, tmp_path, car_bag, fast_config):
    only_car = tmp_path / "config"
    only_car.mkdir()
    shutil.copy(fast_config / "car.yaml", only_car)
    code, err = run_cli(capsys, str(car_bag), "--robot", "hand", "--out", str(tmp_path / "out"),
                        "--config-dir", str(only_car))
    assert code == 2
    assert f"{only_car / 'hand.yaml'}: no config for robot 'hand'" in err and "--config-dir" in err


def test_hand_bags_fit_the_hands_prior_and_compare_every_kind(tmp_path, fast_config):
    hand = node_parameters(fast_config / "hand.yaml", "trainer")
    states, actions = hand["state_names"], hand["action_names"]
    rng = np.random.default_rng(0)
    episodes = []
    for _ in range(5):  # joint states drifting with the commands: something an ensemble can fit
        u = rng.uniform(-1, 1, (40, len(actions)))
        x = np.zeros((41, len(states)))
        for t in range(40):
            x[t + 1] = x[t] + 0.01 * np.resize(u[t], len(states))
        episodes.append((x, u))
    bag = write_vector_bag(tmp_path / "hand_0000", episodes, states, actions, namespace="/hand",
                           dt_ns=int(hand["dt"] * 1e9))
    code = main(["fit", str(bag), "--robot", "hand", "--out", str(tmp_path / "out"), "--json", str(tmp_path / "e.json"),
                 "--config-dir", str(fast_config)])
    assert code == 0
    document = json.loads((tmp_path / "e.json").read_text())
    assert document["requested_model"] == "parametric" and document["transitions"] == 200  # the hand's default
    for kind in ("ensemble", "parametric", "semiparametric"):  # the hand's physics prior, and on it a residual
        assert all(math.isfinite(document["models"][kind]["val_rmse"][str(h)]) for h in document["horizons"]), kind
    model, config, _ = checkpoint.load(tmp_path / "out" / "model.pt")
    assert (model.state_dim, model.action_dim) == (len(states), len(actions))


BAD_CONFIG = {  # appended to car_parking.yaml -> what the error says after naming that file
    "broken YAML": ("/**/trainer:\n  ros__parameters: [1, 2\n", "not valid YAML"),
    "wrong type": ("/**/trainer:\n  ros__parameters:\n    max_jump: far\n",
                   "trainer parameter 'max_jump': expected a number in [0, 1e+06], got 'far'"),
    "out of range": ("/**/trainer:\n  ros__parameters:\n    val_fraction: 1.5\n",
                     "trainer parameter 'val_fraction': expected a number in [0.01, 0.99], got 1.5"),
    "bad horizon": ("/**/trainer:\n  ros__parameters:\n    horizons: [1, 0]\n",
                    "trainer parameter 'horizons': expected a list of integers in [1, 100000], got [1, 0]"),
    "no ros__parameters": ("/**/trainer:\n  parameters: {}\n", "section '/**/trainer' has no 'ros__parameters'"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIG))
def test_a_bad_config_file_names_the_file_and_key_and_writes_nothing(capsys, tmp_path, car_bag, fast_config, case):
    """Issue 9 section 4: a value of the wrong type gave a traceback, one out of range was blamed on the bag."""
    config = tmp_path / "config"
    shutil.copytree(fast_config, config)
    text, says = BAD_CONFIG[case]
    with (config / "car_parking.yaml").open("a") as f:
        f.write(text)
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.pt").write_bytes(b"an earlier fit")
    code, err = run_cli(capsys, str(car_bag), "--robot", "car", "--task", "parking", "--out", str(out),
                        "--config-dir", str(config))
    assert code == 2 and f"{config / 'car_parking.yaml'}: {says}" in err, err
    assert "Traceback" not in err
    assert [p.name for p in out.iterdir()] == ["model.pt"] and (out / "model.pt").read_bytes() == b"an earlier fit"
