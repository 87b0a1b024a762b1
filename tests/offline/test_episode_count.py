"""How many episodes the trainer has: the recording's, not the pieces its bag-by-bag reading stores.

The trainer reads each closed bag once (``PerBagTransitions``), so an episode that runs across a bag split is
stored as two, and its log counted those: 14 "episodes" for the car demo's 10 (about twice as many where
episodes are long against the bags' split_duration). The bags here are the simulated parking car's random
driving recorded as the data_logger records it (``BagSequence``: split by time, the simulator's reports on
sim/episodes), read bag by bag as the trainer reads them.
"""

from __future__ import annotations

from pathlib import Path

from car_bags import ACTION_NAMES, DT_NS, STATE_NAMES, _stamped, episode_report, explore
from mbrl_ros.core.retraining import PerBagTransitions
from mbrl_ros.io.bags import (COMMAND_TYPE, EPISODES_TYPE, STATE_TYPE, default_typestore, list_bags,
                              load_transitions, recorded_episodes)
from mbrl_ros.io.recording import BagSequence

DT = 0.2
MAPPING = {"state": {"topic": "state", "type": STATE_TYPE}, "command": {"topic": "hw/command", "type": COMMAND_TYPE}}


def record(folder: Path, episodes, split_ns: int, lose_command_at: set[int] = frozenset()) -> list[Path]:
    """``episodes`` (states, actions) as the lockstep car publishes them (every state answered, the next episode
    at once, a report at each end), recorded in bags of ``split_ns``; the commands of the steps (counted over
    the recording) in ``lose_command_at`` never reached the logger."""
    store = default_typestore()
    bags = BagSequence(folder, prefix="bag", split_duration_ns=split_ns, typestore=store)
    bags.add_topic("/car/state", STATE_TYPE)
    bags.add_topic("/car/hw/command", COMMAND_TYPE)
    bags.add_topic("/car/sim/episodes", EPISODES_TYPE, latched=True)
    stamp, step = 10**9, 0
    for number, (states, actions) in enumerate(episodes):
        start = stamp
        for state, action in zip(states[:-1], actions):  # the final state is never published
            bags.write("/car/state", stamp + 1_000, _stamped(store, STATE_TYPE, stamp, STATE_NAMES, state))
            if step not in lose_command_at:
                bags.write("/car/hw/command", stamp + 2_000, _stamped(store, COMMAND_TYPE, stamp, ACTION_NAMES, action))
            stamp, step = stamp + DT_NS, step + 1
        bags.write("/car/sim/episodes", stamp + 3_000, episode_report(store, number, start, stamp))
    bags.close()
    return list_bags(folder)


def read_as_the_trainer(bags: list[Path]) -> tuple[int, int]:
    """(episodes stored, episodes counted) as the trainer reads and counts them."""
    spans = {}

    def read(bag):
        report = {}
        dataset = load_transitions([bag], MAPPING, DT, namespace="/car", report=report)
        spans[bag] = (report["episode_spans"], report["reset_stamps"])
        return dataset

    cache = PerBagTransitions(read)
    cache.update(bags)
    stored = cache.dataset.episodes()
    return len(stored), recorded_episodes([cache.origins[e] for e, _, _ in stored], spans, DT)


def test_episodes_cut_by_bag_splits_count_once(tmp_path):
    episodes = [e for e in explore(400, seed=5) if len(e[1]) >= 3]
    steps = sum(len(actions) for _, actions in episodes)
    bags = record(tmp_path / "bags", episodes, split_ns=20 * DT_NS)  # a bag every 20 steps: most episodes cut
    assert len(bags) == -(-steps // 20)
    stored, counted = read_as_the_trainer(bags)
    assert stored > len(episodes), "no episode runs across a split: the test shows nothing"
    assert counted == len(episodes), (stored, counted, len(episodes))
    # Read together (mbrl-ros fit) the same recording has the episodes the simulator drove.
    report = {}
    together = load_transitions(bags, MAPPING, DT, namespace="/car", report=report)
    assert len(together.episodes()) == len(episodes)
    assert recorded_episodes([(None, e) for e in range(len(together.episodes()))],
                             {None: (report["episode_spans"], report["reset_stamps"])}, DT) == len(episodes)


def test_a_lost_command_cuts_an_episode_but_a_reset_ends_one(tmp_path):
    """One step's command lost: its transition is missing and the episode is stored as two, still one episode.
    Each episode starts one step after the last stored transition of the one before (the reset's transition is
    dropped), like a cut: only the simulator's report tells the two apart."""
    episodes = [e for e in explore(200, seed=7) if len(e[1]) >= 10][:3]
    bags = record(tmp_path / "bags", episodes, split_ns=10**6 * DT_NS, lose_command_at={5})  # one bag
    stored, counted = read_as_the_trainer(bags)
    assert len(bags) == 1 and stored == len(episodes) + 1 and counted == len(episodes)
