"""`mbrl-ros soak --minutes 2`: the simulated car stack in real time with online retraining, as a user runs it.

The bounds are what a healthy stack meets on a loaded 2-core machine; measured on
one shared with three other test runs (load average 6 to 13), 1- and 2-minute
windows (`mbrl-ros soak --minutes 2 --json soak.json`; the first run's loss count had a bug since fixed):

| minutes | load | rss_growth_pct | p99_drift_pct | deadline_miss_rate | messages_lost | restarts |
|---------|------|----------------|---------------|--------------------|---------------|----------|
| 1       | 6    | 0.11           | -8.8          | 0.010              | (not counted) | 0        |
| 1       | 9    | -0.01          | -97           | 0.54               | 0             | 0        |
| 2       | 11   | 0.41           | +56           | 0.29               | 0             | 0        |
| 1       | 9    | 0.27           | +69           | 0.027              | 0             | 0        |
| 2       | 13   | 0.23           | +1.9          | 0.21               | 0             | 0        |

The stack holds ~1.2 GB; 5 % of it (60 MB) in two minutes is a leak, not noise.
The p99 moves with the machine's load: the last fifth's may be up to twice the
first's (+100 %), not more. Planning takes 100-190 ms of the 200 ms period at
load 11, so misses are common under load, but most cycles must still make it.
Every state and command of a cycle the controller answered must be in the
logger's bags, and no node may restart.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from mbrl_ros.ros_env import free_domain_id

MINUTES = 2.0


def test_a_two_minute_soak_stays_within_bounds(tmp_path):
    out, result_file = tmp_path / "run", tmp_path / "soak.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AMENT_", "MBRL_ROS_IN"))}
    env["ROS_DOMAIN_ID"] = str(free_domain_id("e2e-soak"))
    done = subprocess.run([sys.executable, "-m", "mbrl_ros.cli", "soak", "--minutes", str(MINUTES), "--out", str(out),
                           "--json", str(result_file)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(result_file.read_text())
    assert set(result) == {"minutes", "rss_growth_pct", "p99_drift_pct", "deadline_miss_rate", "messages_lost",
                           "restarts"}
    # It controlled the car the whole window: most of its 5 Hz cycles were planned and watched.
    cycles = np.loadtxt(out / "cycles.csv", delimiter=",", skiprows=1, ndmin=2)
    in_window = (cycles[:, 0] >= 0) & (cycles[:, 0] < MINUTES * 60e3)  # ms from the window's start
    assert in_window.sum() >= 0.5 * 5 * 60 * MINUTES, in_window.sum()
    # The trainer retrained online: its first round before the window, more during it (one per closed bag).
    rounds = (out / "checkpoints" / "decisions.jsonl").read_text().splitlines()
    assert len(rounds) >= 3, rounds

    assert result["minutes"] >= MINUTES
    assert abs(result["rss_growth_pct"]) < 5.0, result
    assert result["p99_drift_pct"] < 100.0, result
    assert result["deadline_miss_rate"] < 0.6, result
    assert result["messages_lost"] == 0, result
    assert result["restarts"] == 0, result
