"""``mbrl-ros replay``: republish a bag as it was recorded, with ``/clock``, for nodes on sim time.

Messages go out as the serialised bytes stored in the bag (rclpy publishers take
``bytes``), so any message type replays without being decoded. Each message is
published at its recorded log time, scaled by ``--rate``, and ``/clock`` carries
that bag time (before every message, and ``--clock-rate`` times a second in
between), so nodes with ``use_sim_time`` see the recording's time line. The log time is
when the recorder received a message, which bunches under load (the lockstep
stack's logger can receive several steps at one instant, and a burst overflows
a depth-5 sensor queue); ``--by-stamp`` times messages by their header stamps
instead, as they were measured.

Each topic is offered with the QoS it was recorded with (``offered_qos_profiles``
as the storage holds it; with several publishers, the weakest, as the data_logger
subscribes): sensor streams stay best effort, the stack's latched topics
(goal, episodes, model) stay transient-local.

Bags are read through ``mbrl_ros.io.bag_storage`` (the storage files themselves), not
rosbags' Reader, which yields nothing for a topic whose QoS in metadata.yaml differs
from the storage's (bags of earlier ``ros2 bag`` releases): every message in storage replays.

A publisher still needs the message's Python class, and the stack's own types
(``mbrl_interfaces``) come from the colcon workspace, whose libraries must be on
the environment when the process starts. So when a type cannot be imported the
command re-executes itself once in ``workspace_env()`` (``ros_env.reexec_in_workspace``).
"""

from __future__ import annotations

import argparse
import heapq
import importlib
import math
import queue
import signal
import struct
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from rosbags.interfaces import QosDurability, QosReliability
from rosbags.rosbag2.metadata import parse_qos
from tqdm import tqdm

from mbrl_ros.io.bag_storage import StorageBag, StorageTopic
from mbrl_ros.io.bags import BagError, default_typestore
from mbrl_ros.offline.bag_paths import find_bags

CLOCK_TOPIC = "/clock"


class ReplayError(ValueError):
    """The bag or the options cannot be replayed; the message names the bag or topic."""


@dataclass
class TopicPlan:
    """One topic to replay: its type and the QoS its recording publishers offered."""

    name: str
    msgtype: str
    reliable: bool
    transient_local: bool
    depth: int


def plan_topics(bags: list[Path], wanted: list[str] | None) -> dict[str, TopicPlan]:
    """The topics to publish, by full name, checked across all ``bags``."""
    found: dict[str, TopicPlan] = {}
    for bag in bags:
        with StorageBag(bag) as storage:
            for topic in storage.topics.values():
                plan = _plan(topic)
                known = found.setdefault(topic.name, plan)
                if known.msgtype != plan.msgtype:
                    raise ReplayError(f"{bag}: topic '{topic.name}' has type {plan.msgtype}, "
                                      f"an earlier bag has {known.msgtype}")
                known.reliable &= plan.reliable
                known.transient_local &= plan.transient_local
                known.depth = max(known.depth, plan.depth)
    if wanted is None:
        return found
    chosen = {}
    for query in wanted:
        matches = [t for t in found if t == query] or \
            ([t for t in found if t.endswith("/" + query)] if not query.startswith("/") else [])
        if not matches:
            raise ReplayError(f"{bags[0]}: no topic '{query}' in the bag (topics: {sorted(found)})")
        if len(matches) > 1:
            raise ReplayError(f"{bags[0]}: topic '{query}' is ambiguous, it matches {matches}; give the full name")
        chosen[matches[0]] = found[matches[0]]
    return chosen


def _plan(topic: StorageTopic) -> TopicPlan:
    try:
        profiles = parse_qos(topic.qos) if topic.qos.strip() else []
    except Exception:  # a partial or odd profile (rosbag2_py users write those): as if none was recorded
        profiles = []
    if not profiles:  # not recorded: the ROS default (reliable, volatile, depth 10)
        return TopicPlan(topic.name, topic.type, True, False, 10)
    return TopicPlan(
        topic.name, topic.type,
        reliable=all(p.reliability == QosReliability.RELIABLE for p in profiles),
        transient_local=all(p.durability == QosDurability.TRANSIENT_LOCAL for p in profiles),
        depth=max(1, max(int(p.depth) for p in profiles)),
    )


def message_class(msgtype: str):
    """The Python class of ``pkg/msg/Name``; ImportError if its package is not importable here."""
    package, _, name = msgtype.split("/")
    module = importlib.import_module(f"{package}.msg")
    try:
        return getattr(module, name)
    except AttributeError:
        raise ImportError(f"{package}.msg has no message {name}") from None


