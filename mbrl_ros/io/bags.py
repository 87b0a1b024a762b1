"""Reading rosbag2 bags into the model's transitions with ``rosbags`` (no rclpy).

One data path: the data_logger node records through ``mbrl_ros.io.recording``;
the online trainer and ``mbrl-ros fit`` turn bags into transitions with
``load_transitions``, for the stack's own bags and for bags ``ros2 bag record``
wrote of a robot's raw topics alike.

- ``list_bags``: the complete bag directories under a folder, in recording order.
- ``TransitionMapping`` (``mapping_from_config``): per robot, which topic and
  which message fields give each entry of the model's state and action, in
  which units. Config (ROS parameter YAML, the ``transitions`` key of
  config/car.yaml)::

      transitions:
        state:
          topic: hw/odom                       # relative names match the bag's topic ending in it
          type: nav_msgs/msg/Odometry
          fields:                              # model name -> message field
            x: pose.pose.position.x
            "y": pose.pose.position.y
            yaw: {field: pose.pose.orientation, convert: yaw}   # a quaternion's yaw
            v: {field: twist.twist.linear.x, scale: 1.0}        # scale: to the model's unit
        command:
          topic: drive
          type: ackermann_msgs/msg/AckermannDriveStamped
          match: latest                        # exact (default) | latest
          fields: {u_speed: drive.speed, u_steer: drive.steering_angle}

  ``array[name]`` picks an array entry by the names beside it
  (``position[FFJ1]`` of a sensor_msgs/JointState, ``points[0].positions[FFJ1]``
  of a trajectory_msgs/JointTrajectory). Without ``fields``, a message with
  ``names``/``values`` (StateVector, CommandVector) is read by the model's names.
  A message with a bool ``valid`` field that is false, or any non-finite value,
  is invalid.
- ``load_transitions(bags, mapping, dt)``: a ``TransitionDataset``. A state's
  command is the one stamped with the state's stamp (``match: exact``: the
  stack's contract, the controller stamps a command with the state it answers)
  or the latest one stamped at or before it, at most ``max_command_age`` older
  (``match: latest``: a vendor driver's commands at their own rate). The next
  state is the one stamped ``dt`` later. An episode ends wherever that next
  state is missing, late, invalid, or jumps (a simulator reset teleports the
  car). States faster than ``dt`` are read every ``dt``.
- ``transitions_from_bags``: the earlier API (StateVector/CommandVector topics
  by name), kept for callers and tests; it builds the mapping and calls
  ``load_transitions``.

Messages are decoded by column (``mbrl_ros.io.cdr_columns``), not one Python
object per message; MCAP files are read chunk by chunk here (zstd, lz4 or
uncompressed chunks), anything else through rosbags' Reader. Errors are
``BagError`` and name the bag, the topic and the field at fault; config errors
are ``ConfigError`` naming the source and key. Reading never writes to a bag.
"""

from __future__ import annotations

import functools
import math
import os
import re
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np
from rosbags.interfaces import MessageDefinitionFormat, Nodetype
from rosbags.rosbag2 import Reader, StoragePlugin
from rosbags.typesys import get_types_from_msg
from rosbags.typesys.store import Typestore

from mbrl_ros.io.cdr_columns import ColumnReader, LayoutError, walk
from mbrl_ros.io.config import ConfigError
from mbrl_ros.io.ros_types import mbrl_typestore

if TYPE_CHECKING:  # torch is imported only to build a dataset, not to record one
    from mbrl_ros.core.data import TransitionDataset

STATE_TYPE = "mbrl_interfaces/msg/StateVector"
COMMAND_TYPE = "mbrl_interfaces/msg/CommandVector"
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
METADATA = "metadata.yaml"
# rosbag2 metadata version 9 (type description hashes); what Jazzy and Kilted write.
BAG_VERSION = 9
MATCHES = ("exact", "latest")
CONVERSIONS = ("", "yaw")


class BagError(ValueError):
    """A bag cannot be written or read as asked; the message names the bag, the topic and the field."""


@functools.lru_cache(maxsize=1)
def default_typestore() -> Typestore:
    """Standard messages plus mbrl_interfaces and ackermann_msgs, built once (building parses .msg files)."""
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


# ---- the mapping -----------------------------------------------------------------------------
@dataclass(frozen=True)
class FieldMap:
    """One entry of the model's state or action: ``scale * convert(message field)``."""

    name: str
    field: str  # "pose.pose.position.x", "values[x]", "position[FFJ1]"
    scale: float = 1.0
    convert: str = ""  # "" or "yaw" (the field is a geometry_msgs/Quaternion)


