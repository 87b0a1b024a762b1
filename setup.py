"""Package layout only (metadata lives in pyproject.toml).

The drivers live in the top-level ``hardware/`` folder, as DESIGN.md lays the
repository out, as the package ``hardware/mbrl_ros_hardware`` (one subpackage per robot).
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["mbrl_ros", "mbrl_ros.*"]) + find_packages("hardware"),
    package_dir={"mbrl_ros_hardware": "hardware/mbrl_ros_hardware"},
)
