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
  car), and wherever a logged episode report (``sim/episodes``, see
  ``episode_boundaries``) says one episode ended and the next began: a reset
  that moves the robot within what it could do in one step (the car standing
  at its start pose, turned) is seen only there. States faster than ``dt``
  are read every ``dt``.
- ``messages_in_effect(bags, topic, type, at)``: the message of a topic (a goal)
  in effect at given stamps, e.g. each episode's first state (``load_transitions``'
  ``report["episode_starts"]``): the trainer's goal per episode.
- ``transitions_from_bags``: the earlier API (StateVector/CommandVector topics
  by name), kept for callers and tests; it builds the mapping and calls
  ``load_transitions``.

Messages are decoded by column (``mbrl_ros.io.cdr_columns``), not one Python
object per message, from the storage files read directly (``mbrl_ros.io.bag_storage``:
every message the files hold, whatever metadata.yaml says), each type by the
definition the bag carries, else the built-in one (``ros_types.bag_typestore``).
A malformed message is dropped alone and reported (see ``load_transitions``).
Errors are ``BagError`` and name the bag, the topic and the field at fault;
config errors are ``ConfigError`` naming the source and key. Reading never
writes to a bag.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np
from rosbags.interfaces import Nodetype
from rosbags.rosbag2 import StoragePlugin
from rosbags.typesys.store import Typestore

from mbrl_ros.io.bag_storage import METADATA, BagError, StorageBag, StorageTopic
from mbrl_ros.io.cdr_columns import ColumnReader, LayoutError, walk
from mbrl_ros.io.config import ConfigError
from mbrl_ros.io.ros_types import UNKNOWN, bag_typestore, mbrl_typestore

if TYPE_CHECKING:  # torch is imported only to build a dataset, not to record one
    from mbrl_ros.core.data import TransitionDataset

_log = logging.getLogger(__name__)