@dataclass(frozen=True)
class TopicMap:
    """Where one side (state or command) comes from: a topic, its type, and the fields read."""

    topic: str
    type: str
    # None: read a names/values message (StateVector, CommandVector) by the model's names.
    fields: tuple[FieldMap, ...] | None = None
    stamp: str = "header.stamp"  # a builtin_interfaces/Time field, or "log_time" (when the bag got it)


@dataclass(frozen=True)
class TransitionMapping:
    state: TopicMap
    command: TopicMap
    match: str = "exact"  # how a state finds its command: see the module docstring
    max_command_age: float | None = None  # s, for match "latest" (default: dt)


def stack_mapping(state_topic: str = "state", command_topic: str = "hw/command") -> TransitionMapping:
    """The stack's own topics: StateVector and CommandVector read by name, matched by identical stamp."""
    return TransitionMapping(TopicMap(state_topic, STATE_TYPE), TopicMap(command_topic, COMMAND_TYPE))


def mapping_from_config(
    config: Mapping[str, Any],
    source: str,
    state_names: Sequence[str] | None = None,
    action_names: Sequence[str] | None = None,
) -> TransitionMapping:
    """A TransitionMapping from the ``transitions`` config (see the module docstring).

    ``source`` names where ``config`` came from (``config/car.yaml: transitions``)
    for the errors. Given ``state_names``/``action_names``, a side with
    ``fields`` must map every one of them.
    """
    if not isinstance(config, Mapping) or not config:
        raise ConfigError(f"{source}: expected a mapping with keys 'state' and 'command', got {config!r}")
    unknown = sorted(set(config) - {"state", "command"})
    if unknown:
        raise ConfigError(f"{source}: unknown keys {unknown} (expected 'state' and 'command')")
    state = _topic_map(config, "state", source, state_names)
    command_config = config.get("command")
    command = _topic_map(config, "command", source, action_names)
    match = command_config.get("match", "exact")
    if match not in MATCHES:
        raise ConfigError(f"{source}: key 'command.match' must be one of {list(MATCHES)}, got {match!r}")
    age = command_config.get("max_command_age")
    if age is not None and not (isinstance(age, (int, float)) and age > 0):
        raise ConfigError(f"{source}: key 'command.max_command_age' must be a number of seconds > 0, got {age!r}")
    return TransitionMapping(state, command, match, None if age is None else float(age))


