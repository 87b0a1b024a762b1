#!/bin/bash
# Source ROS 2 and the workspace, then run the command (default: bash).
set -e
source "/opt/ros/$ROS_DISTRO/setup.bash"
source /opt/mbrl_ros/ros_ws/install/setup.bash
exec "$@"