def missing_types(plans: dict[str, TopicPlan]) -> list[str]:
    missing = []
    for plan in plans.values():
        try:
            message_class(plan.msgtype)
        except ImportError:
            missing.append(plan.msgtype)
    return sorted(set(missing))


def recorded(bags: list[Path], topics) -> Iterator[tuple[str, int, bytes]]:
    """``(topic, log time ns, serialised message)`` of ``topics`` in the bags' log order."""
    for bag in bags:
        with StorageBag(bag) as storage:
            yield from storage.messages(list(topics))


def prefetched(messages: Iterator, depth: int = 10_000) -> Iterator:
    """``messages`` read ahead by a thread, so opening the next bag does not stall the timing loop."""
    ahead: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def read() -> None:
        try:
            for item in messages:
                while not stop.is_set():
                    try:
                        ahead.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except Exception as error:  # handed over to the consumer, raised there
            ahead.put(error)
        ahead.put(done)

    thread = threading.Thread(target=read, name="bag-reader", daemon=True)
    thread.start()
    try:
        while (item := ahead.get()) is not done:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        stop.set()


def header_stamp_ns(data: bytes) -> int | None:
    """The ``header.stamp`` of a serialised message whose first field is a std_msgs/Header (None if unset)."""
    if len(data) < 12:
        return None
    order = "<" if data[1] == 1 else ">"  # CDR encapsulation: 0x0001 little endian, 0x0000 big endian
    sec, nanosec = struct.unpack_from(order + "iI", data, 4)
    return sec * 1_000_000_000 + nanosec if sec > 0 or nanosec > 0 else None


def stamped_types(plans: dict[str, TopicPlan]) -> set[str]:
    """The topics whose messages start with a std_msgs/Header (types the typestore knows)."""
    fielddefs = default_typestore().fielddefs
    return {topic for topic, plan in plans.items()
            if plan.msgtype in fielddefs and fielddefs[plan.msgtype][1]
            and fielddefs[plan.msgtype][1][0][1][1] == "std_msgs/msg/Header"}


def by_header_stamp(messages: Iterator[tuple[str, int, bytes]], stamped: set[str], window_ns: int,
                    tie_order: dict[str, int] | None = None) -> Iterator[tuple[str, int, bytes]]:
    """``messages`` re-timed by their header stamps (log time where a message has none), in that order.

    A recorder logs the time it received a message, which lags and bunches under
    load (several steps received at one instant), and not always in the order
    they were sent; the header stamps are when the data was taken. Messages are
    held back until the log time is ``window_ns`` past their stamp, so any message
    received up to that much later than stamped is put in its place. Messages of
    one stamp go in ``tie_order`` of their topics (``replay_tie_order``: an episode's
    report before the first odometry of the next, odometry before the command
    stamped with it, which answers it), then in log order.
    """
    rank = tie_order or {}
    held: list[tuple[int, int, int, str, bytes]] = []
    for sequence, (topic, log_ns, data) in enumerate(messages):
        stamp = header_stamp_ns(data) if topic in stamped else None
        heapq.heappush(held, (log_ns if stamp is None else stamp, rank.get(topic, 0), sequence, topic, data))
        while held and held[0][0] < log_ns - window_ns:
            time_ns, _, _, ready, ready_data = heapq.heappop(held)
            yield ready, time_ns, ready_data
    while held:
        time_ns, _, _, ready, ready_data = heapq.heappop(held)
        yield ready, time_ns, ready_data


def replay_tie_order(plans: dict[str, TopicPlan], given: bool) -> dict[str, int]:
    """The order of ``by_header_stamp`` for messages of one stamp: latched (transient-local) topics first,
    then the others; within each, in the order of ``plans`` where the topics were ``given`` (``--topics``),
    else as logged.

    A latched message stamped T holds from T on (an episode's end and the next one's start, its goal), and
    a live publisher sends it before the data stamped T: the lockstep simulator publishes an episode's
    ``sim/episodes`` report (``end_stamp_ns`` T) and the next goal, then that episode's first odometry,
    stamped T too. The car estimator restarts the steering straight at the first sample stamped at or after
    a report's end; a report replayed after that sample came too late for it, and the replay then differed
    from the live run in every episode's first state. The recorder's log order is no guide at one stamp:
    a loaded lockstep logger receives a step's messages bunched, in the order of its subscriptions."""
    position = {topic: k for k, topic in enumerate(plans)} if given else {}
    return {topic: (0 if plan.transient_local else len(plans)) + position.get(topic, 0)
            for topic, plan in plans.items()}


