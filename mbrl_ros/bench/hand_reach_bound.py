"""The most any controller can reach on HandReach: the goals the hand's kinematics cannot bring within 1 cm.

HandReach-v3 samples a goal as a meeting point for the thumb and one random finger, 9 cm in front of and
5 cm above the palm with 5 mm of noise, each of the two tips placed 5 mm short of it, the other three
fingertips at their start (gymnasium-robotics ``reach.py``, ``_sample_goal``). Some of those meeting
points lie beyond what the chosen finger and the thumb can reach together. Such an episode fails whatever
the model and the planner: its goal is out of the hand's workspace.

For each evaluation seed this finds the closest the fingertips can come to the goal with every one of the
24 joints anywhere within its joint range (``joint_ranges``: the MuJoCo model's, less its limit margin), through the
hand's exact kinematics (``robots/hand/kinematics.py``, tested against ``mj_kinematics``): ``restarts``
random starts, each improved by ``steps`` Levenberg-Marquardt steps on the Euclidean distance (HandReach's own,
over the 15 coordinates). The bound is optimistic, so the success it gives is an upper bound: it
ignores the tendons that couple each finger's distal joints to the next (limited tendons of the model),
contacts, the actuators' reach and time. A local search with random restarts finds the workspace's
closest point in practice, not provably (Adam before it, 128 x 400 and 512 x 1000, gave the same five
seeds out of reach on 1000-1049 within the model's ranges; Levenberg-Marquardt, 128 x 100, the same five,
1.12-1.40 cm, in 64 s). Within the ranges the hand holds (less the 0.01 rad margin), 128 x 100: seven, adding
1014 and 1048 (1.03 and 1.04 cm; 512 x 300: 1.024 and 1.032; they were 0.95 and 0.96 within the model's
ranges), so at most 43 of those 50 (86 %), in 50 s.

    mbrl-ros bench hand-reach-bound --first-seed 1000 --episodes 50 --json F

(seeds 1000-1049: the episodes ``mbrl-ros demo hand`` evaluates). Prints per seed the closest reach,
the count within the threshold (the highest success any controller can have on those seeds), JSON and a
histogram (OUT/hand_reach_bound.png).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from mbrl_ros.plots import _pyplot


def joint_ranges(sim) -> tuple[np.ndarray, np.ndarray]:
    """The 24 joints' ranges (rad, in ``sim.joint_names`` order, the kinematics' order) the simulated hand can
    hold: the MuJoCo model's ``jnt_range`` less its ``jnt_margin`` at each end. A limit's constraint acts from
    ``margin`` inside the range (0.01 rad on every joint of the hand), so an actuator pushing a joint at its
    limit holds it there: 0.0092-0.0099 rad inside on every joint, driven to each end for 4 s."""
    import mujoco

    model = sim.unwrapped.model
    ids = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, f"robot0:{name}") for name in sim.joint_names]
    if not all(model.jnt_limited[ids]):
        raise ValueError("hand_reach_bound: every hand joint must be limited in the MuJoCo model")
    margin = model.jnt_margin[ids]
    return model.jnt_range[ids, 0] + margin, model.jnt_range[ids, 1] - margin


def closest_reach(goal: np.ndarray, low: np.ndarray, high: np.ndarray, restarts: int = 128, steps: int = 100,
                  seed: int = 0) -> tuple[float, np.ndarray]:
    """The smallest ``|kinematics(q) - goal|`` (m, over the 15 coordinates) found with ``low <= q <= high``,
    and that ``q``: ``restarts`` uniform random starts, each ``steps`` Levenberg-Marquardt steps within the box
    (``core.least_squares``, the solver the hand's planner proposal uses, here on the joints themselves)."""
    from mbrl_ros.core.least_squares import BoxLevenbergMarquardt
    from mbrl_ros.robots.hand.kinematics import HandKinematics

    kinematics = HandKinematics(torch.float64).numpy()
    goal = np.asarray(goal, float).reshape(-1)

    def residuals(joints: np.ndarray, jacobian: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if not jacobian:
            return kinematics.tips(joints) - goal, None
        tips, derivative = kinematics.tips_and_jacobian(joints)
        return tips - goal, derivative

    solver = BoxLevenbergMarquardt(residuals, low, high)
    solver.start(low + (high - low) * np.random.default_rng(seed).uniform(size=(restarts, len(low))))
    solver.iterate(steps)
    joints, distance = solver.best()
    return distance, joints


def run(first_seed: int = 1000, episodes: int = 50, restarts: int = 128, steps: int = 100,
        out: str = "runs/hand_reach_bound", json_path: str | None = None) -> dict:
    from mbrl_ros_hardware.hand.shadow_hand import HandSim

    torch.set_num_threads(1)
    sim = HandSim("reach")
    low, high = joint_ranges(sim)
    threshold = sim.distance_threshold
    rows, started = [], time.time()
    for k, seed in enumerate(range(first_seed, first_seed + episodes)):
        sim.reset(seed=seed)
        distance, _ = closest_reach(sim.goal, low, high, restarts, steps, seed)
        rows.append({"seed": seed, "closest_reach_m": distance, "reachable": distance < threshold})
        print(f"[{k + 1}/{episodes}] seed {seed}: closest reach {100 * distance:.2f} cm"
              f"{'' if distance < threshold else '  (out of reach)'}", flush=True)
    sim.close()
    reachable = sum(r["reachable"] for r in rows)
    result = {
        "task": "reach", "first_seed": first_seed, "episodes": episodes, "threshold_m": threshold,
        "reachable": reachable, "max_success_rate": reachable / episodes,
        "out_of_reach_seeds": [r["seed"] for r in rows if not r["reachable"]],
        "restarts": restarts, "steps": steps, "wall_s": time.time() - started,
        "load_average": os.getloadavg()[0], "seeds": rows,
    }
    print(f"seeds {first_seed}-{first_seed + episodes - 1}: {reachable}/{episodes} goals within "
          f"{100 * threshold:.0f} cm of the hand's workspace: no controller succeeds on more than "
          f"{100 * result['max_success_rate']:.0f} %; out of reach: {result['out_of_reach_seeds']}")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    plot(folder / "hand_reach_bound.png", [r["closest_reach_m"] for r in rows], threshold, first_seed)
    (folder / "hand_reach_bound.json").write_text(json.dumps(result, indent=2))
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2))
    return result


def plot(path: Path, distances: list[float], threshold: float, first_seed: int) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    centimetres = 100 * np.asarray(distances)
    ax.bar(first_seed + np.arange(len(centimetres)), centimetres,
           color=["tab:blue" if d < 100 * threshold else "tab:red" for d in centimetres])
    ax.axhline(100 * threshold, color="k", linestyle="--", label="success threshold")
    ax.set_xlabel("evaluation seed")
    ax.set_ylabel("closest reach (cm)")
    ax.set_title("HandReach: the closest the hand's kinematics gets to each goal (red: out of reach)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
