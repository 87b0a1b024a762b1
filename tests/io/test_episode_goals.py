"""Each episode's logged goal: the goal_pose message in effect at the episode's first state.

Bags written as the data_logger writes them (``BagSequence``: split by time, the latched
goal repeated at the start of every bag), read with ``load_transitions`` (which reports
each episode's first state) and ``messages_in_effect``.
"""

from __future__ import annotations

import logging

import pytest
from test_bags import DT_NS, T0, action_at, command_cdr, episodes_of, header, state_cdr  # tests/io on sys.path

from mbrl_ros.io.bags import COMMAND_TYPE, STATE_TYPE, default_typestore, load_transitions, list_bags, messages_in_effect
from mbrl_ros.io.recording import BagSequence

GOAL_TYPE = "geometry_msgs/msg/PoseStamped"
MAPPING = {"state": {"topic": "state", "type": STATE_TYPE}, "command": {"topic": "hw/command", "type": COMMAND_TYPE}}
SPLIT_NS = 20 * DT_NS  # a bag holds 4 s


@pytest.fixture(scope="module")
def store():
    return default_typestore()


def goal_cdr(store, stamp_ns: int, x: float) -> bytes:
    t = store.types
    pose = t["geometry_msgs/msg/Pose"](position=t["geometry_msgs/msg/Point"](x=x, y=-x, z=0.0),
                                       orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0))
    return bytes(store.serialize_cdr(t[GOAL_TYPE](header=header(store, stamp_ns), pose=pose), GOAL_TYPE))


# Episodes (first step, steps, goal x or None, goal bytes cut short): step k is stamped T0 + k dt and has x = k.
# A pause of 5+ steps between episodes ends one. With 4 s bags (20 steps) the recording splits at steps
# 30 (in episode 2), 50 and 80.
EPISODES = [
    (0, 5, None, False),  # before any goal: none in effect
    (15, 5, 11.0, False),
    (30, 30, 22.0, False),  # runs into the next bag: that bag opens with goal 22 repeated, stamped at step 30
    (65, 5, 33.0, False),  # its goal logged after its first state, behind the repeat of 22: by stamp it is 33
    (80, 5, 44.0, True),  # its goal cannot be read: no goal, not 33 (stale)
]


def record_episodes(store, folder, repeat_latched: bool = True) -> list:
    """The data_logger's recording of EPISODES: each goal is sent at its episode's start, stamped with the
    first state's stamp and logged 3 ms after it (another topic, another DDS writer)."""
    events = []
    for first, steps, goal, cut in EPISODES:
        start = T0 + first * DT_NS
        if goal is not None:
            data = goal_cdr(store, start, goal)
            events.append((start + 3_000_000, "/car/goal_pose", data[:30] if cut else data))
        for k in range(first, first + steps):
            stamp = T0 + k * DT_NS
            events.append((stamp + 1_000_000, "/car/state", state_cdr(store, stamp, [float(k), 0.5 * k, 0.0, 1.0, 0.0])))
            events.append((stamp + 2_000_000, "/car/hw/command", command_cdr(store, stamp, action_at(k))))
    sequence = BagSequence(folder, prefix="run", split_duration_ns=SPLIT_NS, repeat_latched=repeat_latched,
                           typestore=store)
    sequence.add_topic("/car/state", STATE_TYPE)
    sequence.add_topic("/car/hw/command", COMMAND_TYPE)
    sequence.add_topic("/car/goal_pose", GOAL_TYPE, latched=True)
    for log_ns, topic, data in sorted(events, key=lambda e: e[0]):
        sequence.write(topic, log_ns, data)
    sequence.close()
    return list_bags(folder)


def goals_of(bags, store, report=None) -> tuple[list[list[int]], list]:
    """(episodes as step numbers, each one's goal x or None), the bags read together."""
    loaded: dict = {}
    dataset = load_transitions(bags, MAPPING, 0.2, namespace="/car", report=loaded)
    messages = messages_in_effect(bags, "goal_pose", GOAL_TYPE, loaded["episode_starts"], namespace="/car",
                                  report=report)
    return episodes_of(dataset), [None if m is None else m.pose.position.x for m in messages]


def test_each_episode_gets_the_goal_stamped_at_or_before_its_first_state(store, tmp_path, caplog):
    bags = record_episodes(store, tmp_path / "bags")
    assert [b.name for b in bags] == ["run_0000", "run_0001", "run_0002", "run_0003"]
    loaded: dict = {}
    load_transitions(bags, MAPPING, 0.2, namespace="/car", report=loaded)
    assert loaded["episode_starts"] == [(0, T0), (0, T0 + 15 * DT_NS), (1, T0 + 30 * DT_NS), (2, T0 + 65 * DT_NS),
                                        (3, T0 + 80 * DT_NS)]
    report: dict = {}
    with caplog.at_level(logging.WARNING, logger="mbrl_ros.io.bags"):
        episodes, goals = goals_of(bags, store, report)
    assert [e[0] for e in episodes] == [0, 15, 30, 65, 80] and len(episodes[2]) == 29  # one episode over two bags
    assert goals == [None, 11.0, 22.0, 33.0, None]
    assert (report["found"], report["none_before"], report["malformed"]) == (3, 1, 1)
    # The malformed goal: dropped, counted per reason, and the warning names bag, topic and field.
    [(reason, count)] = report["dropped"]["/car/goal_pose"].items()
    assert count == 1 and "field 'pose.position.y'" in reason  # cut in it, reason
    warning = next(r.getMessage() for r in caplog.records if "goal_pose" in r.getMessage())
    assert "run_0003" in warning and "/car/goal_pose" in warning and "message 1" in warning and reason in warning


def test_bag_by_bag_an_episode_continued_in_the_next_bag_has_the_repeated_goal(store, tmp_path):
    """The trainer reads bag by bag: episode 2's part in the second bag starts mid-episode, where only the
    repeat of its goal (logged at the bag's start, stamped when it was sent) says which goal it has."""
    per_bag = [goals_of([bag], store) for bag in record_episodes(store, tmp_path / "repeated")]
    assert [(e[0], goal) for episodes, goals in per_bag for e, goal in zip(episodes, goals)] == [
        (0, None), (15, 11.0), (30, 22.0), (50, 22.0), (65, 33.0), (80, None)]
    # Without the repeats the continued part has no goal in its bag: it falls back.
    per_bag = [goals_of([bag], store) for bag in record_episodes(store, tmp_path / "once", repeat_latched=False)]
    assert [(e[0], goal) for episodes, goals in per_bag for e, goal in zip(episodes, goals)] == [
        (0, None), (15, 11.0), (30, 22.0), (50, None), (65, 33.0), (80, None)]


def test_a_bag_without_the_goal_topic_gives_no_goals(store, tmp_path):
    bags = record_episodes(store, tmp_path / "bags")
    loaded: dict = {}
    load_transitions(bags, MAPPING, 0.2, namespace="/car", report=loaded)
    report: dict = {}
    assert messages_in_effect(bags, "reference_path", "nav_msgs/msg/Path", loaded["episode_starts"],
                              namespace="/car", report=report) == [None] * 5
    assert report["no_topic"] == 5 and report["dropped"] == {}
    # The topic, of another type: not the goal either.
    assert messages_in_effect(bags, "goal_pose", STATE_TYPE, loaded["episode_starts"], namespace="/car") == [None] * 5
