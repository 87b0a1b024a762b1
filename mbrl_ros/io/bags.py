"""The stack's rosbag2 recordings, written and read with ``rosbags`` (no rclpy).

One data path: the data_logger node records through ``BagSequence``; the
online trainer and ``mbrl-ros fit`` turn the same bags into transitions with
``transitions_from_bags``.

- ``BagRecorder``: a rosbag2 directory (MCAP by default, or sqlite3) that takes
  messages already serialised as CDR (as rclpy's raw subscriptions deliver
  them, so nothing is decoded and re-encoded on the way to disk) and writes
  ``metadata.yaml`` when closed. A directory with ``metadata.yaml`` is complete.
- ``BagSequence``: a recording split by duration into ``<prefix>_<NNNN>`` bags,
  each closed when its time is up, so the trainer reads closed ones while the
  logger goes on.
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

from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
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


def bag_qos(*, reliable: bool, transient_local: bool, depth: int = 1) -> Qos:
    """The offered QoS recorded with a topic, so a replay can offer the same (latched stays latched)."""
    unspecified = QosTime(sec=0, nsec=0)
    return Qos(
        history=QosHistory.KEEP_LAST,
        depth=int(depth),
        reliability=QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
        durability=QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
        deadline=unspecified,
        lifespan=unspecified,
        liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=unspecified,
        avoid_ros_namespace_conventions=False,
    )


# ---- writing ------------------------------------------------------------------------------
class BagRecorder:
    """Write CDR-serialised messages to a new rosbag2 directory.

        with BagRecorder("bags/run_0000") as bag:
            bag.add_topic("/car/state", "mbrl_interfaces/msg/StateVector")
            bag.write("/car/state", receive_time_ns, raw_bytes)

    ``close`` (idempotent; also on leaving the ``with`` block, exception or not)
    writes ``metadata.yaml`` last, atomically, so a directory that has it is
    complete and readable.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        storage: str = "mcap",
        typestore: Typestore | None = None,
    ) -> None:
        self.path = Path(path)
        if storage not in STORAGES:
            raise BagError(f"{self.path}: storage must be one of {sorted(STORAGES)}, got {storage!r}")
        if self.path.exists():
            raise BagError(f"{self.path}: exists already; a recorder only creates new bags")
        self.storage = storage
        self.typestore = typestore or default_typestore()
        self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=STORAGES[storage])
        try:
            self._writer.open()
        except Exception as error:
            raise BagError(f"{self.path}: cannot create bag: {error}") from error
        self._connections: dict[str, object] = {}
        self.counts: Counter[str] = Counter()
        self.first_ns: int | None = None
        self.last_ns: int | None = None

    @property
    def closed(self) -> bool:
        return self._writer is None

    @property
    def topics(self) -> dict[str, str]:
        """Topic -> message type of the topics added so far."""
        return {topic: conn.msgtype for topic, conn in self._connections.items()}

    def add_topic(self, topic: str, msgtype: str, qos: Qos | Sequence[Qos] | None = None) -> None:
        """Register ``topic`` with its type (and offered QoS); needed once before writing it."""
        self._require_open(topic)
        if topic in self._connections:
            if self._connections[topic].msgtype != msgtype:
                raise BagError(
                    f"{self.path}: topic '{topic}' was added as {self._connections[topic].msgtype}, not {msgtype}"
                )
            return
        if msgtype not in self.typestore.types:
            raise BagError(f"{self.path}: topic '{topic}': type {msgtype} is not in the bag's typestore")
        profiles = [] if qos is None else [qos] if isinstance(qos, Qos) else list(qos)
        self._connections[topic] = self._writer.add_connection(
            topic, msgtype, typestore=self.typestore, offered_qos_profiles=profiles
        )

    def write(self, topic: str, timestamp_ns: int, data: bytes | memoryview) -> None:
        """Write one serialised message of ``topic`` logged at ``timestamp_ns``."""
        self._require_open(topic)
        connection = self._connections.get(topic)
        if connection is None:
            raise BagError(f"{self.path}: topic '{topic}' was not added before writing")
        self._writer.write(connection, int(timestamp_ns), data)
        self.counts[topic] += 1
        if self.first_ns is None:
            self.first_ns = int(timestamp_ns)
        self.last_ns = int(timestamp_ns)

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except Exception as error:
                raise BagError(f"{self.path}: cannot close bag: {error}") from error

    def _require_open(self, topic: str) -> None:
        if self._writer is None:
            raise BagError(f"{self.path}: topic '{topic}': the bag is closed")

    def __enter__(self) -> "BagRecorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class BagSequence:
    """A recording split into bags of ``split_duration_ns`` each: ``<output_dir>/<prefix>_<NNNN>/``.

    Each bag is closed (metadata.yaml written) once the time passed to
    ``write``/``tick`` is ``split_duration_ns`` past its first message, so the
    closed ones can be read while the recording goes on. A bag opens with the
    next message; time going backwards (a restarted simulation clock) also
    starts a new bag. Numbering continues after the highest ``<prefix>_NNNN``
    already in ``output_dir``, so a restarted logger never overwrites.

    ``latched`` topics (goal, episode results: published once, transient-local)
    have their last message repeated at the start of every new bag, so each
    bag is complete on its own, as ``ros2 bag record --repeat-transient-local``
    does. The copies are logged at the bag's start time.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        *,
        prefix: str = "bag",
        storage: str = "mcap",
        split_duration_ns: int = 60 * 10**9,
        repeat_latched: bool = True,
        typestore: Typestore | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        if storage not in STORAGES:
            raise BagError(f"{self.output_dir}: storage must be one of {sorted(STORAGES)}, got {storage!r}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", prefix):
            raise BagError(f"{self.output_dir}: bag prefix {prefix!r} must be a plain file name")
        if split_duration_ns <= 0:
            raise BagError(f"{self.output_dir}: split duration must be > 0, got {split_duration_ns} ns")
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise BagError(f"{self.output_dir}: cannot create the bag folder: {error.strerror}") from None
        self.prefix, self.storage = prefix, storage
        self.split_duration_ns = int(split_duration_ns)
        self.repeat_latched = repeat_latched
        self.typestore = typestore or default_typestore()
        numbers = [int(m.group(1)) for p in self.output_dir.iterdir()
                   if (m := re.fullmatch(re.escape(prefix) + r"_(\d+)", p.name))]
        self.next_index = max(numbers, default=-1) + 1
        self._topics: dict[str, tuple[str, list[Qos], bool]] = {}  # topic -> (type, qos, latched)
        self._last_latched: dict[str, bytes] = {}
        self.bag: BagRecorder | None = None
        self.bag_start_ns = 0
        self.counts: Counter[str] = Counter()  # messages written per topic, over all bags
        self.closed_paths: list[Path] = []

    def add_topic(self, topic: str, msgtype: str, qos: Qos | None = None, *, latched: bool = False) -> None:
        if msgtype not in self.typestore.types:
            raise BagError(f"{self.output_dir}: topic '{topic}': type {msgtype} is not in the bag's typestore")
        self._topics[topic] = (msgtype, [] if qos is None else [qos], latched)
        if self.bag is not None:
            self.bag.add_topic(topic, msgtype, qos)

    def write(self, topic: str, time_ns: int, data: bytes | memoryview) -> None:
        """Write one serialised message received at ``time_ns`` (closing and opening bags as due)."""
        if topic not in self._topics:
            raise BagError(f"{self.output_dir}: topic '{topic}' was not added before writing")
        self.tick(time_ns)
        if self.bag is None:
            self._open(time_ns, skip=topic)
        self.bag.write(topic, time_ns, data)
        self.counts[topic] += 1
        if self._topics[topic][2]:
            self._last_latched[topic] = bytes(data)

    def tick(self, time_ns: int) -> Path | None:
        """Close the current bag if its time is up (or time went backwards); the closed bag's path."""
        if self.bag is not None and (time_ns - self.bag_start_ns >= self.split_duration_ns or time_ns < self.bag_start_ns):
            return self.close()
        return None

    def close(self) -> Path | None:
        bag, self.bag = self.bag, None
        if bag is None:
            return None
        bag.close()
        self.closed_paths.append(bag.path)
        return bag.path

    @property
    def current_path(self) -> Path | None:
        return None if self.bag is None else self.bag.path

    def _open(self, time_ns: int, skip: str) -> None:
        path = self.output_dir / f"{self.prefix}_{self.next_index:04d}"
        self.next_index += 1
        bag = BagRecorder(path, storage=self.storage, typestore=self.typestore)
        for topic, (msgtype, qos, _latched) in self._topics.items():
            bag.add_topic(topic, msgtype, qos)
        if self.repeat_latched:
            for topic, data in self._last_latched.items():
                if topic != skip:
                    bag.write(topic, time_ns, data)
        self.bag, self.bag_start_ns = bag, int(time_ns)


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