def replay(bags: list[Path], plans: dict[str, TopicPlan], *, rate: float = 1.0, loop: bool = False,
           clock: bool = True, clock_rate: float = 100.0, delay: float = 0.0, wait_for_subscribers: int = 0,
           by_stamp: bool = False, stamp_window: float = 5.0, min_gap: float = 0.0,
           tie_order: dict[str, int] | None = None) -> dict:
    """Publish the planned topics of ``bags`` in time; returns counts. Ctrl-C (or SIGTERM) stops it.

    ``wait_for_subscribers``: first wait until each topic has that many matched
    subscriptions; then ``delay`` wall seconds; then the first message.
    ``by_stamp``: time messages by their header stamps (``by_header_stamp``, ties in ``tie_order``),
    not by when they were logged.
    ``min_gap``: wall seconds at least between two messages, even of one instant, so a subscriber
    whose result depends on the order it handles messages in (the estimator: odometry, then the
    command that answers it) handles one before the next arrives.
    """
    import rclpy
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions
    from rosgraph_msgs.msg import Clock

    from mbrl_ros.ros.stamps import ns_to_stamp

    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)  # Ctrl-C stays a KeyboardInterrupt here
    node = rclpy.create_node("bag_replay")
    publishers = {}
    for topic, plan in plans.items():
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=plan.depth,
                         reliability=ReliabilityPolicy.RELIABLE if plan.reliable else ReliabilityPolicy.BEST_EFFORT,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL if plan.transient_local
                         else DurabilityPolicy.VOLATILE)
        publishers[topic] = node.create_publisher(message_class(plan.msgtype), topic, qos)
    clock_pub = node.create_publisher(Clock, CLOCK_TOPIC, 10) if clock else None
    counts = {"messages": 0, "passes": 0, "position_s": 0.0, "bag_seconds": 0.0, "wall_seconds": 0.0}
    last_clock = [None]

    def publish_clock(bag_ns: int) -> None:
        # Never backwards within a pass (a message stamped before the window): the clock waits instead.
        if clock_pub is not None and (last_clock[0] is None or bag_ns > last_clock[0]):
            msg = Clock(clock=ns_to_stamp(bag_ns))
            clock_pub.publish(msg)
            last_clock[0] = bag_ns

    start_ns, end_ns = _time_span(bags, publishers)
    tick = 1.0 / clock_rate
    bar = tqdm(total=round((end_ns - start_ns) * 1e-9, 1), unit="s", desc="replay", disable=None,
               bar_format="{desc}: {n:.1f}/{total} s of bag time [{elapsed}{postfix}]")
    started_wall = time.monotonic()
    try:
        # Said once the node and its publishers exist and Ctrl-C ends in the summary below: a Ctrl-C during
        # rclpy's start-up (the line printed before it) once left the process running past its 20 s (CI).
        topics = ", ".join(f"{t} ({'latched' if p.transient_local else 'reliable' if p.reliable else 'best effort'})"
                           for t, p in sorted(plans.items()))
        print(f"[replay] {len(bags)} bag(s) at rate {rate}: {topics}"
              + (f"; publishing {CLOCK_TOPIC}" if clock else ""), flush=True)
        _wait_for_subscribers(publishers, wait_for_subscribers)
        if delay > 0:
            time.sleep(delay)
        started_wall = time.monotonic()  # the replay's own time, without the delay
        stamped = stamped_types(plans) if by_stamp else set()
        while True:
            counts["passes"] += 1
            pass_wall, first_ns, published_at = time.monotonic(), None, -math.inf
            messages = recorded(bags, publishers)
            if by_stamp:
                messages = by_header_stamp(messages, stamped, int(stamp_window * 1e9), tie_order)
            messages = prefetched(messages)
            for topic, time_ns, data in messages:
                first_ns = time_ns if first_ns is None else first_ns
                target = max(pass_wall + (time_ns - first_ns) * 1e-9 / rate, published_at + min_gap)
                while (now := time.monotonic()) < target:
                    publish_clock(min(time_ns, first_ns + int((now - pass_wall) * rate * 1e9)))
                    time.sleep(min(target - now, tick))
                publish_clock(time_ns)
                publishers[topic].publish(bytes(data))
                published_at = time.monotonic()
                counts["messages"] += 1
                bag_s = counts["position_s"] = (time_ns - first_ns) * 1e-9
                if bar.n + 0.1 <= bag_s:
                    bar.update(round(bag_s - bar.n, 1))
                    wall = time.monotonic() - pass_wall
                    bar.set_postfix_str(f"rate {bag_s / wall:.2f}x, {counts['messages']} msgs" if wall > 0 else "")
            counts["bag_seconds"] += counts["position_s"]
            if not loop:
                break
            bar.reset()
            last_clock[0] = None  # the next pass starts the bag's time line again
    except KeyboardInterrupt:
        print(f"[replay] stopped after {counts['messages']} messages, at {counts['position_s']:.1f} s of bag time "
              f"(pass {counts['passes']})", file=sys.stderr, flush=True)
        counts["interrupted"] = True
    finally:
        bar.close()
        counts["wall_seconds"] = time.monotonic() - started_wall
        _drain(publishers)
        node.destroy_node()
        rclpy.try_shutdown()
    return counts


