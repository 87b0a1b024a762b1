"""Running launches: real processes, output, respawn, exit status, and stopping
them with nothing left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from launcher_helpers import process_gone, read_pids, start_launcher, wait_for, write
from mbrl_ros import launcher


def test_output_is_prefixed_and_routed_by_output_mode(tmp_path, ament_prefix, captured):
    path = write(tmp_path / "out.launch.yaml", """
        launch:
        - set_env: {name: MBRL_GREETING, value: hello}
        - node: {pkg: test_pkg, exec: sleeper, name: loud, output: screen,
                 args: "--after 0 --print-env MBRL_GREETING"}
        - node: {pkg: test_pkg, exec: sleeper, name: quiet, args: "--after 0"}
        """)
    log_dir = tmp_path / "launch_log"
    assert launcher.run(path, output=captured, log_directory=log_dir) == 0
    assert "env MBRL_GREETING=hello" in captured.of("loud", "stdout")
    assert "a line on stderr" in captured.of("loud", "stderr")
    # output: log (upstream's default): stdout only to the log file, stderr also on screen.
    assert captured.of("quiet", "stdout") == []
    assert captured.of("quiet", "stderr") == ["a line on stderr"]
    log = (log_dir / "launch.log").read_text()
    assert "[quiet] started sleeper.py" in log and "[quiet] a line on stderr" in log
    assert "[loud] env MBRL_GREETING" not in log, "output: screen writes to the screen only"
    assert any("process has finished cleanly" in t for t in captured.of("quiet", "launch"))


def test_cli_prints_node_output_with_its_name(tmp_path, ament_prefix):
    path = write(tmp_path / "cli.launch.yaml", """
        launch:
        - node: {pkg: test_pkg, exec: sleeper, name: talker, output: screen, args: "--after 0 one"}
        """)
    result = subprocess.run(start_launcher(str(path)).args, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "[talker] started sleeper.py extra=['one'] ros_args=['--ros-args', '-r', '__node:=talker']" \
        in result.stdout.splitlines()
    assert "[talker] a line on stderr" in result.stderr.splitlines()
    assert "[INFO] [talker]: process started with pid [" in result.stderr


def test_a_failed_node_is_reported_the_others_keep_running(tmp_path, ament_prefix, captured):
    path = write(tmp_path / "fail.launch.yaml", """
        launch:
        - node: {pkg: test_pkg, exec: sleeper, name: crashes, args: "--after 0 --exit-code 3"}
        - node: {pkg: test_pkg, exec: sleeper, name: finishes, args: "--after 0.8"}
        """)
    runner = launcher.start(path, output=captured)
    assert runner.wait(timeout=20) == 1
    assert runner.exit_codes == {"crashes": [3], "finishes": [0]}
    assert any("process has died" in t and "exit code 3" in t for t in captured.of("crashes", "launch"))


def test_respawn_restarts_until_stopped(tmp_path, ament_prefix, captured):
    path = write(tmp_path / "respawn.launch.yaml", """
        launch:
        - node: {pkg: test_pkg, exec: sleeper, name: flaky, respawn: 'true', respawn_delay: 0.1,
                 args: "--after 0.1"}
        """)
    runner = launcher.start(path, output=captured)
    try:
        wait_for(lambda: len(runner.pids["flaky"]) >= 3, timeout=20)
    finally:
        assert runner.stop(timeout=20) == 0, captured.text()
    assert any("respawning in 0.1 s" in t for t in captured.of("flaky", "launch"))
    assert all(process_gone(pid) for pid in runner.pids["flaky"])


def test_respawn_stops_after_respawn_max_retries(tmp_path, ament_prefix, captured):
    """A node that keeps failing (a lasting configuration error) is started 1 + respawn_max_retries times, then
    left down with an error; the launch then has nothing left to run and ends, failed."""
    path = write(tmp_path / "retries.launch.yaml", """
        launch:
        - node: {pkg: test_pkg, exec: sleeper, name: broken, respawn: 'true', respawn_delay: 0.1,
                 respawn_max_retries: 2, args: "--after 0 --exit-code 3"}
        """)
    runner = launcher.start(path, output=captured)
    assert runner.wait(timeout=20) == 1, captured.text()
    assert runner.exit_codes == {"broken": [3, 3, 3]}
    assert any("not respawning: respawned 2 time(s), respawn_max_retries is 2" in t
               for t in captured.of("broken", "launch")), captured.text()


def test_on_exit_shutdown_ends_the_launch_with_that_node_respawn_or_not(tmp_path, ament_prefix, captured):
    """As upstream's on_exit: shutdown (issue 9 §4: a node refusing its configuration brings the launch down)."""
    path = write(tmp_path / "on_exit.launch.yaml", """
        launch:
        - node: {pkg: test_pkg, exec: sleeper, name: refuses, on_exit: shutdown, args: "--after 0.3 --exit-code 1"}
        - node: {pkg: test_pkg, exec: sleeper, name: server, respawn: 'true', respawn_delay: 0.1}
        """)
    runner = launcher.start(path, output=captured)
    assert runner.wait(timeout=30) == 1, captured.text()
    assert runner.exit_codes["refuses"] == [1] and len(runner.exit_codes["server"]) == 1, runner.exit_codes
    assert any("refuses exited (on_exit: shutdown): stopping all nodes" in t for t in captured.of("launch", "launch"))
    assert all(process_gone(pid) for pids in runner.pids.values() for pid in pids)