def _topic_map(config: Mapping, side: str, source: str, names: Sequence[str] | None) -> TopicMap:
    body = config.get(side)
    if not isinstance(body, Mapping):
        raise ConfigError(f"{source}: key '{side}' must be a mapping with 'topic' and 'type', got {body!r}")
    allowed = {"topic", "type", "fields", "stamp"} | ({"match", "max_command_age"} if side == "command" else set())
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ConfigError(f"{source}: unknown keys {[f'{side}.{k}' for k in unknown]} (allowed: {sorted(allowed)})")
    for key in ("topic", "type"):
        if not isinstance(body.get(key), str) or not body.get(key):
            raise ConfigError(f"{source}: key '{side}.{key}' must be a non-empty string, got {body.get(key)!r}")
    if body["type"].count("/") != 2:
        raise ConfigError(f"{source}: key '{side}.type' must be a full type name like nav_msgs/msg/Odometry, got {body['type']!r}")
    stamp = body.get("stamp", "header.stamp")
    if not isinstance(stamp, str) or not stamp:
        raise ConfigError(f"{source}: key '{side}.stamp' must be a field name or 'log_time', got {stamp!r}")
    fields = body.get("fields")
    if fields is None:
        return TopicMap(body["topic"], body["type"], None, stamp)
    if not isinstance(fields, Mapping) or not fields:
        raise ConfigError(f"{source}: key '{side}.fields' must map model names to message fields, got {fields!r}")
    maps = {}
    for name, spec in fields.items():
        key = f"{side}.fields.{name}"
        if isinstance(spec, str):
            spec = {"field": spec}
        if not isinstance(spec, Mapping) or not isinstance(spec.get("field"), str):
            raise ConfigError(f"{source}: key '{key}' must be a field path or {{field: ..., scale: ..., convert: ...}}, got {spec!r}")
        extra = sorted(set(spec) - {"field", "scale", "convert"})
        if extra:
            raise ConfigError(f"{source}: unknown keys {[f'{key}.{k}' for k in extra]} (allowed: field, scale, convert)")
        scale = spec.get("scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale == 0:
            raise ConfigError(f"{source}: key '{key}.scale' must be a finite non-zero number, got {scale!r}")
        convert = spec.get("convert", "")
        if convert not in CONVERSIONS:
            raise ConfigError(f"{source}: key '{key}.convert' must be one of {list(CONVERSIONS)}, got {convert!r}")
        maps[str(name)] = FieldMap(str(name), spec["field"], float(scale), convert)
    if names is not None:
        missing = [n for n in names if n not in maps]
        if missing:
            raise ConfigError(f"{source}: key '{side}.fields' maps {list(maps)} but not {missing} of {list(names)}")
        maps = {n: maps[n] for n in names}  # the model's column order
    return TopicMap(body["topic"], body["type"], tuple(maps.values()), stamp)


# ---- bags to transitions ---------------------------------------------------------------------
def load_transitions(
    bags: str | os.PathLike | Iterable[str | os.PathLike],
    mapping: TransitionMapping | Mapping[str, Any],
    dt: float,
    *,
    max_stamp_error: float | None = None,
    max_jump: float = 2.0,
    jump_names: Sequence[str] = ("x", "y"),
    state_names: Sequence[str] | None = None,
    action_names: Sequence[str] | None = None,
    namespace: str | None = None,
    source: str = "transitions",
    typestore: Typestore | None = None,
    report: dict | None = None,
    progress: bool = False,
) -> "TransitionDataset":
    """Transitions (state, command, next state) from bags, split into episodes.

    ``bags``: bag directories in recording order (``list_bags`` gives them);
    consecutive bags of one recording continue each other's episodes.
    ``mapping``: a TransitionMapping or its config (checked, errors naming
    ``source``). ``dt``: the model's step (s); the next state is the one
    stamped ``dt`` later within ``max_stamp_error`` (default ``dt / 4``).
    ``max_jump``: a larger change (m) of the ``jump_names`` entries in one step
    is a reset, not motion. ``state_names``/``action_names``: the columns, in
    order (default: the mapping's fields, or the names in the first message).
    ``namespace``: where relative topics resolve (``/car``); without it a
    relative topic matches the bag's one topic ending in it. ``report``, if
    given, gets counts of what was found and why episodes ended. ``progress``:
    a tqdm bar over the bags.
    """
    if not isinstance(mapping, TransitionMapping):
        mapping = mapping_from_config(mapping, source, state_names, action_names)
    if isinstance(bags, (str, os.PathLike)):
        bags = [bags]
    paths = [Path(p) for p in bags]
    if not paths:
        raise BagError("load_transitions: no bags given")
    if not dt > 0:
        raise BagError(f"load_transitions: dt must be > 0 s, got {dt}")
    max_stamp_error = dt / 4.0 if max_stamp_error is None else float(max_stamp_error)
    if not 0 <= max_stamp_error < dt / 2:
        # Beyond dt / 2 the window around t + dt would also hold t or t + 2 dt.
        raise BagError(f"load_transitions: max_stamp_error must be in [0, dt/2), got {max_stamp_error}")
    store = typestore or default_typestore()
    sides = {"state": _Side(mapping.state, state_names), "command": _Side(mapping.command, action_names)}

    from tqdm import tqdm

    for bag_index, path in enumerate(tqdm(paths, desc="reading bags", unit="bag", disable=not progress)):
        for side, raw in zip(sides.values(), _read_raw(path, [s.topic for s in sides.values()], namespace, store)):
            side.decode(path, bag_index, raw, store)
    states, commands = sides["state"].rows(), sides["command"].rows()
    counts = Counter(states=len(states.stamps), commands=len(commands.stamps))
    if sides["state"].names is None or sides["command"].names is None or not len(states.stamps):
        raise _no_transitions(paths, mapping, counts)
    state_names, action_names = sides["state"].names, sides["command"].names
    jump_idx = [state_names.index(n) for n in jump_names if n in state_names]
    max_age = mapping.max_command_age if mapping.max_command_age is not None else dt
    s, a, ns, episodes = _align(states, commands, mapping.match, dt, max_stamp_error, max_age, max_jump, jump_idx, counts)
    counts["transitions"] = len(s)
    counts["episodes"] = int(episodes[-1]) + 1 if len(episodes) else 0
    if report is not None:
        report.update(counts)
        report["state_names"], report["action_names"] = list(state_names), list(action_names)
    if not len(s):
        raise _no_transitions(paths, mapping, counts)
    from mbrl_ros.core.data import TransitionDataset

    dataset = TransitionDataset(len(state_names), len(action_names))
    dataset.append(s, a, ns, episodes)
    return dataset


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
    """``load_transitions`` of the stack's StateVector ``state_topic`` and CommandVector ``command_topic``."""
    return load_transitions(
        paths, stack_mapping(state_topic, command_topic), dt, max_stamp_error=max_stamp_error, max_jump=max_jump,
        jump_names=jump_names, state_names=state_names, action_names=action_names, typestore=typestore, report=report,
    )


def _no_transitions(paths: list[Path], mapping: TransitionMapping, counts: Counter) -> BagError:
    found = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in counts.items() if v)
    bags = ", ".join(str(p) for p in paths)
    return BagError(
        f"{bags}: no transitions from '{mapping.state.topic}' and '{mapping.command.topic}' "
        f"({found or 'no messages'}); a transition needs a valid state, its command "
        f"(match: {mapping.match}), and a valid state dt later"
    )