def _drain(publishers: dict, timeout: float = 2.0, linger: float = 0.3) -> None:
    """Let the last messages reach their subscribers before the node goes.

    Destroying a publisher right after its last ``publish`` loses what is still
    in flight (the CI lost the last message of a bag one run in three): reliable
    publishers wait until every subscriber acknowledged (at most ``timeout``),
    best-effort ones, which get no acknowledgement, for ``linger`` seconds.
    """
    from rclpy.duration import Duration
    from rclpy.qos import ReliabilityPolicy

    deadline = time.monotonic() + timeout
    for publisher in publishers.values():
        if publisher.qos_profile.reliability == ReliabilityPolicy.RELIABLE:
            publisher.wait_for_all_acked(Duration(seconds=max(0.0, deadline - time.monotonic())))
    time.sleep(linger)


def _wait_for_subscribers(publishers: dict, count: int) -> None:
    said = 0.0
    while count and (waiting := [t for t, p in publishers.items() if p.get_subscription_count() < count]):
        if time.monotonic() - said > 5.0:
            print(f"[replay] waiting for {count} subscriber(s) on {waiting}", file=sys.stderr, flush=True)
            said = time.monotonic()
        time.sleep(0.05)


def _time_span(bags: list[Path], topics) -> tuple[int, int]:
    """(start, end) of the bags as metadata.yaml says, for the progress bar; ReplayError if the storage
    holds no message of ``topics`` (its own counts, not metadata.yaml's)."""
    starts, ends, stored = [], [], 0
    for bag in bags:
        with StorageBag(bag) as storage:
            counts = storage.count_messages()
            stored += sum(counts.get(t) or 0 for t in topics) + sum(counts.get(t) is None for t in topics)
            starts.append(storage.metadata.start_ns)
            ends.append(storage.metadata.start_ns + storage.metadata.duration_ns)
    if not stored:
        raise ReplayError(f"{', '.join(map(str, bags))}: no messages to replay")
    return min(starts), max(ends)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(args: argparse.Namespace) -> int:
    if not args.rate > 0:
        print(f"mbrl-ros replay: error: --rate must be > 0, got {args.rate}", file=sys.stderr)
        return 2
    if not args.min_gap >= 0:
        print(f"mbrl-ros replay: error: --min-gap must be >= 0, got {args.min_gap}", file=sys.stderr)
        return 2
    if not args.clock_rate > 0:
        print(f"mbrl-ros replay: error: --clock-rate must be > 0, got {args.clock_rate}", file=sys.stderr)
        return 2
    try:
        bags = find_bags(args.bags)
        plans = plan_topics(bags, args.topics)
        if not args.no_clock and CLOCK_TOPIC in plans:
            print(f"[replay] not replaying the bag's {CLOCK_TOPIC}: the replay publishes its own "
                  "(--no-clock replays the recorded one)", file=sys.stderr)
            del plans[CLOCK_TOPIC]
        missing = missing_types(plans)
        if missing:
            from mbrl_ros.ros_env import WorkspaceNotBuiltError, reexec_in_workspace

            try:
                reexec_in_workspace(args.argv, f"cannot import the bag's message type(s) {missing}")
            except WorkspaceNotBuiltError as error:
                raise ReplayError(str(error)) from None
        signal.signal(signal.SIGTERM, _raise_interrupt)  # stop as cleanly as on Ctrl-C
        counts = replay(bags, plans, rate=args.rate, loop=args.loop, clock=not args.no_clock,
                        clock_rate=args.clock_rate, delay=args.delay, wait_for_subscribers=args.wait_for_subscribers,
                        by_stamp=args.by_stamp, min_gap=args.min_gap,
                        tie_order=replay_tie_order(plans, given=bool(args.topics)))
    except (ReplayError, BagError) as error:
        print(f"mbrl-ros replay: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the first message (reading the bags, rclpy's start-up)
        print("[replay] stopped before replaying: nothing published", file=sys.stderr, flush=True)
        return 0
    print(f"[replay] published {counts['messages']} messages: {counts['bag_seconds']:.2f} s of bag time in "
          f"{counts['wall_seconds']:.2f} s", flush=True)
    return 0
