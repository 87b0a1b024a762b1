"""Package layout only (metadata lives in pyproject.toml).

The drivers live in the top-level ``hardware/`` folder, as DESIGN.md lays the
repository out, and install as the ``mbrl_ros_hardware`` package.
"""

from setuptools import find_packages, setup

HARDWARE = "mbrl_ros_hardware"

setup(
    packages=find_packages(include=["mbrl_ros", "mbrl_ros.*"])
    + [HARDWARE]
    + [f"{HARDWARE}.{name}" for name in find_packages("hardware")],
    package_dir={HARDWARE: "hardware"},
)
