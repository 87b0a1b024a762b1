"""Online retraining logic: schedule, episode-stable validation split, scoring and the deploy decision."""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

import pytest
import torch

from mbrl_ros.core.data import MultiStepError, TransitionDataset, multistep_error
from mbrl_ros.core import retraining
from mbrl_ros.core.retraining import (
    PerBagTransitions,
    RetrainSchedule,
    decide,
    error_score,
    non_finite_problem,
    split_episodes,
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


def driving(episodes: int = 10, steps: int = 40, seed: int = 0, true: dict = TRUE_CAR) -> TransitionDataset:
    """The true car driven by held random commands, measured with a little noise."""
    g = torch.Generator().manual_seed(seed)
    car = build_model(true)
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


def ids(data: TransitionDataset) -> set[int]:
    return {e for e, _, _ in data.episodes()}


def first_rows(data: TransitionDataset) -> set[bytes]:
    """Each episode by its first state (what it is, whatever its id)."""
    return {data.states[first].numpy().tobytes() for _, first, _ in data.episodes()}


def test_split_is_by_episode_and_stable_as_data_grows_or_is_renumbered():
    data = driving(episodes=40, steps=3)
    train, selection, gate = split_episodes(data, [0.2, 0.2])
    assert ids(train) | ids(selection) | ids(gate) == set(range(40))
    assert not (ids(train) & ids(selection) or ids(train) & ids(gate) or ids(selection) & ids(gate))
    assert all(3 <= len(ids(part)) <= 15 for part in (selection, gate))
    assert len(train) + len(selection) + len(gate) == len(data)
    # More data (the same episodes first, then new ones) and new numbering (bags read again): nothing moves.
    grown = TransitionDataset(5, 2)
    new = driving(episodes=20, steps=3, seed=1)
    grown.append(new.states, new.actions, new.next_states, new.episode_ids + 1000)
    grown.append(data.states, data.actions, data.next_states, data.episode_ids + 5)
    for before, after in zip((train, selection, gate), split_episodes(grown, [0.2, 0.2])):
        assert first_rows(before) <= first_rows(after)
    other_seed = split_episodes(data, [0.2, 0.2], seed=1)[2]
    assert ids(other_seed) != ids(gate)
    # The two-way split is the same rule.
    assert first_rows(validation_split(data, 0.2)[1]) == first_rows(split_episodes(data, [0.2])[1])


def test_split_keeps_one_episode_in_each_set():
    three = driving(episodes=3, steps=3)
    for fractions in ([0.01, 0.01], [0.49, 0.49]):
        assert [len(part.episodes()) for part in split_episodes(three, fractions)] == [1, 1, 1]
    with pytest.raises(ValueError, match="at least 3 episodes"):
        split_episodes(driving(episodes=2, steps=3), [0.2, 0.2])
    with pytest.raises(ValueError, match="summing to less than 1"):
        split_episodes(three, [0.5, 0.5])


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
    data = driving(episodes=20)
    wrong = build_model(START)
    round_ = train_candidate(data, START, wrong, physics=CAR, val_fraction=0.3, horizons=(1, 5, 10), angle_dims=(2,),
                             error_scale=SCALE)
    assert round_.decision.accept, round_.decision.reason
    assert round_.decision.candidate_score < 0.5 * round_.decision.current_score
    assert round_.fit.config["params"]["wheelbase"] == pytest.approx(2.5, rel=0.1)
    metrics = round_.metrics()
    assert set(metrics) >= {"val_rmse_h1", "val_rmse_h5", "val_rmse_h10", "val_score"}
    assert metrics["train_transitions"] + metrics["selection_transitions"] + metrics["val_transitions"] == len(data)
    assert set(round_.current_metrics()) == {"val_rmse_h1", "val_rmse_h5", "val_rmse_h10"}

    # The fitted model is now current: a second fit on the same data is not better than itself.
    again = train_candidate(data, START, round_.fit.model, physics=CAR, val_fraction=0.3, horizons=(1, 5, 10), angle_dims=(2,),
                            error_scale=SCALE, min_improvement=0.05)
    assert not again.decision.accept and "not better" in again.decision.reason


# Another car: the same model kind, other parameters (a different vehicle, or the same one loaded).
OTHER_CAR = {**TRUE_CAR, "params": {**TRUE_CAR["params"], "speed_gain": 2.0, "steer_gain": 0.25}}
SMALL_ENSEMBLE = {"type": "ensemble", "state_dim": 5, "action_dim": 2, "ensemble_size": 2, "hidden_sizes": [32, 32],
                  "num_elites": 2, "angle_dims": [2], "ignored_input_dims": [0, 1]}


def test_a_candidate_that_wins_only_on_its_own_selection_episodes_is_rejected():
    """Training and selection episodes of the other car, gate episodes of the car the deployed model knows.

    Each episode's set follows from what it is (``split_episodes``), so the data is assembled from two
    pools by the sets their episodes fall in. The candidate, fitted and early-stopped on the other car,
    beats the deployed model on its selection episodes; on the gate, which neither has seen, it loses.
    """
    fractions, seed = [0.3, 0.3], 0
    other_train, other_selection, _ = split_episodes(driving(episodes=30, steps=30, seed=1, true=OTHER_CAR),
                                                     fractions, seed)
    _, _, true_gate = split_episodes(driving(episodes=30, steps=30, seed=2), fractions, seed)
    data = TransitionDataset(5, 2)
    for part, offset in ((other_train, 0), (other_selection, 100), (true_gate, 200)):
        data.append(part.states, part.actions, part.next_states, part.episode_ids + offset)
    deployed = build_model(TRUE_CAR)
    round_ = train_candidate(data, SMALL_ENSEMBLE, deployed, val_fraction=fractions[0], gate_fraction=fractions[1],
                             split_seed=seed, training={"epochs": 60, "seed": 0}, horizons=(1, 5),
                             angle_dims=(2,), error_scale=SCALE)
    assert round_.val_episodes == [e + 200 for e, _, _ in true_gate.episodes()]  # the gate is the true car's
    on_selection = [error_score(multistep_error(model, other_selection, (1, 5), angle_dims=(2,), scale=SCALE))
                    for model in (round_.fit.model, deployed)]
    assert on_selection[0] < on_selection[1], on_selection  # scored where it was selected, it would be deployed
    assert not round_.decision.accept, round_.decision.reason
    assert round_.decision.candidate_score > round_.decision.current_score


def test_the_gate_also_scores_the_transitions_since_the_last_round_which_no_fit_sees():
    """The race's failure: the gate's hash-chosen episodes were random exploration, and a candidate that won
    there by a few per cent predicted the controller's recent (fast) driving far worse than the deployed model.

    Older rows: the true car (what exploration drove); rows since the last round (``recent_from``): the car in
    another regime (the other car's parameters, as slip changes a fast car). The deployed model knows that
    regime; the candidate, fitted on the older rows only, does not: it wins on the hash gate and loses on the
    recent rows, and with them in the gate it is rejected. The recent rows are neither fitted nor selected on.
    """
    older = driving(episodes=20, steps=30, seed=3)
    recent = driving(episodes=12, steps=30, seed=4, true=OTHER_CAR)
    data = TransitionDataset(5, 2)
    data.append(older.states, older.actions, older.next_states, older.episode_ids)
    data.append(recent.states, recent.actions, recent.next_states, recent.episode_ids + 100)
    fractions, seed = [0.2, 0.2], 0
    # The hash gate of the true car's episodes only (an episode's set follows from its first transition).
    _, _, hash_gate = split_episodes(data, fractions, seed)
    data = data.select_episodes([e for e, _, _ in data.episodes() if e < 100 or e not in hash_gate.episode_ids])
    _, _, hash_gate = split_episodes(data, fractions, seed)
    assert int(hash_gate.episode_ids.max()) < 100
    deployed = build_model(OTHER_CAR)
    options = dict(val_fraction=fractions[0], gate_fraction=fractions[1], split_seed=seed, physics=CAR,
                   horizons=(1, 5, 10), angle_dims=(2,), error_scale=SCALE)
    round_ = train_candidate(data, START, deployed, recent_from=len(older), **options)
    # Fitted on the older rows alone: the true car's parameters, not the other car's.
    assert round_.fit.config["params"]["steer_gain"] == pytest.approx(TRUE_CAR["params"]["steer_gain"], rel=0.1)
    in_hash_gate = torch.isin(data.episode_ids, torch.tensor([e for e, _, _ in hash_gate.episodes()]))
    newer = torch.arange(len(data)) >= len(older)
    assert round_.recent_transitions == int((newer & ~in_hash_gate).sum()) > 0
    assert round_.train_transitions + round_.selection_transitions == int((~newer & ~in_hash_gate).sum())
    assert round_.val_transitions == int((newer | in_hash_gate).sum())
    # On the hash gate alone the candidate wins; on the gate with the recent rows it loses.
    on_hash_gate = [error_score(multistep_error(m, hash_gate, (1, 5, 10), angle_dims=(2,), scale=SCALE))
                    for m in (round_.fit.model, deployed)]
    assert on_hash_gate[0] < on_hash_gate[1], on_hash_gate
    assert not round_.decision.accept, round_.decision.reason
    assert "recorded since the last round" in round_.decision.reason
    assert round_.metrics()["recent_transitions"] == round_.recent_transitions

    # Without a last round (or past the data's end) only the hash gate is held out, as before.
    for recent_from in (None, len(data)):
        plain = train_candidate(data, START, deployed, recent_from=recent_from, **options)
        assert plain.recent_transitions == 0 and plain.val_transitions == len(hash_gate)


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
    # What each bag said of its own episodes (a logged goal) is found from the joined ids.
    assert cache.origins == {0: (bags[0], 0), 1: (bags[0], 1), 2: (bags[1], 0), 3: (bags[1], 1), 4: (bags[1], 2)}
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
    assert cache.origins[5] == (bags[2], 0)
    cache.update(bags[1:])
    assert len(cache.dataset) == 18 and cache.reads == 4
    assert cache.origins == {0: (bags[1], 0), 1: (bags[1], 1), 2: (bags[1], 2), 3: (bags[2], 0)}


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