# ---- decoding: messages -> stamped rows ------------------------------------------------------
@dataclass
class _Raw:
    """One topic's serialised messages in one bag, in log order, packed in one buffer."""

    topic: str  # the bag's full name
    msgtype: str
    buffer: np.ndarray  # uint8
    offsets: np.ndarray  # int64
    lengths: np.ndarray  # int64
    log_ns: np.ndarray  # int64


@dataclass
class _Rows:
    bags: np.ndarray  # bag index of each row
    log_ns: np.ndarray
    stamps: np.ndarray  # ns
    values: np.ndarray  # [N, k] float64
    valid: np.ndarray  # bool


class _Side:
    """The rows of one side (state or command), decoded bag by bag."""

    def __init__(self, topic: TopicMap, names: Sequence[str] | None) -> None:
        self.topic = topic
        if topic.fields is not None:
            names = [f.name for f in topic.fields] if names is None else list(names)
        self.names = None if names is None else list(names)
        self.parts: list[_Rows] = []

    def decode(self, path: Path, bag_index: int, raw: _Raw, store: Typestore) -> None:
        if not len(raw.offsets):
            return
        where = f"{path}: topic '{raw.topic}' ({raw.msgtype})"
        if self.names is None:  # a names/values message read by the names of its first message
            try:
                self.names = walk(raw.buffer[raw.offsets[0]:raw.offsets[0] + raw.lengths[0]], raw.msgtype, store).names_of("values")
            except LayoutError as error:
                raise BagError(f"{where}: {error}; give the topic's fields in the mapping") from None
            if len(set(self.names)) != len(self.names):
                raise BagError(f"{where}: repeated names in {self.names}")
        fields = self.topic.fields or tuple(FieldMap(n, f"values[{n}]") for n in self.names)
        paths = []
        for f in fields:
            paths += [f"{f.field}.{c}" for c in "xyzw"] if f.convert == "yaw" else [f.field]
        stamp_paths = [] if self.topic.stamp == "log_time" else [f"{self.topic.stamp}.sec", f"{self.topic.stamp}.nanosec"]
        valid_path = ["valid"] if _has_bool(store, raw.msgtype, "valid") else []
        try:
            columns = ColumnReader(store, raw.msgtype).read(raw.buffer, raw.offsets, raw.lengths,
                                                            paths + stamp_paths + valid_path)
        except LayoutError as error:
            raise BagError(f"{where}: {error}") from None
        values = np.empty((len(raw.offsets), len(fields)), dtype=np.float64)
        for k, f in enumerate(fields):
            if f.convert == "yaw":
                x, y, z, w = (columns[f"{f.field}.{c}"].astype(np.float64) for c in "xyzw")
                column = np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
            else:
                column = columns[f.field].astype(np.float64)
            values[:, k] = column * f.scale
        if stamp_paths:
            stamps = columns[stamp_paths[0]].astype(np.int64) * 1_000_000_000 + columns[stamp_paths[1]].astype(np.int64)
        else:
            stamps = raw.log_ns
        valid = np.all(np.isfinite(values), axis=1)
        if valid_path:
            valid &= columns["valid"] != 0
        self.parts.append(_Rows(np.full(len(stamps), bag_index), raw.log_ns, stamps, values, valid))

    def rows(self) -> _Rows:
        if not self.parts:
            width = len(self.names or ())
            return _Rows(*(np.zeros(0, dtype=np.int64) for _ in range(3)), np.zeros((0, width)), np.zeros(0, dtype=bool))
        return _Rows(*(np.concatenate([getattr(p, f) for p in self.parts]) for f in _Rows.__dataclass_fields__))


def _has_bool(store: Typestore, msgtype: str, name: str) -> bool:
    return any(n == name and kind == Nodetype.BASE and detail[0] == "bool"
               for n, (kind, detail) in store.fielddefs[msgtype][1])