def test_stop_from_python_signals_the_whole_process_group(tmp_path, ament_prefix, captured):
    pid_file = tmp_path / "pids"
    path = write(tmp_path / "stop.launch.yaml", f"""
        launch:
        - node: {{pkg: test_pkg, exec: sleeper, name: parent, output: screen,
                 args: "--child --pid-file {pid_file}"}}
        """)
    runner = launcher.start(path, output=captured)
    pids = read_pids(pid_file, 2)
    assert runner.stop(timeout=20) == 0
    assert "got SIGINT" in captured.of("parent", "stdout")
    assert all(process_gone(pid) for pid in pids), "the node's own child was stopped too"


def test_children_left_by_an_exited_node_are_stopped_before_it_respawns(tmp_path, ament_prefix, captured):
    pid_file = tmp_path / "pids"
    path = write(tmp_path / "leftover.launch.yaml", f"""
        launch:
        - node: {{pkg: test_pkg, exec: sleeper, name: careless, respawn: 'true',
                 args: "--child --after 0.1 --pid-file {pid_file}"}}
        """)
    runner = launcher.start(path, output=captured)
    try:
        first_node, first_child, *_ = read_pids(pid_file, 4)
    finally:
        assert runner.stop(timeout=20) == 0, captured.text()
    assert process_gone(first_child)
    assert any("processes it started are still running; stopping them" in line
               for line in captured.of("careless", "launch"))
    assert all(process_gone(pid) for pid in read_pids(pid_file, 4))


def test_sigint_to_the_launcher_stops_every_node(tmp_path, ament_prefix):
    pid_file = tmp_path / "pids"
    path = write(tmp_path / "sigint.launch.yaml", f"""
        launch:
        - node: {{pkg: test_pkg, exec: sleeper, name: a, output: screen, args: "--pid-file {pid_file}"}}
        - node: {{pkg: test_pkg, exec: sleeper, name: b, output: screen,
                 args: "--child --pid-file {pid_file}"}}
        """)
    process = start_launcher(str(path))
    pids = read_pids(pid_file, 3)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "[a] got SIGINT" in out and "[b] got SIGINT" in out
    assert "received SIGINT: stopping all nodes" in err
    assert all(process_gone(pid) for pid in pids)


def test_sigterm_escalates_to_sigterm_then_sigkill(tmp_path, ament_prefix):
    pid_file = tmp_path / "pids"
    path = write(tmp_path / "stubborn.launch.yaml", f"""
        launch:
        - node: {{pkg: test_pkg, exec: sleeper, name: deaf, output: screen,
                 args: "--ignore SIGINT --pid-file {pid_file}"}}
        - node: {{pkg: test_pkg, exec: sleeper, name: stone, output: screen,
                 args: "--ignore SIGINT --ignore SIGTERM --pid-file {pid_file}"}}
        """)
    process = start_launcher(str(path), "sigterm_timeout:=0.3", "sigkill_timeout:=0.3")
    pids = read_pids(pid_file, 2)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert "[deaf] got SIGTERM" in out
    assert "process[stone] failed to terminate 0.3 seconds after receiving 'SIGTERM', " \
           "escalating to 'SIGKILL'" in err
    assert process.returncode == 1, "a node that had to be killed counts as failed"
    assert all(process_gone(pid) for pid in pids)