STATE_TYPE = "mbrl_interfaces/msg/StateVector"
EPISODES_TYPE = "diagnostic_msgs/msg/DiagnosticArray"  # the simulated drivers' sim/episodes reports
COMMAND_TYPE = "mbrl_interfaces/msg/CommandVector"
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
# rosbag2 metadata version 9 (type description hashes); what Jazzy and Kilted write.
BAG_VERSION = 9
MATCHES = ("exact", "latest")
CONVERSIONS = ("", "yaw")


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
    max_change: Mapping[str, float] | None = None,
    angle_dims: Sequence[int] = (),
    episodes_topic: str | None = "sim/episodes",
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
    is a reset, not motion. ``max_change``: per state name, the largest change
    in one step that the robot's dynamics can make (the car's heading); a larger
    one is a reset too. The states at ``angle_dims`` (indices into the state
    names) are compared as wrapped angles. ``episodes_topic``: where the bag
    may hold the simulated drivers' episode reports (``episode_boundaries``); a
    transition from one reported episode into the next is a reset (None: not
    read; the reports of every bag read apply to every time line, so a second run
    with a restarted clock may lose a transition at a stamp where the first
    reset, never gain one). Transitions across a reset are dropped and counted in the report
    (``ended_reported_reset``, ``ended_jump``). ``state_names``/``action_names``: the columns, in
    order (default: the mapping's fields, or the names in the first message).
    ``namespace``: where relative topics resolve (``/car``); without it a
    relative topic matches the bag's one topic ending in it. ``report``, if
    given, gets counts of what was found and why episodes ended, and
    ``report["episode_starts"]``: per episode id, ``(bag index, stamp ns)`` of
    its first state (what ``messages_in_effect`` takes: the goal an episode
    was given), ``report["episode_spans"]``: per episode id, the stamps (ns) of
    its first state and of its last next state, and ``report["reset_stamps"]``:
    the reported episode boundaries (what ``recorded_episodes`` takes).
    ``progress``: a tqdm bar over the bags.

    A message that cannot be read as the mapping asks (a state with the wrong
    number of values, a field it lacks, bytes that are no CDR message) is
    dropped alone: the transitions it is part of are lost, the rest of its bag
    is kept. Drops are counted per topic and reason in ``report["dropped"]``
    (``{topic: {reason: count}}``, total in ``report["dropped_messages"]``) and
    logged as a warning per bag and topic (logger ``mbrl_ros.io.bags``). Only
    when no message of a side can be read is it an error (the mapping names a
    field no message has): BagError naming the bag, topic, message and field.
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
    sides = {"state": _Side(mapping.state, state_names), "command": _Side(mapping.command, action_names)}

    from tqdm import tqdm

    boundaries: list[int] = []
    report_drops: Counter[str] = Counter()
    for bag_index, path in enumerate(tqdm(paths, desc="reading bags", unit="bag", disable=not progress)):
        raws, store, reports = _read_raw(path, [s.topic for s in sides.values()], namespace, typestore,
                                         None if episodes_topic is None else TopicMap(episodes_topic, EPISODES_TYPE))
        for side, raw in zip(sides.values(), raws):
            side.decode(path, bag_index, raw, store)
        if reports is not None:
            boundaries += episode_boundaries(path, reports, store, report_drops)
    for side in sides.values():
        side.check_any_read()
    states, commands = sides["state"].rows(), sides["command"].rows()
    counts = Counter(states=len(states.stamps), commands=len(commands.stamps))
    dropped = {topic: dict(reasons) for side in sides.values() for topic, reasons in side.dropped.items()}
    if report_drops:
        dropped[str(episodes_topic)] = dict(report_drops)
    counts["dropped_messages"] = sum(sum(r.values()) for r in dropped.values())
    if report is not None:
        report["dropped"] = dropped
    if sides["state"].names is None or sides["command"].names is None or not len(states.stamps):
        raise _no_transitions(paths, mapping, counts)
    state_names, action_names = sides["state"].names, sides["command"].names
    jump_idx = [state_names.index(n) for n in jump_names if n in state_names]
    bounds = _change_bounds(max_change or {}, state_names, angle_dims, source)
    max_age = mapping.max_command_age if mapping.max_command_age is not None else dt
    resets = np.unique(np.asarray(boundaries, dtype=np.int64))
    s, a, ns, episodes, row_bags, row_stamps, next_stamps = _align(
        states, commands, mapping.match, dt, max_stamp_error, max_age, max_jump, jump_idx, bounds, resets, counts)
    counts["transitions"] = len(s)
    counts["episodes"] = int(episodes[-1]) + 1 if len(episodes) else 0
    if report is not None:
        report.update(counts)
        report["state_names"], report["action_names"] = list(state_names), list(action_names)
        # Episode ids count up from 0 in row order: the first row of episode k is the k-th start.
        first = np.flatnonzero(np.diff(episodes, prepend=-1) != 0)
        report["episode_starts"] = list(zip(row_bags[first].tolist(), row_stamps[first].tolist()))
        last = np.flatnonzero(np.diff(episodes, append=-1) != 0)
        report["episode_spans"] = list(zip(row_stamps[first].tolist(), next_stamps[last].tolist()))
        report["reset_stamps"] = resets.tolist()
    if not len(s):
        raise _no_transitions(paths, mapping, counts)
    import torch

    from mbrl_ros.core.data import TransitionDataset

    dataset = TransitionDataset(len(state_names), len(action_names))
    # append checks every value with torch (isfinite over ~10^5 elements). With more than one
    # intra-op thread on a loaded machine, OpenMP's workers wait for a core at each such op:
    # ~100 ms instead of ~1 ms per op at load 8 on 2 cores (measured), a third of reading a
    # 100k-message bag. One thread for this step; the caller's setting is restored.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        dataset.append(s, a, ns, episodes)
    finally:
        torch.set_num_threads(threads)
    return dataset


def recorded_episodes(pieces: Sequence[tuple[Any, int]],
                      bag_spans: Mapping[Any, tuple[Sequence[tuple[int, int]], Sequence[int]]], dt: float,
                      max_stamp_error: float | None = None) -> int:
    """How many of the recording's episodes a dataset read bag by bag holds.

    ``pieces``: per episode of the dataset, in storage order, its bag and its id in that bag's reading
    (``PerBagTransitions.origins``); ``bag_spans``: per bag, what ``load_transitions`` reported of it: per
    episode id the stamps (ns) of its first state and of its last next state (``report["episode_spans"]``), and
    the reported episode boundaries (``report["reset_stamps"]``). The log cuts an episode where one transition
    is missing from it: the one that straddles a bag split (the trainer reads bag by bag, and counted every
    split as an episode: 14 for the car demo's 10) or one whose message was lost. A stored episode that starts
    one step (``dt``, within ``max_stamp_error``, default ``dt / 4``) after the one before it ended, with no
    reported reset between them, continues it and is not counted again. A piece without stamps counts alone.
    """
    step = int(round(dt * 1e9))
    tolerance = int(round((dt / 4.0 if max_stamp_error is None else max_stamp_error) * 1e9))
    boundaries = np.unique(np.asarray([stamp for bag in {bag for bag, _ in pieces}
                                       for stamp in bag_spans.get(bag, ((), ()))[1]], dtype=np.int64))
    count, previous_end = 0, None
    for bag, episode in pieces:
        spans = bag_spans.get(bag, ((), ()))[0]
        if episode >= len(spans):
            count, previous_end = count + 1, None
            continue
        start, end = spans[episode]
        continued = (previous_end is not None and abs(start - previous_end - step) <= tolerance
                     and np.searchsorted(boundaries, previous_end, side="right")
                     == np.searchsorted(boundaries, start, side="right"))
        count += not continued
        previous_end = end
    return count


@dataclass(frozen=True)
class _ChangeBounds:
    """Per state column, the largest change one step can make (inf: unbounded); angles wrapped."""

    limit: np.ndarray  # [nx]
    angle: np.ndarray  # [nx] bool

    def exceeded(self, values: np.ndarray, next_values: np.ndarray) -> np.ndarray:
        change = next_values - values
        change = np.where(self.angle, (change + np.pi) % (2 * np.pi) - np.pi, change)
        return np.any(np.abs(change) > self.limit, axis=1)


def _change_bounds(max_change: Mapping[str, float], state_names: Sequence[str], angle_dims: Sequence[int],
                   source: str) -> _ChangeBounds:
    limit = np.full(len(state_names), np.inf)
    for name, bound in max_change.items():
        if name not in state_names:
            raise ConfigError(f"{source}: key 'max_change.{name}': no state named {name!r} in {list(state_names)}")
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not bound > 0:
            raise ConfigError(f"{source}: key 'max_change.{name}' must be a number > 0, got {bound!r}")
        limit[list(state_names).index(name)] = float(bound)
    angle = np.zeros(len(state_names), dtype=bool)
    for k in angle_dims:
        if not 0 <= int(k) < len(state_names):
            raise ConfigError(f"{source}: angle_dims entry {k} is not a state index (0..{len(state_names) - 1})")
        angle[int(k)] = True
    return _ChangeBounds(limit, angle)


def episode_boundaries(path: Path, reports: _Raw, store: Typestore, dropped: Counter) -> list[int]:
    """The stamps (ns) where reported episodes start and end, from a bag's ``sim/episodes`` messages.

    A simulated driver reports each finished episode once (``mbrl_ros_hardware.sim_driver``): one
    DiagnosticStatus whose values hold ``start_stamp_ns`` and ``end_stamp_ns``; the states stamped
    in ``[start, end)`` belong to it. A transition from a state stamped before a boundary to one
    stamped at or after it spans a reset. A report that cannot be read is dropped and counted.
    """
    stamps = []
    for k in range(len(reports.offsets)):
        message = reports.buffer[reports.offsets[k]:reports.offsets[k] + reports.lengths[k]].tobytes()
        try:
            array = store.deserialize_cdr(message, reports.msgtype)
            for status in array.status:
                values = {kv.key: kv.value for kv in status.values}
                if "start_stamp_ns" in values or "end_stamp_ns" in values:
                    stamps += [int(values["start_stamp_ns"]), int(values["end_stamp_ns"])]
        except Exception as error:  # noqa: BLE001 - a malformed report is dropped alone, like any message
            reason = f"episode report unreadable: {type(error).__name__}"
            dropped[reason] += 1
            _log.warning("%s: topic '%s': dropped message %d: %s: %s", path, reports.topic, k, reason, error)
    return stamps


def messages_in_effect(
    bags: str | os.PathLike | Sequence[str | os.PathLike],
    topic: str,
    msgtype: str,
    at: Sequence[tuple[int, int]],
    *,
    stamp: str = "header.stamp",
    max_lag: float = 1.0,
    namespace: str | None = None,
    typestore: Typestore | None = None,
    report: dict | None = None,
) -> list[Any | None]:
    """For each ``(bag index, stamp ns)`` of ``at``: the message of ``topic`` in effect then, or None.

    In effect: the latest of that bag's ``topic`` messages stamped (``stamp``: a
    builtin_interfaces/Time field, or "log_time") at or before the stamp. By stamp, not
    log order: the logger repeats a latched message (a goal) at the start of every bag
    (``BagSequence``'s ``repeat_latched``) with the stamp it was sent with, so a repeat
    never overrides a newer message, and an episode continued in the next bag still
    finds the goal it began with there. Only the same bag's messages count: the next
    bag may be a new run whose clock restarted. ``at``: ``report["episode_starts"]``
    of ``load_transitions`` over the same ``bags``. The messages are rosbags' objects,
    whose fields are named as rclpy's messages' are.

    None where the bag has no ``topic`` of type ``msgtype`` (``report["no_topic"]``), no
    message stamped at or before (``"none_before"``), or where a malformed message may be
    the one in effect (``"malformed"``). A message that cannot be read is dropped alone,
    counted per reason in ``report["dropped"]`` (``{topic: {reason: count}}``) and logged
    as a warning naming the bag, topic, message and field. Its stamp is unknown, only that
    it was at or before its log time and, as a message is logged at most ``max_lag`` (s)
    after its stamp, not much earlier: at a stamp ``t`` where the latest readable message
    is stamped ``s``, one logged in ``(s, t + max_lag]`` may be newer and in effect, so
    ``t`` gets None rather than a goal that may be stale. ``report["found"]`` counts the rest.
    """
    paths = [Path(bags)] if isinstance(bags, (str, os.PathLike)) else [Path(p) for p in bags]
    counts: Counter[str] = Counter()
    dropped: dict[str, Counter[str]] = {}
    out: list[Any | None] = [None] * len(at)
    queries: dict[int, list[int]] = {}
    for k, (bag_index, _) in enumerate(at):
        queries.setdefault(int(bag_index), []).append(k)
    for bag_index, mine in sorted(queries.items()):
        path = paths[bag_index]
        _, store, raw = _read_raw(path, [], namespace, typestore, optional=TopicMap(topic, msgtype))
        if raw is None or not len(raw.offsets):
            counts["no_topic" if raw is None else "none_before"] += len(mine)
            continue
        where = f"{path}: topic '{raw.topic}' ({raw.msgtype})"
        stamp_paths = [] if stamp == "log_time" else [f"{stamp}.sec", f"{stamp}.nanosec"]
        bad: dict[int, str] = {}
        columns = ColumnReader(store, raw.msgtype).read(raw.buffer, raw.offsets, raw.lengths, stamp_paths, bad=bad)
        stamps = raw.log_ns.copy()
        if stamp_paths and len(bad) < len(stamps):  # (no columns when no message could be read)
            good = np.ones(len(stamps), dtype=bool)
            good[list(bad)] = False
            stamps[good] = (columns[stamp_paths[0]].astype(np.int64) * 1_000_000_000
                            + columns[stamp_paths[1]].astype(np.int64))[good]
        messages: list[Any | None] = []
        for k in range(len(raw.offsets)):
            message = None
            if k not in bad:
                data = raw.buffer[raw.offsets[k]:raw.offsets[k] + raw.lengths[k]].tobytes()
                try:
                    message = store.deserialize_cdr(data, raw.msgtype)
                except Exception as error:  # noqa: BLE001 - a malformed message is dropped alone
                    bad[k] = f"cannot deserialise: {type(error).__name__}: {error}"
            messages.append(message)
        for k, reason in sorted(bad.items()):
            dropped.setdefault(raw.topic, Counter())[reason] += 1
            _log.warning("%s: dropped message %d (logged at %d ns): %s", where, k, int(raw.log_ns[k]), reason)
        readable = np.asarray([m is not None for m in messages], dtype=bool)
        good = np.flatnonzero(readable)
        good = good[np.argsort(stamps[good], kind="stable")]  # equal stamps: the later logged one is in effect
        bad_logs = np.sort(raw.log_ns[~readable])
        lag_ns = int(round(max_lag * 1e9))
        for k in mine:
            t = int(at[k][1])
            before = int(np.searchsorted(stamps[good], t, side="right"))
            newest = int(stamps[good[before - 1]]) if before else np.iinfo(np.int64).min
            maybe_newer = np.searchsorted(bad_logs, newest, side="right")
            if maybe_newer < len(bad_logs) and bad_logs[maybe_newer] <= t + lag_ns:
                counts["malformed"] += 1
            elif not before:
                counts["none_before"] += 1
            else:
                out[k] = messages[int(good[before - 1])]
                counts["found"] += 1
    if report is not None:
        report.update(counts)
        report["dropped"] = {t: dict(reasons) for t, reasons in dropped.items()}
    return out


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
    max_change: Mapping[str, float] | None = None,
    angle_dims: Sequence[int] = (),
    typestore: Typestore | None = None,
    report: dict | None = None,
) -> "TransitionDataset":
    """``load_transitions`` of the stack's StateVector ``state_topic`` and CommandVector ``command_topic``."""
    return load_transitions(
        paths, stack_mapping(state_topic, command_topic), dt, max_stamp_error=max_stamp_error, max_jump=max_jump,
        jump_names=jump_names, max_change=max_change, angle_dims=angle_dims, state_names=state_names, action_names=action_names, typestore=typestore, report=report,
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
    """The rows of one side (state or command), decoded bag by bag; malformed messages dropped one by one."""

    def __init__(self, topic: TopicMap, names: Sequence[str] | None) -> None:
        self.topic = topic
        if topic.fields is not None:
            names = [f.name for f in topic.fields] if names is None else list(names)
        self.names = None if names is None else list(names)
        self.parts: list[_Rows] = []
        self.dropped: dict[str, Counter[str]] = {}  # topic -> reason -> messages
        self.first_drop: str | None = None  # the first dropped message, said in full
        self.read = 0  # messages decoded

    def decode(self, path: Path, bag_index: int, raw: _Raw, store: Typestore) -> None:
        if not len(raw.offsets):
            return
        where = f"{path}: topic '{raw.topic}' ({raw.msgtype})"
        if self.names is None:
            self.names = self._names_of(raw, store, where)
        fields = self.topic.fields or tuple(FieldMap(n, f"values[{n}]") for n in self.names)
        paths = []
        for f in fields:
            paths += [f"{f.field}.{c}" for c in "xyzw"] if f.convert == "yaw" else [f.field]
        stamp_paths = [] if self.topic.stamp == "log_time" else [f"{self.topic.stamp}.sec", f"{self.topic.stamp}.nanosec"]
        valid_path = ["valid"] if _has_bool(store, raw.msgtype, "valid") else []
        bad: dict[int, str] = {}
        columns = ColumnReader(store, raw.msgtype).read(raw.buffer, raw.offsets, raw.lengths,
                                                        paths + stamp_paths + valid_path, bad=bad)
        n = len(raw.offsets)
        keep = np.ones(n, dtype=bool)
        if bad:
            keep[list(bad)] = False
            self._report_drops(where, raw, bad)
        zeros = np.zeros(n)
        values = np.empty((n, len(fields)), dtype=np.float64)
        for k, f in enumerate(fields):
            if f.convert == "yaw":
                x, y, z, w = (columns.get(f"{f.field}.{c}", zeros).astype(np.float64) for c in "xyzw")
                # core.angles.yaw_from_quaternion's formula (robust to a non-normalised quaternion), by column
                column = np.arctan2(2.0 * (w * z + x * y), w * w + x * x - y * y - z * z)
            else:
                column = columns.get(f.field, zeros).astype(np.float64)
            values[:, k] = column * f.scale
        if stamp_paths:
            stamps = (columns.get(stamp_paths[0], zeros).astype(np.int64) * 1_000_000_000
                      + columns.get(stamp_paths[1], zeros).astype(np.int64))
        else:
            stamps = raw.log_ns
        valid = np.all(np.isfinite(values), axis=1)
        if valid_path:
            valid &= columns.get("valid", zeros) != 0
        self.read += int(keep.sum())
        if keep.any():
            self.parts.append(_Rows(np.full(int(keep.sum()), bag_index), raw.log_ns[keep], stamps[keep],
                                    values[keep], valid[keep]))

    def _names_of(self, raw: _Raw, store: Typestore, where: str) -> list[str]:
        """The names a names/values message is read by: those most of the bag's messages carry.

        Messages of one length almost always carry the same names, so one of
        each length is walked; a few malformed messages do not decide them.
        """
        votes: Counter[tuple[str, ...]] = Counter()
        first_error = None
        lengths, first, counts = np.unique(raw.lengths, return_index=True, return_counts=True)
        for k, count in zip(first, counts):
            try:
                layout = walk(raw.buffer[raw.offsets[k]:raw.offsets[k] + raw.lengths[k]], raw.msgtype, store)
            except LayoutError as error:
                first_error = first_error or f"message {int(k)}: {error}"
                continue
            try:
                names = layout.names_of("values")
            except LayoutError as error:
                raise BagError(f"{where}: {error}; give the topic's fields in the mapping") from None
            votes[tuple(names)] += int(count)
        if not votes:
            raise BagError(f"{where}: no message can be read, e.g. {first_error}")
        names = list(votes.most_common(1)[0][0])
        if len(set(names)) != len(names):
            raise BagError(f"{where}: repeated names in {names}")
        return names

    def _report_drops(self, where: str, raw: _Raw, bad: dict[int, str]) -> None:
        reasons = self.dropped.setdefault(raw.topic, Counter())
        by_reason: dict[str, list[int]] = {}
        for index, reason in sorted(bad.items()):
            by_reason.setdefault(reason, []).append(index)
        for reason, indices in by_reason.items():
            reasons[reason] += len(indices)
            first = indices[0]
            if self.first_drop is None:
                self.first_drop = f"{where}: message {first} (logged at {int(raw.log_ns[first])} ns): {reason}"
            _log.warning("%s: dropped %d of %d messages: %s (first: message %d, logged at %d ns)",
                         where, len(indices), len(raw.offsets), reason, first, int(raw.log_ns[first]))

    def check_any_read(self) -> None:
        """BagError if messages were found but none could be read: the mapping, not the messages, is wrong."""
        if self.first_drop is not None and not self.read:
            raise BagError(self.first_drop)

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
           max_jump: float, jump_idx: list[int], bounds: _ChangeBounds, boundaries: np.ndarray, counts: Counter):
    """(states, actions, next states, episode ids, and each state's bag index and stamp) from the decoded rows;
    counts what was dropped and why."""
    # Log order over all bags; a state stamped before the previous one starts a new
    # time line (a restarted simulator or clock), so that equal stamps of two runs
    # are never paired. A state stamped like the previous one is the same state re-sent.
    order = np.lexsort((states.log_ns, states.bags))
    stamps, values, valid, bags = states.stamps[order], states.values[order], states.valid[order], states.bags[order]
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

    stamps, values, valid, timeline, bags = stamps[keep], values[keep], valid[keep], timeline[keep], bags[keep]
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
    # A reported episode boundary between a state and its next one: the simulator was reset there.
    after = stamps[np.maximum(next_row, 0)]
    reset = ok & (np.searchsorted(boundaries, stamps, side="right") != np.searchsorted(boundaries, after, side="right"))
    ok &= ~reset
    counts["ended_reported_reset"] += int(reset.sum())
    # A change no dynamics can make in one step: a reset too (the report may be missing, e.g. a real robot).
    next_values = values[np.maximum(next_row, 0)]
    jumped = bounds.exceeded(values, next_values)
    if jump_idx:
        jumped |= np.linalg.norm(next_values[:, jump_idx] - values[:, jump_idx], axis=1) > max_jump
    jumped &= ok
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
    return (values[rows], cvalues[action_row[rows]], values[next_row[rows]], np.asarray(episode_ids, dtype=np.int64),
            bags[rows], stamps[rows], stamps[next_row[rows]])


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


