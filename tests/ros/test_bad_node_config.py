"""A node given a bad params file (issue 9 section 4): exit 1 with one line naming the file or the
parameter, no traceback. Out-of-range values and wrong types are refused by the declared ranges
and types; a file that is not a params file by rcl's parser; a key of the node's own section that the node
does not have (a typo) by check_params_files."""

from __future__ import annotations

import subprocess
import sys

import pytest

BAD = {  # params file -> what the error says
    "not YAML": ("/**/estimator:\n  ros__parameters: [1, 2\n", "Couldn't parse params file"),
    "out of range": ("/**/estimator:\n  ros__parameters:\n    dt: 100.0\n", "Parameter dt out of range"),
    "wrong type": ("/**/estimator:\n  ros__parameters:\n    resync_after: often\n", "resync_after"),
    "unknown key": ("/**:\n  ros__parameters:\n    dt: 0.2\n/**/estimator:\n  ros__parameters:\n    resync_afer: 3\n",
                    "section '/**/estimator': 'resync_afer' is not a parameter of /car/estimator "
                    "(did you mean 'resync_after'?)"),
    "unknown executor": ("/**:\n  ros__parameters:\n    executor: threads\n",
                         "parameter 'executor' must be one of ['single', 'events'], got 'threads'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_params_file_ends_the_node_with_a_clear_error(tmp_path, ros_env, case):
    text, says = BAD[case]
    params = tmp_path / "estimator.yaml"
    params.write_text(text)
    done = subprocess.run([sys.executable, "-c", "import sys; from mbrl_ros.nodes.estimator import main; sys.exit(main())",
                           "--ros-args", "-r", "__ns:=/car", "--params-file", str(params)],
                          env=ros_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    said = [line for line in done.stderr.splitlines() if line.startswith("estimator: ")]
    assert len(said) == 1 and says in said[0], done.stderr
    assert "Traceback" not in done.stderr
    if case in ("not YAML", "unknown key"):
        assert str(params) in said[0]


def test_a_controller_whose_configure_fails_unexpectedly_exits_naming_the_error(tmp_path, ros_env):
    """rclpy's lifecycle swallows an exception of a transition callback without a word: a controller that could
    not import a package stayed unconfigured, commanding nothing, and the demo waited 7 minutes in silence. Now
    any error of the autostart's configure ends the process with exit 1 and the error (the launch respawns it)."""
    from test_controller_safety import controller_argv

    fake = tmp_path / "site"
    fake.mkdir()
    (fake / "threadpoolctl.py").write_text("raise ImportError('threadpoolctl is broken on this machine')\n")
    env = {**ros_env, "PYTHONPATH": ":".join(p for p in (str(fake), ros_env.get("PYTHONPATH", "")) if p)}
    done = subprocess.run([sys.executable, *controller_argv()], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    said = [line for line in done.stderr.splitlines() if line.startswith("controller: ")]
    assert said == ["controller: configure failed: ImportError: threadpoolctl is broken on this machine"], done.stderr
