# shellcheck shell=bash
# Source me (bash or zsh): `source scripts/ros_env.sh`.
#
# Makes this shell use the colcon workspace built by scripts/build_ros_ws.sh
# with the venv's ROS 2 wheels: what `source /opt/ros/<distro>/setup.bash &&
# source ros_ws/install/setup.bash` does on a robot. The variables
# (AMENT_PREFIX_PATH = workspace + venv, LD_LIBRARY_PATH, PYTHONPATH, ...) come
# from mbrl_ros/ros_env.py, the same code the launcher and tests use for their
# child processes; the venv's bin/ goes first on PATH.
_mbrl_ros_root=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)
_mbrl_ros_venv=${VENV:-$_mbrl_ros_root/.venv}
case "$_mbrl_ros_venv" in /*) ;; *) _mbrl_ros_venv=$_mbrl_ros_root/$_mbrl_ros_venv ;; esac
if _mbrl_ros_exports=$("$_mbrl_ros_venv/bin/python" "$_mbrl_ros_root/mbrl_ros/ros_env.py"); then
    eval "$_mbrl_ros_exports"
    case ":$PATH:" in
        *":$_mbrl_ros_venv/bin:"*) ;;
        *) export PATH="$_mbrl_ros_venv/bin:$PATH" ;;
    esac
fi
unset _mbrl_ros_root _mbrl_ros_venv _mbrl_ros_exports
