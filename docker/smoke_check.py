"""Fail the image build here, not on the robot: pip's numpy must work with Jazzy's compiled
messages, and ours must import (run with the workspace sourced)."""

import casadi
import numpy
import torch
from ament_index_python.packages import get_package_share_directory
from nav_msgs.msg import Odometry
from rclpy.serialization import deserialize_message, serialize_message

from mbrl_interfaces.msg import CommandVector, ModelUpdate, StateVector  # noqa: F401
from mbrl_interfaces.srv import PredictBatch  # noqa: F401

odom = Odometry()
odom.pose.covariance[0] = 1.5
assert deserialize_message(serialize_message(odom), Odometry).pose.covariance[0] == 1.5
state = StateVector(names=["x"], values=[2.0], valid=True)
assert list(deserialize_message(serialize_message(state), StateVector).values) == [2.0]
print("ok: torch", torch.__version__, "numpy", numpy.__version__, "casadi", casadi.__version__,
      "share", get_package_share_directory("mbrl_ros"))