# ---- aligning: rows -> transitions ------------------------------------------------------------
def _align(states: _Rows, commands: _Rows, match: str, dt: float, max_stamp_error: float, max_age: float,
           max_jump: float, jump_idx: list[int], counts: Counter):
    """(states, actions, next states, episode ids) from the decoded rows; counts what was dropped and why."""
    # Log order over all bags; a state stamped before the previous one starts a new
    # time line (a restarted simulator or clock), so that equal stamps of two runs
    # are never paired. A state stamped like the previous one is the same state re-sent.
    order = np.lexsort((states.log_ns, states.bags))
    stamps, values, valid = states.stamps[order], states.values[order], states.valid[order]
    step = np.diff(stamps)
    timeline = np.concatenate([[0], np.cumsum(step < 0)])
    keep = np.concatenate([[True], step != 0])
    counts["repeated_states"] += int((~keep).sum())

    # Each command belongs to the time line of the state logged last before it.
    corder = np.lexsort((commands.log_ns, commands.bags))
    cstamps, cvalues, cvalid = commands.stamps[corder], commands.values[corder], commands.valid[corder]
    state_keys = np.stack([states.bags[order], states.log_ns[order]], axis=1)
    command_keys = np.stack([commands.bags[corder], commands.log_ns[corder]], axis=1)
    before = _count_at_or_before(state_keys, command_keys)
    ctimeline = np.where(before > 0, timeline[np.maximum(before - 1, 0)], 0)
    counts["invalid_commands"] += int((~cvalid).sum())

    stamps, values, valid, timeline = stamps[keep], values[keep], valid[keep], timeline[keep]
    n = len(stamps)
    action_row = np.full(n, -1, dtype=np.int64)
    good = np.flatnonzero(cvalid)
    if match == "exact":
        # The first command answering a state is the one the driver applied
        # (a lockstep driver ignores later answers to a state it has left).
        first: dict[tuple[int, int], int] = {}
        for key, row in zip(zip(ctimeline[good].tolist(), cstamps[good].tolist()), good.tolist()):
            first.setdefault(key, row)
        action_row[:] = [first.get(key, -1) for key in zip(timeline.tolist(), stamps.tolist())]
    else:
        max_age_ns = int(round(max_age * 1e9))
        for line in np.unique(timeline):
            mine = good[ctimeline[good] == line]
            mine = mine[np.argsort(cstamps[mine], kind="stable")]
            at = np.flatnonzero(timeline == line)
            pos = np.searchsorted(cstamps[mine], stamps[at], side="right") - 1
            ok = pos >= 0
            ok[ok] &= stamps[at][ok] - cstamps[mine[pos[ok]]] <= max_age_ns
            action_row[at[ok]] = mine[pos[ok]]

    next_row = _next_state(stamps, timeline, int(round(dt * 1e9)), int(round(max_stamp_error * 1e9)))
    has_command = valid & (action_row >= 0)
    has_next = has_command & (next_row >= 0)
    next_valid = has_next & valid[np.maximum(next_row, 0)]
    ok = next_valid.copy()
    if jump_idx:
        moved = values[np.maximum(next_row, 0)][:, jump_idx] - values[:, jump_idx]
        jumped = next_valid & (np.linalg.norm(moved, axis=1) > max_jump)
        ok &= ~jumped
        counts["ended_jump"] += int(jumped.sum())
    counts["invalid_states"] += int((~valid).sum())
    counts["states_without_command"] += int((valid & ~has_command).sum())
    counts["ended_next_state_missing"] += int((has_command & ~has_next).sum())
    counts["ended_next_state_invalid"] += int((has_next & ~next_valid).sum())

    # Episodes: a transition continues the episode when it starts where the previous
    # one ended. A state inside a step already taken (states faster than dt) is skipped.
    rows, episode_ids = [], []
    episode, previous_next, inside = -1, -1, 0
    for i, j in zip(np.flatnonzero(ok).tolist(), next_row[ok].tolist()):
        if i < previous_next:
            inside += 1
            continue
        if i != previous_next:
            episode += 1
        previous_next = j
        rows.append(i)
        episode_ids.append(episode)
    if inside:
        counts["states_within_a_step"] += inside
    rows = np.asarray(rows, dtype=np.int64)
    return (values[rows], cvalues[action_row[rows]], values[next_row[rows]], np.asarray(episode_ids, dtype=np.int64))


