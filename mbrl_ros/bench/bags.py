"""``mbrl-ros bench bags``: bag to transition tensors, messages per second.

Writes bags into a temporary folder (the stack's StateVector/CommandVector in
MCAP and sqlite3, and an F1TENTH-style recording of raw nav_msgs/Odometry at
50 Hz with ackermann_msgs/AckermannDriveStamped at 20 Hz), then times
``load_transitions`` on each, several runs after one warm-up, and beside it in
the same run the earlier way of reading (rosbags' ``deserialize_cdr`` per
message), on the same bags. Messages per second = messages read / median time.
Target (issue 4): >= 100,000 messages per second.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from mbrl_ros.io.bags import COMMAND_TYPE, STATE_TYPE, STORAGES, default_typestore, load_transitions, stack_mapping

TARGET_MSGS_PER_S = 100_000
T0 = 1_700_000_000 * 10**9
F1TENTH_MAPPING = {
    "state": {"topic": "odom", "type": "nav_msgs/msg/Odometry",
              "fields": {"x": "pose.pose.position.x", "y": "pose.pose.position.y",
                         "yaw": {"field": "pose.pose.orientation", "convert": "yaw"}, "v": "twist.twist.linear.x"}},
    "command": {"topic": "drive", "type": "ackermann_msgs/msg/AckermannDriveStamped", "match": "latest",
                "fields": {"u_speed": "drive.speed", "u_steer": "drive.steering_angle"}},
}


def _header(store, t: int):
    Time = store.types["builtin_interfaces/msg/Time"]
    return store.types["std_msgs/msg/Header"](stamp=Time(sec=t // 10**9, nanosec=t % 10**9), frame_id="map")


def write_stack_bag(path: Path, steps: int, storage: str, progress: bool = True) -> int:
    """The stack's state and command at 5 Hz for ``steps`` steps; returns the message count."""
    from rosbags.rosbag2 import Writer
    from tqdm import tqdm

    store = default_typestore()
    state_type, command_type = store.types[STATE_TYPE], store.types[COMMAND_TYPE]
    rng = np.random.default_rng(0)
    with Writer(path, version=9, storage_plugin=STORAGES[storage]) as writer:
        state_conn = writer.add_connection("/car/state", STATE_TYPE, typestore=store)
        command_conn = writer.add_connection("/car/hw/command", COMMAND_TYPE, typestore=store)
        for k in tqdm(range(steps), desc=f"writing {path.name}", unit="step", disable=not progress):
            t = T0 + k * 200_000_000
            state = state_type(header=_header(store, t), names=["x", "y", "yaw", "v", "steer"],
                               values=rng.normal(size=5) * 0.1 + [0.01 * k, 0, 0, 1, 0], valid=True, reason="")
            command = command_type(header=_header(store, t), names=["u_accel", "u_steer"], values=rng.normal(size=2))
            writer.write(state_conn, t + 1_000_000, bytes(store.serialize_cdr(state, STATE_TYPE)))
            writer.write(command_conn, t + 5_000_000, bytes(store.serialize_cdr(command, COMMAND_TYPE)))
    return 2 * steps


