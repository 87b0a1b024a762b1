"""A few malformed messages in a logged bag cost only themselves (issue 9: one bad state lost a whole bag).

The bag is written by BagRecorder, the data_logger's writer, with messages as
the stack publishes them, a few of them malformed: a state with fewer values
than names, a state without one of the names, a message that is not CDR at
all, a command with a value missing. ``load_transitions`` is the one path of
the online trainer and ``mbrl-ros fit``; both are exercised here.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from mbrl_ros.core.retraining import PerBagTransitions
from mbrl_ros.io.bags import BagError, default_typestore, load_transitions, stack_mapping
from mbrl_ros.io.recording import BagRecorder, bag_qos
from mbrl_ros.offline.fit import read_transitions, trainer_parameters

from test_bags import ACTION_NAMES, STATE_NAMES, action_at, command_cdr, state_at, state_cdr  # tests/io on sys.path

T0 = 1_000 * 10**9
DT_NS = 200_000_000
STEPS = 40
BAD_STATES = {5: "fewer values", 11: "a name missing", 17: "not CDR"}
BAD_COMMANDS = {23: "a value missing"}


def logged_bag(path, bad_states=BAD_STATES, bad_commands=BAD_COMMANDS):
    """STEPS steps of the car as the data_logger records them, with the given steps malformed."""
    store = default_typestore()
    with BagRecorder(path, typestore=store) as bag:
        bag.add_topic("/car/state", "mbrl_interfaces/msg/StateVector", bag_qos(reliable=False, transient_local=False))
        bag.add_topic("/car/hw/command", "mbrl_interfaces/msg/CommandVector", bag_qos(reliable=True, transient_local=False))
        for k in range(STEPS):
            stamp = T0 + k * DT_NS
            how = bad_states.get(k)
            if how == "fewer values":
                state = state_cdr(store, stamp, state_at(k)[:4])
            elif how == "a name missing":
                state = state_cdr(store, stamp, state_at(k)[:3] + state_at(k)[4:], names=["x", "y", "yaw", "steer"])
            elif how == "not CDR":
                state = b"\x00\x07\x00"
            else:
                state = state_cdr(store, stamp, state_at(k))
            bag.write("/car/state", stamp + 1_000_000, state)
            values = action_at(k)[:1] if k in bad_commands else action_at(k)
            bag.write("/car/hw/command", stamp + 5_000_000, command_cdr(store, stamp, values))
    return path


def expected_steps(bad=(*BAD_STATES, *BAD_COMMANDS)) -> list[int]:
    """The steps k whose transition (state k, command k, state k+1) survives the bad messages."""
    states = set(BAD_STATES) & set(bad)
    commands = set(BAD_COMMANDS) & set(bad)
    return [k for k in range(STEPS - 1) if k not in states and k + 1 not in states and k not in commands]


def test_bad_messages_are_dropped_alone_counted_and_logged(tmp_path, caplog):
    bag = logged_bag(tmp_path / "bag_0000")
    report: dict = {}
    with caplog.at_level(logging.WARNING, logger="mbrl_ros.io.bags"):
        data = load_transitions(bag, stack_mapping(), 0.2, state_names=STATE_NAMES, action_names=ACTION_NAMES,
                                report=report)
    kept = expected_steps()
    assert len(kept) == STEPS - 1 - 7  # 3 bad states cost 2 transitions each, the bad command 1
    np.testing.assert_allclose(data.states.numpy(), [state_at(k) for k in kept])
    np.testing.assert_allclose(data.actions.numpy(), [action_at(k) for k in kept])
    np.testing.assert_allclose(data.next_states.numpy(), [state_at(k + 1) for k in kept])

    assert report["dropped_messages"] == 4 and report["states"] == STEPS - 3 and report["commands"] == STEPS - 1
    state_reasons = report["dropped"]["/car/state"]
    assert sorted(state_reasons.values()) == [1, 1, 1]
    assert sorted(state_reasons) == [
        "field 'values[v]': no 'v' in names ['x', 'y', 'yaw', 'steer']",
        "field 'values[x]': 'values' has 4 entries for 5 names",
        "not a CDR message (no CDR encapsulation header in its first 4 bytes)",
    ]
    assert report["dropped"]["/car/hw/command"] == {"field 'values[u_accel]': 'values' has 1 entries for 2 names": 1}
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 4 and all(str(bag) in w and "dropped 1 of 40 messages" in w for w in warnings)
    assert any("topic '/car/state'" in w and "message 17, logged at" in w for w in warnings)


def test_the_names_come_from_most_messages_not_the_first(tmp_path):
    """Without state_names the names are read from the messages: a malformed first one does not decide them."""
    bag = logged_bag(tmp_path / "bag", bad_states={0: "a name missing", 7: "fewer values"}, bad_commands={})
    report: dict = {}
    data = load_transitions(bag, stack_mapping(), 0.2, report=report)
    assert report["state_names"] == STATE_NAMES and data.states.shape[1] == 5
    assert report["dropped_messages"] == 2 and len(data) == STEPS - 1 - 3


def test_the_trainer_keeps_the_bag_and_fit_reports_the_drops(tmp_path):
    """The trainer's per-bag reader and fit's reader, on the same bag: neither skips it."""
    bag = logged_bag(tmp_path / "bag_0000")
    params, _ = trainer_parameters("car", None, None)
    cache = PerBagTransitions(lambda b: read_transitions([b], params, {}))
    assert cache.update([bag]) == [bag]
    assert cache.errors == {} and len(cache.dataset) == len(expected_steps())
    report: dict = {}
    data = read_transitions([bag], params, report)
    assert len(data) == len(expected_steps()) and report["dropped_messages"] == 4
    assert set(report["dropped"]) == {"/car/state", "/car/hw/command"}


def test_a_mapping_no_message_fits_is_still_an_error(tmp_path):
    """Dropping is for a few bad messages: a field that no message has is the mapping's fault, said once."""
    bag = logged_bag(tmp_path / "bag", bad_states={}, bad_commands={})
    with pytest.raises(BagError, match=rf"^{bag}: topic '/car/state' \(mbrl_interfaces/msg/StateVector\): message 0 "
                                       r"\(logged at \d+ ns\): field 'values\[speed\]': no 'speed' in names"):
        load_transitions(bag, stack_mapping(), 0.2, state_names=["x", "speed"])
