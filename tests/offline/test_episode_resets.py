"""Transitions never span a simulator reset: the data path splits episodes at the logged reports and at jumps.

The bags are the simulated parking car's random driving written as the stack logs it, with no time
gap between episodes (the car's driver resets at once): each reset puts the car back at its start
pose with a new heading, a change that a position-jump rule alone does not see.
"""

from __future__ import annotations

import numpy as np
import pytest

from car_bags import ACTION_NAMES, STATE_NAMES, explore, write_vector_bag
from mbrl_ros.io.bags import transitions_from_bags
from mbrl_ros_hardware.car.parking import ParkingSim

DT = 0.2


def as_published(episodes):
    """As the car's driver publishes episodes: every state answered by a command, the final state
    never published (the next episode starts at once, dt later)."""
    return [(states[:-1], actions) for states, actions in episodes]


@pytest.fixture(scope="module")
def driving():
    return as_published(explore(300, seed=3))


@pytest.fixture(scope="module")
def standing():
    """The car standing at its start pose while it waits for the first model (zero commands):
    each reset leaves it where it was and turns its heading."""
    sim, episodes = ParkingSim(), []
    for seed in range(6):
        states, actions = [sim.reset(seed=seed)], np.zeros((5, 2))
        states += [sim.step(action).state for action in actions]
        episodes.append((np.array(states), actions))
    return as_published(episodes)


def true_transitions(episodes) -> set[bytes]:
    """Every (state, action, next state) the simulator produced, as float32 bytes."""
    rows = set()
    for states, actions in episodes:
        for k in range(len(states) - 1):
            rows.add(np.concatenate([states[k], actions[k], states[k + 1]]).astype(np.float32).tobytes())
    return rows


def loaded_transitions(data) -> list[bytes]:
    rows = np.concatenate([data.states.numpy(), data.actions.numpy(), data.next_states.numpy()], axis=1)
    return [row.astype(np.float32).tobytes() for row in rows]


@pytest.mark.parametrize("which", ["driving", "standing"])
def test_reported_resets_split_episodes(which, request, tmp_path):
    episodes = request.getfixturevalue(which)
    assert len(episodes) >= 3
    bag = write_vector_bag(tmp_path / "bag", episodes, STATE_NAMES, ACTION_NAMES, gap_ns=0, reports=True)
    report = {}
    data = transitions_from_bags(bag, "state", "hw/command", DT, report=report)
    truth = true_transitions(episodes)
    assert all(row in truth for row in loaded_transitions(data)), "a transition spans a reset"
    assert len(data) == sum(len(states) - 1 for states, _ in episodes)
    assert len(data.episodes()) == len(episodes)
    # One transition from each episode's last state into the next one's first was dropped and counted.
    assert report["ended_reported_reset"] + report["ended_jump"] == len(episodes) - 1
    if which == "standing":  # only the reports see these resets
        assert report["ended_reported_reset"] == len(episodes) - 1


def test_without_reports_resets_pollute_a_position_rule(standing, tmp_path):
    """What the reports fix: with only the position rule, every reset at the start pose is a transition."""
    bag = write_vector_bag(tmp_path / "bag", standing, STATE_NAMES, ACTION_NAMES, gap_ns=0)
    data = transitions_from_bags(bag, "state", "hw/command", DT)
    truth = true_transitions(standing)
    assert sum(row not in truth for row in loaded_transitions(data)) == len(standing) - 1


def test_heading_bound_splits_unreported_resets(tmp_path):
    """No reports (a real robot's bag): a heading change no car can make in one step ends the episode."""
    heading = [0.0, 0.1, 0.2, 3.0, 3.1, 3.2, -3.1, -3.0]  # a reset at 3, then a legit turn through +-pi
    states = np.array([[0.1 * k, 0.0, h, 1.0, 0.0] for k, h in enumerate(heading)])
    actions = np.zeros((len(states) - 1, 2))
    bag = write_vector_bag(tmp_path / "bag", [(states, actions)], STATE_NAMES, ACTION_NAMES)
    report = {}
    data = transitions_from_bags(bag, "state", "hw/command", DT, report=report)
    assert len(data.episodes()) == 1  # the position rule alone sees nothing
    split = transitions_from_bags(bag, "state", "hw/command", DT, report=report,
                                  max_change={"yaw": 1.0}, angle_dims=[2])
    assert [e - f for _, f, e in split.episodes()] == [2, 4]
    assert report["ended_jump"] == 1
