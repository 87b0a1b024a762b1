#!/bin/bash
# Source ROS 2 and the workspace, then run the command (the image's CMD: the robot's bringup).
# exec: the command gets tini's signals (SIGINT on `docker stop`) directly.
set -e
# Both exist only in the image: shellcheck cannot follow them.
# shellcheck source=/dev/null
source "/opt/ros/$ROS_DISTRO/setup.bash"
# shellcheck source=/dev/null
source /opt/mbrl_ros/ros_ws/install/setup.bash
exec "$@"
