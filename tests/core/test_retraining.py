"""Online retraining logic: schedule, episode-stable validation split, scoring and the deploy decision."""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

import pytest
import torch

from mbrl_ros.core.data import MultiStepError, TransitionDataset
from mbrl_ros.core import retraining
from mbrl_ros.core.retraining import (
    PerBagTransitions,
    RetrainSchedule,
    decide,
    error_score,
    non_finite_problem,
    train_candidate,
    validation_split,
)
from mbrl_ros.robots import get_robot

CAR = get_robot("car")
build_model = CAR.build_model  # the car's physics prior is the 'parametric' kind

TRUE_CAR = {"type": "parametric", "dt": 0.2, "substeps": 3, "speed_input": "acceleration",
            "params": {"wheelbase": 2.5, "rear_axle_to_cg": 1.2, "speed_gain": 5.0, "steer_gain": 0.7, "lag": 0.3}}
# An uninformed start, as in config/car.yaml: identification has to find the parameters.
START = {**TRUE_CAR, "params": {"wheelbase": 3.0, "rear_axle_to_cg": 1.0, "speed_gain": 3.0, "steer_gain": 0.5, "lag": 0.0}}
SCALE = [1.0, 1.0, 0.1, 0.5, 0.1]


def driving(episodes: int = 10, steps: int = 40, seed: int = 0) -> TransitionDataset:
    """The true car driven by held random commands, measured with a little noise."""
    g = torch.Generator().manual_seed(seed)
    car = build_model(TRUE_CAR)
    state = torch.zeros(episodes, 5)
    state[:, 2] = torch.rand(episodes, generator=g) * 6.28
    held = torch.zeros(episodes, 2)
    trajectory, actions = [state], []
    with torch.no_grad():
        for _ in range(steps):
            held = torch.where(torch.rand(episodes, 2, generator=g) < 0.15, torch.rand(episodes, 2, generator=g) * 2 - 1, held)
            action = held.clone()
            action[:, 0] = (2.0 * (held[:, 0] * 4.0 - state[:, 3]) / 5.0).clamp(-1, 1)
            state = car(state, action)
            trajectory.append(state)
            actions.append(action)
    states = torch.stack(trajectory, 1) + torch.randn(episodes, steps + 1, 5, generator=g) * torch.tensor([.01, .01, .005, .03, .005])
    data = TransitionDataset(5, 2)
    for e in range(episodes):
        data.append_trajectory(states[e], torch.stack(actions, 1)[e], episode_id=e)
    return data


def error(rmse: dict[int, float], windows: dict[int, int] | None = None) -> MultiStepError:
    windows = windows or {h: 10 for h in rmse}
    return MultiStepError(rmse, {h: torch.zeros(5) for h in rmse}, windows)


def test_schedule_first_model_then_every_n_new_transitions():
    schedule = RetrainSchedule(first_at=100, every=50)
    assert not schedule.due(99, None) and schedule.due(100, None)
    assert not schedule.due(149, 100) and schedule.due(150, 100)
    with pytest.raises(ValueError, match="must be >= 1"):
        RetrainSchedule(first_at=0, every=1)


def test_validation_split_is_by_episode_and_stable_as_data_grows():
    data = driving(episodes=30, steps=3)
    train, val = validation_split(data, 0.2)
    train_ids = {e for e, _, _ in train.episodes()}
    val_ids = {e for e, _, _ in val.episodes()}
    assert train_ids.isdisjoint(val_ids) and train_ids | val_ids == set(range(30))
    assert 2 <= len(val_ids) <= 12 and len(train) + len(val) == len(data)
    more = driving(episodes=60, steps=3)
    _, val_later = validation_split(more, 0.2)
    later_ids = {e for e, _, _ in val_later.episodes()}
    assert later_ids & set(range(30)) == val_ids  # old episodes stay where they were
    _, other_seed = validation_split(data, 0.2, seed=1)
    assert {e for e, _, _ in other_seed.episodes()} != val_ids


def test_validation_split_keeps_one_episode_on_each_side():
    two = driving(episodes=2, steps=3)
    for fraction in (0.01, 0.99):
        train, val = validation_split(two, fraction)
        assert len(train.episodes()) == len(val.episodes()) == 1
    with pytest.raises(ValueError, match="at least 2 episodes"):
        validation_split(driving(episodes=1, steps=3), 0.2)