def test_nodes_die_with_a_killed_launcher(tmp_path, ament_prefix):
    pid_file = tmp_path / "pids"
    path = write(tmp_path / "orphan.launch.yaml", f"""
        launch:
        - node: {{pkg: test_pkg, exec: sleeper, name: a, args: "--pid-file {pid_file}"}}
        """)
    process = start_launcher(str(path))
    pids = read_pids(pid_file, 1)
    process.kill()  # no chance to clean up: the kernel's parent-death signal does it
    process.communicate(timeout=10)
    wait_for(lambda: all(process_gone(pid) for pid in pids), timeout=10)


def test_a_node_forked_just_before_its_launcher_is_killed_is_not_started(tmp_path, ament_prefix):
    """The parent-death signal is set in the child after the fork: a launcher killed in between (a SIGKILLed
    demo) leaves a child that no signal reaches, re-parented, and its node ran on for ever. The child checks
    its parent after setting the signal. The window is widened here: the child waits 1 s before setting it."""
    pid_file, forked = tmp_path / "pids", tmp_path / "forked"
    path = write(tmp_path / "race.launch.yaml", f"""
        launch:
        - node: {{pkg: test_pkg, exec: sleeper, name: a, args: "--silent --pid-file {pid_file}"}}
        """)
    late = f"""
import os, runpy, sys, time
from mbrl_ros.launcher import runner
real = runner._PRCTL
def late_prctl(*args):  # the child, between fork and exec: the launcher goes on (and is killed) first
    with open({str(forked)!r}, "w") as handle:
        handle.write(str(os.getpid()))
    time.sleep(1.0)
    return real(*args)
runner._PRCTL = late_prctl
sys.argv = ["mbrl_ros.launcher", {str(path)!r}]
runpy.run_module("mbrl_ros.launcher", run_name="__main__", alter_sys=True)
"""
    process = subprocess.Popen([sys.executable, "-c", late], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    child = None
    try:
        wait_for(lambda: forked.exists() and forked.read_text(), timeout=30)
        child = int(forked.read_text())
        process.kill()
        process.communicate(timeout=10)
        wait_for(lambda: process_gone(child), timeout=10)
        assert not pid_file.exists(), "the node started"
    finally:
        if child is not None and not process_gone(child):
            os.kill(child, signal.SIGKILL)


def test_a_second_stop_request_skips_the_wait(tmp_path, ament_prefix, captured):
    pid_file = tmp_path / "pids"
    path = write(tmp_path / "twice.launch.yaml", f"""
        launch:
        - node: {{pkg: test_pkg, exec: sleeper, name: deaf, output: screen,
                 args: "--ignore SIGINT --pid-file {pid_file}"}}
        """)
    runner = launcher.start(path, output=captured, sigterm_timeout=30)
    pid = read_pids(pid_file, 1)[0]
    started = time.monotonic()
    runner.request_stop()
    time.sleep(0.2)
    assert not process_gone(pid), "SIGINT is ignored; SIGTERM is 30 s away"
    runner.request_stop("second Ctrl-C")
    assert runner.wait(timeout=10) == 0
    assert time.monotonic() - started < 10
    assert "got SIGTERM" in captured.of("deaf", "stdout")
    assert "[WARNING] [deaf]: stop requested again: sending 'SIGTERM'" in captured.of("deaf", "launch")


def test_node_from_a_python_entry_point(tmp_path, ament_prefix, monkeypatch, captured):
    site = tmp_path / "site"
    write(site / "fake_nodes-1.0.dist-info" / "METADATA", "Metadata-Version: 2.1\nName: fake-nodes\nVersion: 1.0\n")
    write(site / "fake_nodes-1.0.dist-info" / "entry_points.txt", """
        [mbrl_ros.nodes]
        other_pkg/talker = fake_talker:main
        """)
    write(site / "fake_talker.py", """
        import sys
        def main():
            print(f"argv={sys.argv}")
            return 4
        """)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", str(site))
    path = write(tmp_path / "ep.launch.yaml", """
        launch:
        - node: {pkg: other_pkg, exec: talker, name: t, output: screen, args: "x"}
        """)
    assert launcher.run(path, output=captured) == 1
    assert captured.of("t", "stdout") == ["argv=['talker', 'x', '--ros-args', '-r', '__node:=t']"]
    assert any("exit code 4" in line for line in captured.of("t", "launch"))