# ---- reading: bag -> the wanted topics' messages ------------------------------------------------
def _read_raw(path: Path, wanted: list[TopicMap], namespace: str | None, base: Typestore | None,
              optional: TopicMap | None = None) -> tuple[list[_Raw], Typestore, _Raw | None]:
    """The messages of each wanted topic of the bag at ``path``, the typestore to decode them with, and
    the messages of the ``optional`` topic (the episode reports, a goal): None where the bag has no such
    topic of that type.

    Read from the storage files directly (``bag_storage``), never through
    rosbags' Reader, which yields nothing for bags whose metadata.yaml and
    storage disagree on a topic's QoS (bags of earlier ``ros2 bag`` releases).
    What is read is checked against metadata.yaml's count: storage holding
    fewer messages than the bag says it was closed with is an error, not a
    silent loss.
    """
    try:
        bag = StorageBag(path)
        bag.open()
    except BagError as error:
        reason = str(error).removeprefix(f"{path}: ")
        raise BagError(f"{path}: cannot read bag: {reason}") from None
    try:
        found, topics = [], []
        for topic_map in wanted:
            topic = _find_topic(bag.topics, topic_map.topic, namespace, path)
            if topic.type != topic_map.type:
                raise BagError(f"{path}: topic '{topic.name}' has type {topic.type}, expected {topic_map.type}")
            if topic.name in topics:
                raise BagError(f"{path}: '{topic_map.topic}' names the same topic '{topic.name}' as another input")
            found.append(topic)
            topics.append(topic.name)
        extra = _optional_topic(bag.topics, optional, namespace, path)
        if extra is not None and extra.name not in topics:
            found.append(extra)
            topics.append(extra.name)
        else:
            extra = None
        store, status = bag_typestore({t.type: (t.definition_format, t.definition) for t in found if t.definition},
                                      tuple(t.type for t in found), base)
        for topic in found:
            if status[topic.type].endswith(UNKNOWN):
                raise BagError(f"{path}: topic '{topic.name}' has type {topic.type}, which is neither defined in "
                               f"the bag nor built in here ({status[topic.type]})")
        try:
            packed = bag.read(topics)
        except BagError:
            raise
        except Exception as error:  # a damaged storage file
            raise BagError(f"{path}: cannot read messages of {topics}: {type(error).__name__}: {error}") from error
        listed = {t.name: t.count for t in bag.metadata.topics}
        for topic, raw in zip(found, packed):
            if topic.count is not None and topic.count != len(raw):
                raise BagError(f"{path}: topic '{topic.name}': the storage counts {topic.count} messages but "
                               f"{len(raw)} were read; the storage files are damaged")
            expected = listed.get(topic.name)
            if expected is not None and expected > len(raw):
                raise BagError(f"{path}: topic '{topic.name}': metadata.yaml counts {expected} messages but the "
                               f"storage files yield {len(raw)}; the bag's metadata and storage disagree")
        raws = [_Raw(p.topic, t.type, p.buffer, p.offsets, p.lengths, p.log_ns) for p, t in zip(packed, found)]
        return raws[:len(wanted)], store, (raws[-1] if extra is not None else None)
    finally:
        bag.close()


def _optional_topic(topics: Mapping[str, StorageTopic], query: TopicMap | None, namespace: str | None,
                    path: Path) -> StorageTopic | None:
    """The bag's topic ``query.topic`` if it has one of ``query.type``, else None."""
    if query is None:
        return None
    try:
        topic = _find_topic(topics, query.topic, namespace, path)
    except BagError:  # not recorded (a real robot), or ambiguous: episodes are split by the other rules
        return None
    return topic if topic.type == query.type else None


def _find_topic(topics: Mapping[str, StorageTopic], query: str, namespace: str | None, path: Path) -> StorageTopic:
    """The bag's topic ``query``: an exact full name, or the one topic ending in ``/query``."""
    if namespace is not None and not query.startswith("/"):
        query = namespace.rstrip("/") + "/" + query
    if query in topics:
        return topics[query]
    ending = [name for name in topics if not query.startswith("/") and name.endswith("/" + query)]
    if len(ending) > 1:
        raise BagError(f"{path}: topic '{query}' is ambiguous, it matches {sorted(ending)}; give the full name")
    if not ending:
        raise BagError(f"{path}: no topic '{query}' in the bag (topics: {sorted(topics)})")
    return topics[ending[0]]
