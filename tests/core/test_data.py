"""TransitionDataset: validation, episode bookkeeping, split without leaks, files, multi-step error."""

import math

import numpy as np
import pytest
import torch

from mbrl_ros.core.data import TransitionDataset, multistep_error
from mbrl_ros.robots.car.bicycle import BicycleParams, KinematicBicycle


def bicycle_episodes(model, episodes=6, steps=25, seed=0) -> TransitionDataset:
    """Random-action episodes of ``model`` (lengths vary so episode bookkeeping is exercised)."""
    g = torch.Generator().manual_seed(seed)
    dataset = TransitionDataset(5, 2)
    for episode in range(episodes):
        length = steps + episode
        actions = torch.rand(length, 2, generator=g) * 2 - 1
        state = torch.tensor([[0.0, 0.0, 3.0, 1.0, 0.0]])  # yaw near pi: crosses the wrap
        states = [state]
        with torch.no_grad():
            for t in range(length):
                states.append(model(states[-1], actions[t : t + 1]))
        dataset.append_trajectory(torch.cat(states), actions, episode_id=10 + episode)
    return dataset


def test_append_accepts_numpy_and_torch_and_tracks_episodes():
    dataset = TransitionDataset(2, 1)
    dataset.append(np.zeros((3, 2)), np.zeros((3, 1)), np.ones((3, 2)), episode_ids=7)
    dataset.append(torch.zeros(2, 2), torch.zeros(2, 1), torch.ones(2, 2))  # new episode
    dataset.append(torch.zeros(1, 2), torch.zeros(1, 1), torch.ones(1, 2), episode_ids=8)  # streams on
    assert len(dataset) == 6
    assert dataset.episodes() == [(7, 0, 3), (8, 3, 6)]
    assert dataset.states.dtype == torch.float32


@pytest.mark.parametrize(
    "field, bad, message",
    [
        ("states", np.zeros((4, 3)), r"states: expected shape \[N, 2\], got \[4, 3\]"),
        ("actions", np.zeros((3, 1)), r"actions: expected shape \[4, 1\], got \[3, 1\]"),
        ("next_states", np.zeros(4), r"next_states: expected shape \[4, 2\], got \[4\]"),
    ],
)
def test_append_rejects_wrong_shapes_naming_the_field(field, bad, message):
    rows = {"states": np.zeros((4, 2)), "actions": np.zeros((4, 1)), "next_states": np.zeros((4, 2))}
    rows[field] = bad
    with pytest.raises(ValueError, match=message):
        TransitionDataset(2, 1).append(**rows)


@pytest.mark.parametrize("field", ["states", "actions", "next_states"])
def test_append_rejects_non_finite_naming_field_and_row(field):
    rows = {"states": np.zeros((5, 2)), "actions": np.zeros((5, 1)), "next_states": np.zeros((5, 2))}
    rows[field][3, 0] = np.nan if field != "actions" else np.inf
    dataset = TransitionDataset(2, 1)
    with pytest.raises(ValueError, match=rf"{field}: non-finite value .* at row 3, column 0"):
        dataset.append(**rows)
    assert len(dataset) == 0  # nothing half-appended


def test_episode_rows_must_stay_contiguous():
    dataset = TransitionDataset(1, 1)
    dataset.append(np.zeros((2, 1)), np.zeros((2, 1)), np.zeros((2, 1)), episode_ids=0)
    dataset.append(np.zeros((2, 1)), np.zeros((2, 1)), np.zeros((2, 1)), episode_ids=1)
    with pytest.raises(ValueError, match="row 0 continues episode 0, which is already closed"):
        dataset.append(np.zeros((1, 1)), np.zeros((1, 1)), np.zeros((1, 1)), episode_ids=0)
    with pytest.raises(ValueError, match="row 2 continues episode 1"):
        dataset.append(np.zeros((3, 1)), np.zeros((3, 1)), np.zeros((3, 1)), episode_ids=[1, 2, 1])
    with pytest.raises(ValueError, match=r"episode_ids: expected an int or shape \[3\]"):
        dataset.append(np.zeros((3, 1)), np.zeros((3, 1)), np.zeros((3, 1)), episode_ids=[5, 5])