def test_error_score_averages_horizons_with_windows_and_counts_non_finite_as_inf():
    assert error_score(error({1: 0.1, 10: 0.3})) == pytest.approx(0.2)
    assert error_score(error({1: 0.1, 10: math.nan}, {1: 10, 10: 0})) == pytest.approx(0.1)
    assert error_score(error({1: 0.1, 10: math.nan})) == math.inf


def test_decide_accepts_only_a_better_candidate():
    assert decide(error({1: 0.2}), None).accept
    better = decide(error({1: 0.1, 10: 0.2}), error({1: 0.2, 10: 0.4}))
    assert better.accept and "better" in better.reason and "-50.0%" in better.reason
    worse = decide(error({1: 0.3}), error({1: 0.2}))
    assert not worse.accept and "not better" in worse.reason
    assert not decide(error({1: 0.19}), error({1: 0.2}), min_improvement=0.1).accept
    assert not decide(error({1: math.nan}), None).accept
    assert decide(error({1: 0.2}), error({1: math.inf})).accept


def test_train_candidate_fits_and_beats_a_wrong_current_model():
    data = driving()
    wrong = build_model(START)
    round_ = train_candidate(data, START, wrong, physics=CAR, val_fraction=0.3, horizons=(1, 5, 10), angle_dims=(2,),
                             error_scale=SCALE)
    assert round_.decision.accept, round_.decision.reason
    assert round_.decision.candidate_score < 0.5 * round_.decision.current_score
    assert round_.fit.config["params"]["wheelbase"] == pytest.approx(2.5, rel=0.1)
    metrics = round_.metrics()
    assert set(metrics) >= {"val_rmse_h1", "val_rmse_h5", "val_rmse_h10", "val_score"}
    assert metrics["train_transitions"] + metrics["val_transitions"] == len(data)
    assert set(round_.current_metrics()) == {"val_rmse_h1", "val_rmse_h5", "val_rmse_h10"}

    # The fitted model is now current: a second fit on the same data is not better than itself.
    again = train_candidate(data, START, round_.fit.model, physics=CAR, val_fraction=0.3, horizons=(1, 5, 10), angle_dims=(2,),
                            error_scale=SCALE, min_improvement=0.05)
    assert not again.decision.accept and "not better" in again.decision.reason


def test_train_candidate_does_not_score_a_current_model_of_other_dims():
    other = build_model({"type": "ensemble", "state_dim": 4, "action_dim": 2, "ensemble_size": 1, "hidden_sizes": [4]})
    round_ = train_candidate(driving(episodes=6, steps=30), START, other, physics=CAR, val_fraction=0.3, horizons=(1,))
    assert round_.decision.accept and "do not fit the data" in round_.decision.reason


ENSEMBLE = {"type": "ensemble", "state_dim": 5, "action_dim": 2, "ensemble_size": 2, "hidden_sizes": [8]}


def test_non_finite_problem_names_weights_and_predictions():
    assert non_finite_problem(build_model(START)) == ""
    nan_weight = build_model(START)
    with torch.no_grad():
        nan_weight.theta[1] = math.nan
    assert "non-finite values in the weights ['theta']" in non_finite_problem(nan_weight)
    overflow = build_model(ENSEMBLE)
    with torch.no_grad():
        for p in overflow.parameters():
            p.fill_(1e30)  # finite weights, every output overflows
    assert "test prediction gives non-finite" in non_finite_problem(overflow)
    # Finite on the fixed probe, NaN on the data it is given: the data rows are probed too.
    data = driving(episodes=2, steps=3)
    huge = data.states.clone()
    huge[1, 3] = 1e38
    assert non_finite_problem(build_model(ENSEMBLE), data.states, data.actions) == ""
    assert "probe row 65" in non_finite_problem(_Squares(), huge, data.actions)


class _Squares(torch.nn.Module):
    """A model whose prediction overflows float32 for large states (next = state ** 2)."""

    state_dim, action_dim = 5, 2

    def predict(self, states, actions):
        return SimpleNamespace(mean=states ** 2, spread=None)


def test_train_candidate_never_accepts_a_model_with_non_finite_weights(monkeypatch):
    def poisoned_fit(*args, **kwargs):
        fit = real_fit(*args, **kwargs)  # scored while still finite: the score alone would accept it
        with torch.no_grad():
            fit.model.theta[0] = math.nan
        return fit

    real_fit = retraining.fit_model
    monkeypatch.setattr(retraining, "fit_model", poisoned_fit)
    round_ = train_candidate(driving(episodes=6, steps=30), START, build_model(START), physics=CAR,
                             val_fraction=0.3,
                             horizons=(1, 5))
    assert math.isfinite(round_.decision.candidate_score)
    assert not round_.decision.accept
    assert round_.decision.reason.startswith("candidate not deployable: non-finite values in the weights")


