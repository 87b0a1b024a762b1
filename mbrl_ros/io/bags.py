"""Reading the stack's rosbag2 recordings with ``rosbags`` (no rclpy).

One data path: the data_logger node records through
``mbrl_ros.io.recording``; the online trainer and ``mbrl-ros fit`` turn the
same bags into transitions with ``transitions_from_bags``.

- ``list_bags``: the complete bag directories under a folder, in recording order.
- ``transitions_from_bags``: StateVector and CommandVector messages ->
  ``TransitionDataset``. Per the stack's contract a command's header stamp is
  the stamp of the state it answers, so the pair (state, command) is found by
  identical stamps, and the transition's next state is the state ``dt`` later.
  An episode ends wherever that next state is missing, late, invalid, or jumps
  (a simulator reset teleports the car).

Errors are ``BagError`` and name the bag and the topic at fault.
"""

from __future__ import annotations

import functools
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from rosbags.rosbag2 import Reader, StoragePlugin
from rosbags.typesys.store import Typestore

from mbrl_ros.io.ros_types import mbrl_typestore

if TYPE_CHECKING:  # torch is imported only to build a dataset, not to record one
    from mbrl_ros.core.data import TransitionDataset

STATE_TYPE = "mbrl_interfaces/msg/StateVector"
COMMAND_TYPE = "mbrl_interfaces/msg/CommandVector"
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
METADATA = "metadata.yaml"
# rosbag2 metadata version 9 (type description hashes); what Jazzy and Kilted write.
BAG_VERSION = 9


class BagError(ValueError):
    """A bag cannot be written or read as asked; the message names the bag and the topic."""


@functools.lru_cache(maxsize=1)
def default_typestore() -> Typestore:
    """Standard messages plus mbrl_interfaces, built once (building parses the .msg files)."""
    return mbrl_typestore()


# ---- finding -------------------------------------------------------------------------------
def list_bags(root: str | os.PathLike) -> list[Path]:
    """The complete bag directories (with ``metadata.yaml``) at or under ``root``.

    Sorted by path with numbers compared as numbers, so ``run_0010`` follows
    ``run_0009`` and ``run_10000`` follows ``run_9999``. A bag still being
    written has no metadata.yaml yet and is left out. A missing ``root`` gives
    an empty list (the logger may not have closed its first bag yet).
    """
    root = Path(root)
    if (root / METADATA).is_file():
        return [root]
    if not root.is_dir():
        return []
    return sorted((meta.parent for meta in root.rglob(METADATA) if meta.is_file()), key=_natural_key)


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


