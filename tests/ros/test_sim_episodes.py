"""sim_car as a real process over DDS: each finished episode is reported once on sim/episodes.

Issue 9: the simulator re-published every earlier episode's report with each new
one, so the traffic (and the data_logger's bag) grew with the square of the run's length.
"""

from __future__ import annotations

import time
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from mbrl_ros.stack_run import StackWatcher

SIM_CAR = ["-c", "import sys; from mbrl_ros_hardware.car.sim import main; sys.exit(main())",
           "--ros-args", "-r", "__ns:=/car", "-p", "lockstep:=false", "-p", "max_episode_steps:=2"]


def test_each_episode_is_reported_once(spawn, ros_env):
    watcher = StackWatcher(int(ros_env["ROS_DOMAIN_ID"]), "car", timing=False)
    arrays: list[list[str]] = []  # per message received, the names of its statuses
    watcher.node.create_subscription(
        DiagnosticArray, "/car/sim/episodes", lambda msg: arrays.append([s.name for s in msg.status]),
        QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    sim = spawn(*SIM_CAR)  # real time at dt 0.2 s: an episode every 0.4 s
    try:
        deadline = time.monotonic() + 60
        while len(arrays) < 6 and time.monotonic() < deadline and sim.poll() is None:
            watcher.spin(0.2)
        assert len(arrays) >= 6, (arrays, sim.poll(), sim.stderr.read() if sim.poll() is not None else "")
        assert all(len(names) == 1 for names in arrays), arrays
        numbers = [int(names[0].split()[-1]) for names in arrays]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers  # none lost, none twice
        # The watcher the demo and the tests use keeps every episode, in order.
        assert [int(r["episode"]) for r in watcher.reports] == list(range(numbers[0], numbers[-1] + 1))
        assert all(r["steps"] == "2" for r in watcher.reports)
    finally:
        watcher.close()


def test_a_watcher_that_joins_late_gets_every_episode_that_ended_before(spawn, ros_env):
    """The demo's watcher starts after the stack (and matches seconds later under load): with the reports latched
    one deep it got only the last episode that had ended, and the CI's race demo, whose random episodes leave the
    track seconds apart, evaluated episode 5 for 4. The reports are latched with their history."""
    sim = spawn(*SIM_CAR)  # real time at dt 0.2 s: an episode every 0.4 s
    ended = 0
    while ended < 5:  # the simulator logs each episode's end on stderr
        line = sim.stderr.readline()
        assert line or sim.poll() is None, sim.poll()
        if " done: " in line:
            ended = int(line.split("episode ")[1].split()[0]) + 1
    watcher = StackWatcher(int(ros_env["ROS_DOMAIN_ID"]), "car", timing=False)
    try:
        deadline = time.monotonic() + 30
        while len(watcher.reports) < ended and time.monotonic() < deadline:
            watcher.spin(0.2)
        numbers = [int(r["episode"]) for r in watcher.reports]
        assert numbers[:ended] == list(range(ended)), numbers
        assert watcher.reports_of(1, 3) == watcher.reports[1:4]
    finally:
        watcher.close()


def test_lockstep_without_its_recorder_holds_then_gives_up_naming_it(spawn):
    """wait_for_recorder (the launch files' lockstep): no data_logger within recorder_timeout ends the simulator
    with exit 1 and the reason, rather than a simulation that runs unrecorded or waits for ever."""
    sim = spawn(*SIM_CAR[:-4], "-p", "lockstep:=true", "-p", "wait_for_recorder:=true",
                "-p", "recorder_timeout:=2.0")
    try:
        out, err = sim.communicate(timeout=120)
    finally:
        sim.kill()
    assert sim.returncode == 1, out + err
    said = [line for line in err.splitlines() if line.startswith("sim_car: ")]
    assert len(said) == 1 and "held the simulation" in said[0] and "recorder_timeout" in said[0] \
        and "no data_logger (/car/data_logger/recording has no publisher)" in said[0], err
    assert "lockstep: simulation held for 0 s: no data_logger" in err, err  # said while it waited
    assert "Traceback" not in err, err


def test_real_time_ignores_wait_for_recorder(spawn, ros_env):
    """Real time steps on the wall clock as before, recorder or not (a robot does not wait for a logger)."""
    watcher = StackWatcher(int(ros_env["ROS_DOMAIN_ID"]), "car", timing=False)
    sim = spawn(*SIM_CAR, "-p", "wait_for_recorder:=true", "-p", "recorder_timeout:=1.0")
    try:
        deadline = time.monotonic() + 60
        while len(watcher.reports) < 6 and time.monotonic() < deadline and sim.poll() is None:
            watcher.spin(0.2)
        assert len(watcher.reports) >= 6 and sim.poll() is None, (watcher.reports, sim.poll())
    finally:
        watcher.close()


def test_learning_episodes_are_held_until_released_or_the_hold_timeout(spawn, ros_env):
    """hold_learning_episodes (issue 10 §2): after sim/start_evaluation the learning episodes (evaluation_delay 1
    here) and the first evaluated one hold their first step until sim/release, so the demo can have the trainer
    retrain on the episodes before; a hold not released ends after hold_timeout wall seconds; the episodes
    before and after are not held."""
    from std_srvs.srv import Trigger

    watcher = StackWatcher(int(ros_env["ROS_DOMAIN_ID"]), "car", timing=False)
    sim = spawn(*SIM_CAR[:-4], "-p", "lockstep:=true", "-p", "max_episode_steps:=2", "-p", "evaluation_delay:=1",
                "-p", "hold_learning_episodes:=true", "-p", "hold_timeout:=4.0")
    spawn(str(Path(__file__).with_name("car_stop_peers.py")), "1000000")  # answers every state

    def wait_for(condition, seconds: float = 60.0) -> None:
        deadline = time.monotonic() + seconds
        while not condition() and time.monotonic() < deadline and sim.poll() is None:
            watcher.spin(0.1)
        assert condition(), (watcher.reports[-3:], sim.poll())

    release = "/car/sim/release"
    try:
        wait_for(lambda: len(watcher.reports) >= 2)  # not held before sim/start_evaluation
        assert not watcher.call(Trigger, release, Trigger.Request()).success
        first = int(watcher.call(Trigger, "/car/sim/start_evaluation", Trigger.Request()).message.split()[1])
        learning = first - 1
        wait_for(lambda: watcher.reports_of(learning - 1, 1))
        held_at = len(watcher.odometry)
        watcher.spin(2.0)
        assert not watcher.reports_of(learning, 1), watcher.reports[-2:]  # held: 2 steps would take no time
        tail = [stamp for stamp, *_ in watcher.odometry[held_at:]]
        assert len(tail) > 3 and len(set(tail[-3:])) == 1, tail  # its state re-published (answered), not stepped
        released = watcher.call(Trigger, release, Trigger.Request())
        assert released.success and released.message == f"released episode {learning}", released.message
        wait_for(lambda: watcher.reports_of(learning, 1))
        assert watcher.reports_of(learning, 1)[0]["steps"] == "2"
        # The first evaluated episode is held too; not released, it starts after hold_timeout (4 s).
        wait_for(lambda: watcher.reports_of(first, 1))
        assert int(watcher.reports_of(first, 1)[0]["seed"]) == 1000
        wait_for(lambda: watcher.reports_of(first + 2, 1), 20.0)  # the evaluated ones after it are not held
        assert not watcher.call(Trigger, release, Trigger.Request()).success
    finally:
        watcher.close()
        sim.terminate()
        err = sim.communicate(timeout=30)[1]
    assert f"episode {first}: held 4 s (hold_timeout) without sim/release: starting it" in err, err[-3000:]