def _count_at_or_before(sorted_keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """For each (bag, log time) query, how many of the lexicographically sorted keys are <= it."""
    out = np.zeros(len(queries), dtype=np.int64)
    if not len(sorted_keys):
        return out
    for bag in np.unique(queries[:, 0]):
        lo, hi = np.searchsorted(sorted_keys[:, 0], [bag, bag + 1])
        mine = queries[:, 0] == bag
        out[mine] = lo + np.searchsorted(sorted_keys[lo:hi, 1], queries[mine, 1], side="right")
    return out


def _next_state(stamps: np.ndarray, timeline: np.ndarray, dt_ns: int, err_ns: int) -> np.ndarray:
    """For each state, the later state of its time line stamped closest to ``stamp + dt``, within ``err``; else -1."""
    n = len(stamps)
    out = np.full(n, -1, dtype=np.int64)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(timeline)) + 1, [n]])
    for start, end in zip(bounds[:-1], bounds[1:]):
        seg = stamps[start:end]  # rising within a time line
        target = seg + dt_ns
        after = np.searchsorted(seg, target)
        best = np.full(end - start, -1, dtype=np.int64)
        best_err = np.full(end - start, err_ns + 1, dtype=np.int64)
        own = np.arange(end - start)
        for cand in (after - 1, after):
            usable = (cand > own) & (cand < end - start)
            error = np.where(usable, np.abs(seg[np.clip(cand, 0, end - start - 1)] - target), err_ns + 1)
            better = error < best_err
            best[better], best_err[better] = cand[better], error[better]
        out[start:end] = np.where(best >= 0, best + start, -1)
    return out


# ---- reading: bag -> raw messages of the wanted topics ----------------------------------------
def _read_raw(path: Path, wanted: list[TopicMap], namespace: str | None, store: Typestore) -> list[_Raw]:
    """The messages of each wanted topic of the bag at ``path``; BagError naming the bag and topic."""
    try:
        reader = Reader(path)
        reader.open()
    except Exception as error:  # rosbags raises its own errors, and OSError, KeyError on bad metadata
        raise BagError(f"{path}: cannot read bag: {error}") from error
    try:
        connections, topics = [], []
        for topic_map in wanted:
            found = _find_connections(reader.connections, topic_map.topic, namespace, path)
            topic, msgtype = found[0].topic, found[0].msgtype
            if msgtype != topic_map.type:
                raise BagError(f"{path}: topic '{topic}' has type {msgtype}, expected {topic_map.type}")
            if topic in topics:
                raise BagError(f"{path}: '{topic_map.topic}' names the same topic '{topic}' as another input")
            _ensure_type(store, found[0], path)
            topics.append(topic)
            connections.append(found)
        try:
            return _read_storage(reader, path, connections, topics)
        except BagError:
            raise
        except Exception as error:  # a truncated or corrupt storage file
            raise BagError(f"{path}: cannot read messages of {topics}: {type(error).__name__}: {error}") from error
    finally:
        reader.close()


def _read_storage(reader: Reader, path: Path, connections: list[list], topics: list[str]) -> list[_Raw]:
    out = None
    if reader.compression_mode != "message":
        out = _read_mcap_indexed(reader, topics) or _read_sqlite_rows(reader, topics)
    if out is None:  # anything else: rosbags reads it message by message
        out = _read_messages(reader, connections, topics)
    for k, raw in enumerate(out):
        raw.msgtype = connections[k][0].msgtype
        expected = sum(c.msgcount for c in connections[k])
        if len(raw.offsets) != expected:
            # rosbags pairs metadata.yaml's topics with the storage file's; when they
            # disagree (another QoS or type), messages would be dropped without a word.
            raise BagError(f"{path}: topic '{raw.topic}': metadata.yaml counts {expected} messages but the storage "
                           f"files yield {len(raw.offsets)}; the bag's metadata and storage disagree")
    return out


def _read_messages(reader: Reader, connections: list[list], topics: list[str]) -> list[_Raw]:
    by_id = {c.id: k for k, found in enumerate(connections) for c in found}
    chunks: list[list[bytes]] = [[] for _ in topics]
    logs: list[list[int]] = [[] for _ in topics]
    for conn, log_ns, raw in reader.messages(connections=[c for found in connections for c in found]):
        k = by_id[conn.id]
        chunks[k].append(raw)
        logs[k].append(log_ns)
    out = []
    for k, topic in enumerate(topics):
        lengths = np.fromiter((len(m) for m in chunks[k]), dtype=np.int64, count=len(chunks[k]))
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(lengths) else lengths
        buffer = np.frombuffer(b"".join(chunks[k]), dtype=np.uint8)
        out.append(_Raw(topic, "", buffer, offsets, lengths, np.asarray(logs[k], dtype=np.int64)))
    return out


