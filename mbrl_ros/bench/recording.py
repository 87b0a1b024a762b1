"""``mbrl-ros bench recording``: what flushing costs the logger's write throughput.

Writes the same serialised nav_msgs/Odometry message (about 0.7 kB, the stack's
largest stream) N times through ``BagRecorder``, as fast as it goes, with no
flush, with a flush every 0.5 s (the data_logger's default ``flush_period``) and
every 10 ms (a worst case), for both storages. Cases are interleaved within
each repeat, so a loaded machine slows them alike; the ratio is taken in the
same run. Prints median and p99 msgs/s per case, and JSON with ``--json``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from mbrl_ros.io.bags import default_typestore
from mbrl_ros.io.recording import BagRecorder

FLUSH_PERIODS = {"none": None, "0.5s": 0.5, "10ms": 0.01}


def odometry_cdr() -> bytes:
    """A serialised nav_msgs/Odometry as the sim driver publishes it (covariances included)."""
    store = default_typestore()
    t = store.types
    vector = t["geometry_msgs/msg/Vector3"](x=1.0, y=2.0, z=0.0)
    odom = t["nav_msgs/msg/Odometry"](
        header=t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="map"),
        child_frame_id="base_link",
        pose=t["geometry_msgs/msg/PoseWithCovariance"](
            pose=t["geometry_msgs/msg/Pose"](position=t["geometry_msgs/msg/Point"](x=1.0, y=2.0, z=0.0),
                                             orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)),
            covariance=np.zeros(36)),
        twist=t["geometry_msgs/msg/TwistWithCovariance"](
            twist=t["geometry_msgs/msg/Twist"](linear=vector, angular=vector), covariance=np.zeros(36)),
    )
    return bytes(store.serialize_cdr(odom, "nav_msgs/msg/Odometry"))


def write_rate(path: Path, storage: str, messages: int, flush_period: float | None, raw: bytes) -> float:
    """Messages per second written (and closed) with a flush every ``flush_period`` wall seconds."""
    started = time.perf_counter()
    next_flush = started + (flush_period or 0.0)
    with BagRecorder(path, storage=storage, typestore=default_typestore()) as bag:
        bag.add_topic("/car/hw/odom", "nav_msgs/msg/Odometry")
        for i in range(messages):
            bag.write("/car/hw/odom", 10**9 + i * 10**6, raw)
            if flush_period is not None and (now := time.perf_counter()) >= next_flush:
                bag.flush()
                next_flush = now + flush_period
    return messages / (time.perf_counter() - started)


def main(messages: int = 100_000, repeats: int = 5, json_path: str | None = None) -> int:
    raw = odometry_cdr()
    rates: dict[str, list[float]] = {f"{s}/{f}": [] for s in ("mcap", "sqlite3") for f in FLUSH_PERIODS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for case in rates:
                storage, flush = case.split("/")
                rates[case].append(write_rate(Path(tmp) / f"{r}_{storage}_{flush}", storage, messages,
                                              FLUSH_PERIODS[flush], raw))
    result = {"messages": messages, "repeats": repeats, "message_bytes": len(raw), "cases": {}}
    print(f"{messages} messages of {len(raw)} B, {repeats} repeats; msgs/s (p99 = the slow end)")
    for case, values in rates.items():
        storage = case.split("/")[0]
        median = float(np.median(values))
        baseline = float(np.median(rates[f"{storage}/none"]))
        entry = {"median_msgs_per_s": median, "p99_msgs_per_s": float(np.percentile(values, 1)),
                 "median_vs_no_flush": median / baseline}
        result["cases"][case] = entry
        print(f"  {case:<14} median {median:>10.0f}  p99 {entry['p99_msgs_per_s']:>10.0f}  "
              f"x{entry['median_vs_no_flush']:.3f} of no flush")
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
    return 0