# ---- reading ------------------------------------------------------------------------------
def transitions_from_bags(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    state_topic: str,
    command_topic: str,
    dt: float,
    max_stamp_error: float | None = None,
    max_jump: float = 2.0,
    *,
    state_names: Sequence[str] | None = None,
    action_names: Sequence[str] | None = None,
    jump_names: Sequence[str] = ("x", "y"),
    typestore: Typestore | None = None,
    report: dict | None = None,
) -> "TransitionDataset":
    """Transitions (state, command, next state) from the stack's bags, split into episodes.

    ``paths``: bag directories in recording order (``list_bags`` gives them);
    consecutive bags of one recording continue each other's episodes.
    ``state_topic``/``command_topic``: full names (``/car/state``) or names
    relative to the robot namespace (``state``), which match the one topic of
    the bag ending in them. ``dt``: the control period (s); the next state is
    the one stamped ``dt`` after the state the command answers, within
    ``max_stamp_error`` seconds (default ``dt / 4``). ``max_jump``: a larger
    change (m) of the ``jump_names`` entries (position) within one step is a
    reset, not motion. ``state_names``/``action_names``: the order of the
    columns (default: the names in the first message); messages are reordered
    by name. ``report``, if given, is filled with counts of what was found and
    why episodes ended.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise BagError("transitions_from_bags: no bags given")
    if not dt > 0:
        raise BagError(f"transitions_from_bags: dt must be > 0 s, got {dt}")
    max_stamp_error = dt / 4.0 if max_stamp_error is None else float(max_stamp_error)
    if not 0 <= max_stamp_error < dt / 2:
        # Beyond dt / 2 the window around t + dt would also hold t or t + 2 dt.
        raise BagError(f"transitions_from_bags: max_stamp_error must be in [0, dt/2), got {max_stamp_error}")
    store = typestore or default_typestore()

    # Read every bag. Values are kept with their names until the column order is known.
    state_rows: list[tuple[int, tuple, bool]] = []  # (stamp, (names, values), valid)
    command_rows: list[tuple[int, tuple]] = []  # (stamp, (names, values))
    events: list[tuple[int, int, int, int]] = []  # (bag, log time, kind 0 state / 1 command, row)
    for bag_index, path in enumerate(paths):
        states, commands = _read_vectors(path, [(state_topic, STATE_TYPE), (command_topic, COMMAND_TYPE)], store)
        if state_names is None and states.names_seen:
            state_names = states.names_seen[0]
        if action_names is None and commands.names_seen:
            action_names = commands.names_seen[0]
        for stamp, values, valid, log_ns in zip(states.stamps_ns, states.values, states.valid, states.log_ns):
            events.append((bag_index, log_ns, 0, len(state_rows)))
            state_rows.append((stamp, values, valid))
        for stamp, values, log_ns in zip(commands.stamps_ns, commands.values, commands.log_ns):
            events.append((bag_index, log_ns, 1, len(command_rows)))
            command_rows.append((stamp, values))
        states.check_names(state_names, path, state_topic)
        commands.check_names(action_names, path, command_topic)
    counts = Counter(states=len(state_rows), commands=len(command_rows))
    if state_names is None or action_names is None:
        raise _no_transitions(paths, state_topic, command_topic, counts)

    # Order states and commands as they were logged; a state stamped before the
    # previous one starts a new time line (a restarted simulator or clock), so
    # that equal stamps of two runs are never paired.
    events.sort()
    stamps: list[int] = []
    timeline_of: list[int] = []
    state_values: list[np.ndarray] = []
    state_valid: list[bool] = []
    command_at: dict[tuple[int, int], np.ndarray] = {}
    timeline = 0
    for _bag, _log, kind, row in events:
        if kind == 0:
            stamp, values, valid = state_rows[row]
            if stamps:
                if stamp == stamps[-1]:
                    counts["repeated_states"] += 1  # the same state re-sent; keep the first
                    continue
                if stamp < stamps[-1]:
                    timeline += 1
            stamps.append(stamp)
            timeline_of.append(timeline)
            state_values.append(_reorder(values[0], values[1], state_names))
            state_valid.append(valid)
        else:
            stamp, values = command_rows[row]
            if not np.all(np.isfinite(values[1])):
                counts["invalid_commands"] += 1
                continue
            # The first command answering a state is the one the driver applied
            # (a lockstep driver ignores later answers to a state it has left).
            command_at.setdefault((timeline, stamp), _reorder(values[0], values[1], action_names))

    stamps_arr = np.asarray(stamps, dtype=np.int64)
    timelines = np.asarray(timeline_of, dtype=np.int64)
    # Time lines are contiguous runs of rows: where each row's run ends.
    run_ends = np.flatnonzero(np.diff(timelines)) + 1
    timeline_end = np.append(run_ends, len(stamps))[timelines] if len(stamps) else timelines
    dt_ns = int(round(dt * 1e9))
    err_ns = int(round(max_stamp_error * 1e9))
    jump_idx = [state_names.index(n) for n in jump_names if n in state_names]

    rows_s, rows_a, rows_ns, episode_ids = [], [], [], []
    episode, previous_next = -1, None
    for i, stamp in enumerate(stamps):
        if not state_valid[i]:
            counts["invalid_states"] += 1
            continue
        action = command_at.get((int(timelines[i]), stamp))
        if action is None:
            counts["states_without_command"] += 1
            continue
        j = _state_near(stamps_arr, i, int(timeline_end[i]), stamp + dt_ns, err_ns)
        if j is None:
            counts["ended_next_state_missing"] += 1
            continue
        if not state_valid[j]:
            counts["ended_next_state_invalid"] += 1
            continue
        if jump_idx and float(np.linalg.norm(state_values[j][jump_idx] - state_values[i][jump_idx])) > max_jump:
            counts["ended_jump"] += 1
            continue
        if previous_next != i:
            episode += 1
        previous_next = j
        rows_s.append(state_values[i])
        rows_a.append(action)
        rows_ns.append(state_values[j])
        episode_ids.append(episode)
    counts["transitions"] = len(rows_s)
    counts["episodes"] = episode + 1
    if report is not None:
        report.update(counts)
        report["state_names"], report["action_names"] = list(state_names), list(action_names)
    if not rows_s:
        raise _no_transitions(paths, state_topic, command_topic, counts)
    from mbrl_ros.core.data import TransitionDataset

    dataset = TransitionDataset(len(state_names), len(action_names))
    dataset.append(np.stack(rows_s), np.stack(rows_a), np.stack(rows_ns), np.asarray(episode_ids))
    return dataset


def _state_near(stamps: np.ndarray, i: int, end: int, target: int, err: int) -> int | None:
    """Index in ``(i, end)`` of the state stamped closest to ``target``, if within ``err``.

    ``stamps[i:end]`` is one time line, where stamps rise.
    """
    j = int(np.searchsorted(stamps[i + 1:end], target)) + i + 1
    candidates = [k for k in (j - 1, j) if i < k < end and abs(int(stamps[k]) - target) <= err]
    return min(candidates, key=lambda k: abs(int(stamps[k]) - target), default=None)


def _reorder(names: tuple[str, ...], values: np.ndarray, wanted: Sequence[str]) -> np.ndarray:
    if tuple(names) == tuple(wanted):
        return values
    index = {n: k for k, n in enumerate(names)}
    return values[[index[n] for n in wanted]]


def _no_transitions(paths: list[Path], state_topic: str, command_topic: str, counts: Counter) -> BagError:
    found = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in counts.items() if v)
    bags = ", ".join(str(p) for p in paths)
    return BagError(
        f"{bags}: no transitions from '{state_topic}' and '{command_topic}' ({found or 'no messages'}); "
        "a transition needs a valid state, a command with the same header stamp, and a valid state dt later"
    )


@dataclass
class _TopicVectors:
    """One topic's StateVector or CommandVector messages, in log order."""

    stamps_ns: list[int]
    values: list[tuple[tuple[str, ...], np.ndarray]]
    valid: list[bool]
    log_ns: list[int]
    names_seen: list[tuple[str, ...]]

    def check_names(self, wanted: Sequence[str] | None, path: Path, topic: str) -> None:
        """Every message must name every wanted entry (their order may differ)."""
        if wanted is None:
            return
        for names in self.names_seen:
            if len(set(names)) != len(names):
                raise BagError(f"{path}: topic '{topic}': repeated names in {list(names)}")
            missing = [n for n in wanted if n not in names]
            if missing:
                raise BagError(f"{path}: topic '{topic}': messages name {list(names)}, missing {missing} of {list(wanted)}")