def _read_sqlite_rows(reader: Reader, topics: list[str]) -> list[_Raw] | None:
    """The wanted topics' messages from sqlite3 storage files with one query each, in log order.

    rosbags yields them one by one through Python; one SELECT of the rows is
    ~4x cheaper. Opened read-only and immutable, as rosbags does. None when a
    file is not sqlite3.
    """
    import sqlite3

    files = _storage_files(reader)
    if not files or any(f.suffix != ".db3" for f in files):
        return None
    found: list[list[tuple[int, bytes]]] = [[] for _ in topics]
    for file in files:
        db = sqlite3.connect(f"file:{file}?immutable=1", uri=True)
        try:
            ids = {topic_id: topics.index(name) for topic_id, name in db.execute("SELECT id, name FROM topics")
                   if name in topics}
            if not ids:
                continue
            rows = db.execute(f"SELECT topic_id, timestamp, data FROM messages WHERE topic_id IN "
                              f"({', '.join('?' * len(ids))}) ORDER BY timestamp, id", list(ids)).fetchall()
        finally:
            db.close()
        for topic_id, log_ns, data in rows:
            found[ids[topic_id]].append((log_ns, data))
    out = []
    for topic, rows in zip(topics, found):
        lengths = np.fromiter((len(d) for _, d in rows), dtype=np.int64, count=len(rows))
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(rows) else lengths
        buffer = np.frombuffer(b"".join(d for _, d in rows), dtype=np.uint8)
        out.append(_Raw(topic, "", buffer, offsets, lengths, np.fromiter((t for t, _ in rows), np.int64, len(rows))))
    return out


# MCAP records (https://mcap.dev/spec): opcode (1 byte), record length (uint64), then the fields.
_MCAP_MESSAGE = 0x05
_MCAP_MESSAGE_INDEX = 0x07
_MCAP_MESSAGE_DATA = 1 + 8 + 2 + 4 + 8 + 8  # opcode, length, channel id, sequence, log time, publish time
_MCAP_CHUNK_FIXED = 1 + 8 + 8 + 8 + 8 + 4  # opcode, length, start and end time, uncompressed size, crc


def _read_mcap_indexed(reader: Reader, topics: list[str]) -> list[_Raw] | None:
    """The wanted topics' messages from the MCAP files' chunk and message indexes, without a per-message loop.

    rosbags walks every message record in Python (~10 us each, most of reading a
    bag). Every chunk's message index already lists (log time, offset) of each
    channel's messages, so the records are found with numpy. None when a file
    is not MCAP or lacks the indexes; rosbags then reads it.
    """
    from mcap.reader import make_reader

    files = _storage_files(reader)
    if not files or any(f.suffix != ".mcap" for f in files):
        return None
    parts: list[list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in topics]
    for file in files:
        with open(file, "rb") as stream:
            summary = make_reader(stream).get_summary()
            if summary is None or not summary.chunk_indexes:
                return None
            wanted = {cid: topics.index(ch.topic) for cid, ch in summary.channels.items() if ch.topic in topics}
            for chunk in summary.chunk_indexes:
                indexed = bool(chunk.message_index_offsets)
                ids = [cid for cid in wanted if cid in chunk.message_index_offsets]
                if indexed and not ids:
                    continue  # the chunk's index lists no wanted channel
                stream.seek(chunk.chunk_start_offset)
                buffer = np.frombuffer(_mcap_chunk_records(stream.read(chunk.chunk_length), chunk.compression),
                                       dtype=np.uint8)
                if indexed:
                    stream.seek(chunk.chunk_start_offset + chunk.chunk_length)
                    index = stream.read(chunk.message_index_length)
                    found = [(cid, *_mcap_indexed(index, chunk.message_index_offsets[cid]
                                                  - chunk.chunk_start_offset - chunk.chunk_length, cid))
                             for cid in ids]
                else:  # a writer that indexes chunks but not messages (rosbags): walk the records
                    found = _mcap_scan(buffer, set(wanted))
                for cid, offsets, logs in found:
                    record_len = buffer[(offsets + 1)[:, None] + np.arange(8)].copy().view("<u8").reshape(-1)
                    lengths = record_len.astype(np.int64) - (_MCAP_MESSAGE_DATA - 9)
                    parts[wanted[cid]].append((buffer, offsets + _MCAP_MESSAGE_DATA, lengths, logs))
    out = []
    for k, topic in enumerate(topics):
        buffers, offsets, lengths, logs = [], [], [], []
        base = 0
        for buffer, offs, lens, log in parts[k]:
            buffers.append(buffer)
            offsets.append(offs + base)
            lengths.append(lens)
            logs.append(log)
            base += len(buffer)
        if not buffers:
            out.append(_Raw(topic, "", np.zeros(0, np.uint8), *(np.zeros(0, np.int64) for _ in range(3))))
            continue
        log = np.concatenate(logs)
        order = np.argsort(log, kind="stable")  # chunks may overlap in time
        out.append(_Raw(topic, "", np.concatenate(buffers), np.concatenate(offsets)[order],
                        np.concatenate(lengths)[order], log[order]))
    return out


