"""Issue 10 §2: the race's slip states travel over DDS: sim_car (task race) publishes the single-track car's
whole twist on hw/odom, and the estimator, with the shipped race config, puts its lateral velocity and yaw
rate into the state, as the odometry measured them."""

from __future__ import annotations

import json
from pathlib import Path

from child_output import wait_for_line

CONFIG = Path(__file__).parents[2] / "config"
PARAMS = ["--params-file", str(CONFIG / "car.yaml"), "--params-file", str(CONFIG / "car_race.yaml")]
PEERS = Path(__file__).with_name("race_odometry_peers.py")


def node(module: str, *ros_args: str) -> list[str]:
    return ["-c", f"import sys; from {module} import main; sys.exit(main())",
            "--ros-args", "-r", "__ns:=/car", *PARAMS, *ros_args]


def test_the_race_state_carries_the_odometrys_lateral_velocity_and_yaw_rate(spawn):
    sim = spawn(*node("mbrl_ros_hardware.car.sim", "-p", "task:=race", "-p", "lockstep:=false"))
    estimator = spawn(*node("mbrl_ros.nodes.estimator"))
    controller = spawn(str(PEERS), "10")
    got = json.loads(wait_for_line(controller, "result ", timeout=120, others=(sim, estimator)))
    assert len(got["turning"]) >= 10, got
    for row in got["turning"]:
        longitudinal, lateral, yaw_rate = row["twist"]
        assert row["names"] == ["x", "y", "yaw", "v", "steer", "v_y", "yaw_rate"]
        assert row["values"][3] == longitudinal and row["values"][5:] == [lateral, yaw_rate], row


def test_each_race_episode_starts_with_straight_steering_as_the_simulator_restarts_it(spawn):
    """The estimator takes sim/episodes in: the simulator restarts the car with straight steering, and the
    estimate, from the commands alone, once began each episode at the last one's angle (0.1-0.2 rad off on
    the race for seconds: the rate-limited servo keeps an offset)."""
    sim = spawn(*node("mbrl_ros_hardware.car.sim", "-p", "task:=race", "-p", "lockstep:=false",
                      "-p", "max_episode_steps:=40"))
    estimator = spawn(*node("mbrl_ros.nodes.estimator"))
    controller = spawn(str(PEERS), "restarts", "2")
    got = json.loads(wait_for_line(controller, "result ", timeout=120, others=(sim, estimator)))
    assert len(got["restarts"]) >= 2, got
    for restart in got["restarts"]:
        assert restart["last_steer"] > 0.3, restart  # 2 s of hard left: the servo near its 0.4 rad
        # The new episode starts straight, and the servo turns left from there at its rate limit (0.4 rad/s,
        # config/car_race.yaml; hard left all the time). The first state received may be some steps in (best-effort
        # sensor QoS on a loaded machine: 0.13-0.41 s in at load 6-9), so the estimate is checked against that
        # turn: 0.4 rad/s x the time since the episode's end. An estimate begun at the last episode's angle (> 0.3
        # rad, the failure this guards) is > 0.1 rad off it while the first state is within 0.5 s.
        assert restart["first_after_s"] <= 0.5, restart
        assert abs(restart["first_steer"] - 0.4 * restart["first_after_s"]) < 0.03, restart


def test_episodes_before_the_evaluated_ones_start_at_a_speed_drawn_from_race_start_speeds(spawn, ros_env, tmp_path):
    """Issue 10 §2: random driving from 5 m/s never reached the grip limit (11.6 m/s at most); sim_car's
    race_start_speeds starts the exploration and learning episodes faster, each at a speed drawn by its seed,
    while the evaluated episodes (from sim/start_evaluation on) keep the 5 m/s start every run compares."""
    from std_srvs.srv import Trigger

    from mbrl_ros.stack_run import StackWatcher

    # A later params file, not -p: rcl lets car_race.yaml's sim_car section ([8, 16]) win over a -p override.
    speeds = tmp_path / "speeds.yaml"
    speeds.write_text("/**/sim_car:\n  ros__parameters:\n    race_start_speeds: [15.0, 16.0]\n")
    sim = spawn(*node("mbrl_ros_hardware.car.sim", "-p", "task:=race", "-p", "lockstep:=true",
                      "-p", "wait_for_recorder:=false", "-p", "max_episode_steps:=1",
                      "--params-file", str(speeds)))
    peer = spawn(str(Path(__file__).with_name("car_stop_peers.py")), "1000000")  # answers each state

    def next_speed() -> float:  # each new stamp is an episode's first state (one step per episode)
        return json.loads(wait_for_line(peer, "odom ", timeout=120, others=(sim,)))["v"]

    before = [next_speed() for _ in range(4)]
    assert all(15.0 <= v <= 16.0 for v in before) and len(set(before)) == 4, before
    watcher = StackWatcher(int(ros_env["ROS_DOMAIN_ID"]), "car", timing=False)
    try:
        assert watcher.call(Trigger, "/car/sim/start_evaluation", Trigger.Request(), timeout=60.0).success
    finally:
        watcher.close()
    speeds = [next_speed() for _ in range(40)]
    evaluated = speeds.index(5.0)
    assert all(15.0 <= v <= 16.0 for v in speeds[:evaluated]), speeds
    assert speeds[evaluated:] == [5.0] * (40 - evaluated), speeds