def _read_vectors(path: Path, wanted: list[tuple[str, str]], store: Typestore) -> list[_TopicVectors]:
    """The messages of each ``(topic, type)`` in ``wanted`` from the bag at ``path``."""
    try:
        reader = Reader(path)
        reader.open()
    except Exception as error:  # rosbags raises its own errors, and OSError, KeyError on bad metadata
        raise BagError(f"{path}: cannot read bag: {error}") from error
    try:
        topics, connections = [], []
        for query, msgtype in wanted:
            found = _find_connections(reader.connections, query, path)
            if found[0].msgtype != msgtype:
                raise BagError(f"{path}: topic '{found[0].topic}' has type {found[0].msgtype}, expected {msgtype}")
            if found[0].topic in topics:
                raise BagError(f"{path}: '{query}' names the same topic '{found[0].topic}' as another input")
            topics.append(found[0].topic)
            connections += found
        out = {topic: _TopicVectors([], [], [], [], []) for topic in topics}
        names_cache: dict[tuple[str, ...], tuple[str, ...]] = {}
        try:
            for conn, log_ns, raw in reader.messages(connections=connections):
                try:
                    msg = store.deserialize_cdr(raw, conn.msgtype)
                except Exception as error:
                    raise BagError(
                        f"{path}: topic '{conn.topic}': cannot decode the {conn.msgtype} logged at {log_ns} ns: {error}"
                    ) from error
                vectors = out[conn.topic]
                names = names_cache.setdefault(tuple(msg.names), tuple(msg.names))
                values = np.asarray(msg.values, dtype=np.float64)
                if len(names) != len(values):
                    raise BagError(
                        f"{path}: topic '{conn.topic}': a message logged at {log_ns} ns has "
                        f"{len(names)} names but {len(values)} values"
                    )
                if not vectors.names_seen or vectors.names_seen[-1] != names:
                    if names not in vectors.names_seen:
                        vectors.names_seen.append(names)
                stamp = msg.header.stamp
                vectors.stamps_ns.append(int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec))
                vectors.values.append((names, values))
                # Commands have no validity flag; a non-finite one is not a usable action.
                valid = bool(getattr(msg, "valid", True)) and bool(np.all(np.isfinite(values)))
                vectors.valid.append(valid)
                vectors.log_ns.append(int(log_ns))
        except BagError:
            raise
        except Exception as error:  # a truncated or corrupt storage file
            raise BagError(f"{path}: cannot read messages of {topics}: {error}") from error
        return [out[topic] for topic in topics]
    finally:
        reader.close()


def _find_connections(connections, query: str, path: Path) -> list:
    """The bag's connections of ``query``: an exact full name, or the one topic ending in ``/query``."""
    topics = sorted({c.topic for c in connections})
    exact = [c for c in connections if c.topic == query]
    if not exact and not query.startswith("/"):
        exact = [c for c in connections if c.topic.endswith("/" + query)]
        if len({c.topic for c in exact}) > 1:
            raise BagError(
                f"{path}: topic '{query}' is ambiguous, it matches {sorted({c.topic for c in exact})}; give the full name"
            )
    if not exact:
        raise BagError(f"{path}: no topic '{query}' in the bag (topics: {topics})")
    if len(exact) > 1:
        types = sorted({c.msgtype for c in exact})
        if len(types) > 1:
            raise BagError(f"{path}: topic '{exact[0].topic}' is recorded with several types {types}")
    return exact