def closed_bags(folder, count: int) -> list:
    """``count`` bag folders with a metadata.yaml (what PerBagTransitions looks at; the reader is the test's)."""
    bags = []
    for i in range(count):
        bag = folder / f"run_{i}"
        bag.mkdir()
        (bag / "metadata.yaml").write_text("closed")
        bags.append(bag)
    return bags


def test_per_bag_transitions_reads_each_closed_bag_once_and_keeps_episode_ids(tmp_path):
    bags = closed_bags(tmp_path, 3)
    data_of = {bags[0]: driving(episodes=2, steps=5, seed=0), bags[1]: driving(episodes=3, steps=4, seed=1)}
    calls = []

    def read(bag):
        calls.append(bag.name)
        if bag not in data_of:
            raise ValueError(f"{bag}: no transitions")
        return data_of[bag]

    cache = PerBagTransitions(read)
    assert cache.update(bags[:2]) == bags[:2]
    assert len(cache.dataset) == 2 * 5 + 3 * 4
    assert [e for e, _, _ in cache.dataset.episodes()] == [0, 1, 2, 3, 4]
    first_ids = cache.dataset.episode_ids.clone()
    assert cache.update(bags[:2]) == [] and calls == ["run_0", "run_1"]  # nothing new: nothing read

    # A bad bag is remembered (not re-read every look) and loses no other data.
    assert cache.update(bags) == [bags[2]]
    assert "no transitions" in cache.errors[bags[2]] and len(cache.dataset) == 22
    cache.update(bags)
    assert calls == ["run_0", "run_1", "run_2"]
    assert torch.equal(cache.dataset.episode_ids, first_ids)
    torch.testing.assert_close(cache.dataset.states[:10], data_of[bags[0]].states)

    # Repaired (metadata rewritten): read again; a bag that vanished is dropped.
    data_of[bags[2]] = driving(episodes=1, steps=6, seed=2)
    (bags[2] / "metadata.yaml").write_text("repaired")
    os.utime(bags[2] / "metadata.yaml", ns=(1, 10**18))
    assert cache.update(bags) == [bags[2]] and not cache.errors
    assert len(cache.dataset) == 28 and cache.dataset.episodes()[-1][0] == 5
    cache.update(bags[1:])
    assert len(cache.dataset) == 18 and cache.reads == 4


def test_per_bag_transitions_retries_a_bag_that_raises_oserror_a_bounded_number_of_times(tmp_path):
    """Issue 9: a trainer that hit OSError on one bag retried it at every look, forever."""
    bags = closed_bags(tmp_path, 2)
    good, later = driving(episodes=2, steps=5, seed=0), driving(episodes=1, steps=6, seed=1)
    calls = []

    def read(bag):
        calls.append(bag.name)
        if bag == bags[1] and not (bag / "fixed").exists():
            raise OSError(5, "Input/output error", str(bag / "run_1_0.mcap"))
        return good if bag == bags[0] else later

    cache = PerBagTransitions(read)  # 3 attempts by default
    assert cache.update(bags) == bags and len(cache.dataset) == 10  # the other bag's data is there at once
    assert "attempt 1 of 3" in cache.errors[bags[1]] and "Input/output error" in cache.errors[bags[1]]
    assert cache.update(bags) == [bags[1]] and "attempt 2 of 3" in cache.errors[bags[1]]
    assert cache.update(bags) == [bags[1]] and "gave up after 3 attempts" in cache.errors[bags[1]]
    for _ in range(5):  # then left alone, like a bad bag
        assert cache.update(bags) == []
    assert calls == ["run_0", "run_1", "run_1", "run_1"] and len(cache.dataset) == 10

    # Its metadata.yaml changes (a repaired or re-copied bag): tried again, with a fresh count.
    (bags[1] / "fixed").write_text("")
    os.utime(bags[1] / "metadata.yaml", ns=(1, 10**18))
    assert cache.update(bags) == [bags[1]] and cache.errors == {}
    assert len(cache.dataset) == 16 and calls[-1] == "run_1"
    with pytest.raises(ValueError, match="max_attempts"):
        PerBagTransitions(read, max_attempts=0)