def _storage_files(reader: Reader) -> list[Path]:
    """The storage files rosbags opened (after undoing file compression), in order; [] if it does not say.

    rosbags has no public API for them: its DirectoryReader keeps them as
    ``storages`` with a ``path`` each. Anything else gives [] and rosbags reads.
    """
    storages = getattr(getattr(reader, "storage", None), "storages", None) or []
    paths = [getattr(storage, "path", None) for storage in storages]
    return [Path(p) for p in paths] if paths and all(isinstance(p, Path) for p in paths) else []


def _mcap_indexed(index: bytes, at: int, cid: int) -> tuple[np.ndarray, np.ndarray]:
    """(record offsets, log times) of channel ``cid``'s messages from its message index record at ``at``."""
    if index[at] != _MCAP_MESSAGE_INDEX or struct.unpack_from("<H", index, at + 9)[0] != cid:
        raise BagError(f"MCAP message index of channel {cid} is not where the chunk index says")
    (size,) = struct.unpack_from("<I", index, at + 11)
    entries = np.frombuffer(index, dtype="<u8", count=size // 8, offset=at + 15).reshape(-1, 2).astype(np.int64)
    return entries[:, 1], entries[:, 0]


def _mcap_scan(buffer: np.ndarray, wanted: set[int]) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(channel, record offsets, log times) of the wanted channels' messages in a chunk, by walking its records."""
    records = buffer.tobytes()
    found: dict[int, tuple[list[int], list[int]]] = {}
    at, end = 0, len(records)
    while at < end:
        opcode = records[at]
        (length,) = struct.unpack_from("<Q", records, at + 1)
        if opcode == _MCAP_MESSAGE:
            cid, _sequence, log_ns = struct.unpack_from("<HIQ", records, at + 9)
            if cid in wanted:
                offsets, logs = found.setdefault(cid, ([], []))
                offsets.append(at)
                logs.append(log_ns)
        at += 9 + length
    return [(cid, np.asarray(o, dtype=np.int64), np.asarray(t, dtype=np.int64)) for cid, (o, t) in found.items()]


def _mcap_chunk_records(record: bytes, compression: str) -> bytes:
    """The records inside an MCAP chunk record, decompressed."""
    (name_len,) = struct.unpack_from("<I", record, _MCAP_CHUNK_FIXED)
    start = _MCAP_CHUNK_FIXED + 4 + name_len + 8
    (size,) = struct.unpack_from("<Q", record, start - 8)
    data = record[start:start + size]
    if compression == "zstd":
        return _zstd().decompress(data)
    if compression == "lz4":
        from lz4.frame import decompress

        return decompress(data)
    if compression:
        raise BagError(f"MCAP chunk compression '{compression}' is not supported (zstd, lz4, none are)")
    return data


def _zstd():
    try:
        from compression import zstd  # Python >= 3.14
    except ImportError:
        from backports import zstd  # what rosbags uses before 3.14
    return zstd


def _ensure_type(store: Typestore, connection, path: Path) -> None:
    """Register a type the typestore lacks from the definition the bag carries (MCAP schemas, metadata v9)."""
    if connection.msgtype in store.fielddefs:
        return
    msgdef = getattr(connection, "msgdef", None)
    if msgdef is None or msgdef.format != MessageDefinitionFormat.MSG or not msgdef.data:
        raise BagError(f"{path}: topic '{connection.topic}' has type {connection.msgtype}, which is neither "
                       "known here nor defined in the bag")
    try:
        store.register(get_types_from_msg(msgdef.data, connection.msgtype))
    except Exception as error:  # rosbags' own parse errors
        raise BagError(f"{path}: topic '{connection.topic}': cannot parse the bag's definition of "
                       f"{connection.msgtype}: {error}") from error


def _find_connections(connections, query: str, namespace: str | None, path: Path) -> list:
    """The bag's connections of ``query``: an exact full name, or the one topic ending in ``/query``."""
    topics = sorted({c.topic for c in connections})
    if namespace is not None and not query.startswith("/"):
        query = namespace.rstrip("/") + "/" + query
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
