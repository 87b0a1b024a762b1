"""Each run picks a ROS domain nobody on this machine uses (a demo beside a test, two tests): a shared
domain let one run's e_stop and states reach another's controller."""

from __future__ import annotations

import subprocess
import sys
import time

from mbrl_ros.ros_env import domain_in_use, free_domain_id


def test_a_domain_with_a_ros_node_on_this_host_is_in_use_and_not_picked(ros_env):
    domain = free_domain_id("test-domains")
    assert not domain_in_use(domain)
    node = subprocess.Popen([sys.executable, "-c", "import rclpy, time; rclpy.init(); "
                             "n = rclpy.create_node('occupant'); print('up', flush=True); time.sleep(60)"],
                            env={**ros_env, "ROS_DOMAIN_ID": str(domain)}, stdout=subprocess.PIPE, text=True)
    try:
        assert node.stdout.readline().strip() == "up"
        assert domain_in_use(domain)
        assert free_domain_id("test-domains") != domain
    finally:
        node.kill()
        node.wait()
    deadline = time.monotonic() + 10
    while domain_in_use(domain) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert free_domain_id("test-domains") == domain
