"""The cyclic garbage collector in a node's process (mbrl_ros/ros/gc_pauses.py): settling collects what is
garbage and freezes what is alive, and every pass is timed per generation. The real processes: the
controller settles at start and after a new model's first plan (tests/ros/test_controller_safety.py)."""

from __future__ import annotations

import gc
import weakref

import pytest

from mbrl_ros.ros.gc_pauses import GcPauses, settle_heap


class Node:
    def __init__(self) -> None:
        self.other = self


@pytest.fixture
def unfrozen():
    gc.unfreeze()
    yield
    gc.unfreeze()  # what a test froze goes back to the collector


def test_settling_frees_garbage_cycles_and_freezes_what_is_alive(unfrozen):
    garbage, alive = Node(), Node()
    garbage_ref = weakref.ref(garbage)
    del garbage  # a reference cycle: only the collector frees it
    before = gc.get_freeze_count()
    settle_heap()
    assert garbage_ref() is None  # collected before the freeze, not frozen with the living
    assert gc.get_freeze_count() > before
    assert not any(obj is alive for obj in gc.get_objects())  # out of the collector's walk
    del alive


def test_what_was_frozen_and_dropped_since_is_freed_at_the_next_settling(unfrozen):
    old_model = Node()  # alive at one settling (a model in use), then replaced: garbage in a cycle
    old_ref = weakref.ref(old_model)
    settle_heap()
    del old_model
    gc.collect()
    assert old_ref() is not None  # frozen: the collector's passes do not walk it
    settle_heap()
    assert old_ref() is None


def test_every_pass_is_counted_per_generation_with_its_longest_pause(unfrozen):
    pauses = GcPauses().start()
    try:
        gc.collect(0)
        gc.collect(2)
        gc.collect(2)
    finally:
        pauses.stop()
    assert pauses.passes[2] == 2 and pauses.passes[0] >= 1
    assert pauses.longest_ms[2] > 0.0
    values = pauses.as_key_values()
    assert values["gc_gen2_passes"] == str(pauses.passes[2])
    gc.collect(2)  # stopped: no longer counted
    assert values["gc_gen2_passes"] == str(pauses.passes[2])
    assert not pauses.started


def test_settling_starts_the_count_again(unfrozen):
    from mbrl_ros.ros.gc_pauses import PAUSES

    started = PAUSES.started
    PAUSES.start()
    try:
        gc.collect(2)
        assert PAUSES.passes[2] >= 1
        settle_heap()  # its own pass is not the loop's
        assert PAUSES.passes == [0, 0, 0] and PAUSES.longest_ms == [0.0, 0.0, 0.0]
    finally:
        if not started:
            PAUSES.stop()