def write_f1tenth_bag(path: Path, seconds: float, progress: bool = True) -> int:
    """Raw odometry at 50 Hz and Ackermann drive commands at 20 Hz; returns the message count."""
    from rosbags.rosbag2 import Writer
    from tqdm import tqdm

    store = default_typestore()
    T = store.types
    count = 0
    with Writer(path, version=9, storage_plugin=STORAGES["mcap"]) as writer:
        odom_conn = writer.add_connection("/odom", "nav_msgs/msg/Odometry", typestore=store)
        drive_conn = writer.add_connection("/drive", "ackermann_msgs/msg/AckermannDriveStamped", typestore=store)
        for k in tqdm(range(int(seconds * 100)), desc=f"writing {path.name}", unit="tick", disable=not progress):
            t = T0 + k * 10_000_000  # a 100 Hz tick: odometry every 2nd, drive every 5th
            if k % 2 == 0:
                yaw = 0.01 * k
                pose = T["geometry_msgs/msg/Pose"](
                    position=T["geometry_msgs/msg/Point"](x=np.cos(yaw), y=np.sin(yaw), z=0.0),
                    orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=np.sin(yaw / 2), w=np.cos(yaw / 2)))
                zero = T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0)
                twist = T["geometry_msgs/msg/Twist"](linear=T["geometry_msgs/msg/Vector3"](x=1.0, y=0.0, z=0.0), angular=zero)
                odom = T["nav_msgs/msg/Odometry"](
                    header=_header(store, t), child_frame_id="base_link",
                    pose=T["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=np.zeros(36)),
                    twist=T["geometry_msgs/msg/TwistWithCovariance"](twist=twist, covariance=np.zeros(36)))
                writer.write(odom_conn, t + 500_000, bytes(store.serialize_cdr(odom, "nav_msgs/msg/Odometry")))
                count += 1
            if k % 5 == 0:
                drive = T["ackermann_msgs/msg/AckermannDriveStamped"](
                    header=_header(store, t),
                    drive=T["ackermann_msgs/msg/AckermannDrive"](steering_angle=0.1, steering_angle_velocity=0.0,
                                                                 speed=1.0, acceleration=0.0, jerk=0.0))
                writer.write(drive_conn, t, bytes(store.serialize_cdr(drive, "ackermann_msgs/msg/AckermannDriveStamped")))
                count += 1
    return count


def per_message_deserialize(path: Path) -> int:
    """The earlier way: one rosbags object per message, its stamp and values copied out (decoding only)."""
    from rosbags.rosbag2 import Reader

    store = default_typestore()
    stamps, values = [], []
    with Reader(path) as reader:
        for conn, _log, raw in reader.messages():
            msg = store.deserialize_cdr(raw, conn.msgtype)
            stamps.append(msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)
            values.append(np.asarray(msg.values, dtype=np.float64))
    return len(stamps)


def _time(fn, runs: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU seconds of ``runs`` calls after one warm-up.

    CPU seconds of this process are reported beside wall time because the
    machine may be shared: wall time then includes waiting for a core.
    """
    fn()  # warm-up: imports, typestore, first reads of the files
    wall, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def _row(name: str, messages: int, samples: tuple[list[float], list[float]], transitions: int | None) -> dict:
    wall, cpu = samples
    median = float(np.median(wall))
    return {"name": name, "messages": messages, "transitions": transitions, "runs": len(wall),
            "median_s": median, "p99_s": float(np.percentile(wall, 99)), "msgs_per_s": messages / median,
            "median_cpu_s": float(np.median(cpu)), "msgs_per_cpu_s": messages / float(np.median(cpu))}


def main(steps: int = 50_000, runs: int = 7, json_path: str | None = None, keep: str | None = None) -> int:
    folder = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="mbrl_bench_bags_"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"bags in {folder}; {steps} steps per stack bag; {runs} timed runs after one warm-up; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    bags = {}
    for storage in ("mcap", "sqlite3"):
        path = folder / f"stack_{storage}"
        bags[f"stack {storage}"] = (path, write_stack_bag(path, steps, storage) if not path.exists() else 2 * steps)
    f1tenth = folder / "f1tenth_mcap"
    bags["f1tenth mcap (odom 50 Hz, drive 20 Hz)"] = (
        f1tenth, write_f1tenth_bag(f1tenth, steps * 2 / 70) if not f1tenth.exists() else None)

    results = []
    print(f"{'case':44s} {'messages':>9s} {'transitions':>11s} {'median s':>9s} {'p99 s':>7s} {'msgs/s':>10s} "
          f"{'cpu s':>7s} {'msgs/cpu s':>11s}")
    for name, (path, messages) in bags.items():
        f1 = name.startswith("f1tenth")
        report: dict = {}

        def read(path=path, f1=f1, report=report):
            if f1:
                return load_transitions(path, F1TENTH_MAPPING, 0.1, state_names=["x", "y", "yaw", "v"], report=report)
            return load_transitions(path, stack_mapping(), 0.2, report=report)

        samples = _time(read, runs)
        messages = messages or report["states"] + report["commands"]
        results.append(_row(name, messages, samples, report["transitions"]))
        if not f1:
            base = _time(lambda path=path: per_message_deserialize(path), max(2, runs // 2))
            results.append(_row(f"  earlier: rosbags deserialize per message", messages, base, None))
            results[-1]["of"] = name
        for r in results[-2 if not f1 else -1:]:
            print(f"{r['name']:44s} {r['messages']:9d} {r['transitions'] or '':>11} {r['median_s']:9.3f} "
                  f"{r['p99_s']:7.3f} {r['msgs_per_s']:10.0f} {r['median_cpu_s']:7.3f} {r['msgs_per_cpu_s']:11.0f}",
                  flush=True)
    for r in results:
        if "of" in r:
            ours = next(x for x in results if x["name"] == r["of"])
            r["speedup_of_load_transitions"] = ours["msgs_per_s"] / r["msgs_per_s"]
            print(f"{r['of']}: load_transitions is {r['speedup_of_load_transitions']:.1f}x the per-message decode alone")
    worst = min(r["msgs_per_s"] for r in results if "of" not in r)
    worst_cpu = min(r["msgs_per_cpu_s"] for r in results if "of" not in r)
    print(f"slowest case {worst:,.0f} msgs/s wall ({worst_cpu:,.0f} per CPU second); target >= "
          f"{TARGET_MSGS_PER_S:,} msgs/s: {'met' if worst >= TARGET_MSGS_PER_S else 'NOT met'} in wall time; "
          f"load average now {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    out = {"target_msgs_per_s": TARGET_MSGS_PER_S, "cpu_count": os.cpu_count(), "loadavg_1min": os.getloadavg()[0],
           "steps": steps, "runs": runs, "cases": results}
    if json_path:
        Path(json_path).write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {json_path}")
    return 0