def test_split_by_episode_never_leaks_and_is_seeded():
    dataset = bicycle_episodes(KinematicBicycle(), episodes=10, steps=5)
    for seed in range(5):
        train, val = dataset.split_by_episode(val_fraction=0.3, seed=seed)
        train_ids, val_ids = set(train.episode_ids.tolist()), set(val.episode_ids.tolist())
        assert train_ids.isdisjoint(val_ids)
        assert train_ids | val_ids == set(range(10, 20))
        assert len(val_ids) == 3 and len(train) + len(val) == len(dataset)
        # Episodes survive whole, in order: each one still replays step by step.
        for part in (train, val):
            for _, first, end in part.episodes():
                assert torch.equal(part.states[first + 1 : end], part.next_states[first : end - 1])
    again = dataset.split_by_episode(0.3, seed=4)[1]
    assert torch.equal(again.episode_ids, val.episode_ids)
    with pytest.raises(ValueError, match="val_fraction"):
        dataset.split_by_episode(1.0)
    with pytest.raises(ValueError, match="at least 2 episodes, the dataset has 1"):
        dataset.select_episodes([10]).split_by_episode(0.5)


def test_minibatches_visit_every_row_once():
    dataset = bicycle_episodes(KinematicBicycle(), episodes=3, steps=10)
    seen = torch.cat([s for s, _, _ in dataset.minibatches(7, generator=torch.Generator().manual_seed(0))])
    assert seen.shape == dataset.states.shape
    assert torch.equal(seen[seen[:, 0].argsort()][:, 0], dataset.states[dataset.states[:, 0].argsort()][:, 0])


def test_save_and_load_round_trip(tmp_path):
    dataset = bicycle_episodes(KinematicBicycle(), episodes=3, steps=4)
    path = tmp_path / "log.npz"
    dataset.save(path)
    loaded = TransitionDataset.load(path)
    for name in ("states", "actions", "next_states", "episode_ids"):
        assert torch.equal(getattr(loaded, name), getattr(dataset, name)), name
    np.savez(tmp_path / "other.npz", states=np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"other.npz: not a transition dataset, missing array\(s\) \['actions'"):
        TransitionDataset.load(tmp_path / "other.npz")


def test_multistep_error_of_the_true_model_is_zero_and_counts_windows():
    true = KinematicBicycle(BicycleParams(lag=0.3))
    dataset = bicycle_episodes(true, episodes=4, steps=20)
    error = multistep_error(true, dataset, horizons=(1, 5, 10, 30), angle_dims=(2,))
    for h in (1, 5, 10):
        assert error.rmse[h] < 1e-5, error
        # An episode of L steps has L - h + 1 windows of h steps.
        assert error.num_windows[h] == sum(20 + e - h + 1 for e in range(4))
    assert error.num_windows[30] == 0 and math.isnan(error.rmse[30])


def test_multistep_error_grows_with_horizon_for_a_wrong_model_and_wraps_yaw():
    true = KinematicBicycle()
    dataset = bicycle_episodes(true, episodes=4, steps=20)
    wrong = KinematicBicycle(BicycleParams(wheelbase=4.0, speed_gain=4.0))
    error = multistep_error(wrong, dataset, horizons=(1, 5, 10))
    assert 0 < error.rmse[1] < error.rmse[5] < error.rmse[10]

    class OffByTwoPi(torch.nn.Module):  # same motion, yaw reported 2*pi higher
        def forward(self, states, actions):
            return true(states, actions) + torch.tensor([0.0, 0.0, 2 * math.pi, 0.0, 0.0])

    assert multistep_error(OffByTwoPi(), dataset, (1,), angle_dims=(2,)).rmse[1] < 1e-4
    assert multistep_error(OffByTwoPi(), dataset, (1,)).rmse[1] > 2.0
