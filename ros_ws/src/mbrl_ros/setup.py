"""The ament_python package of mbrl_ros, for `colcon build` (robots, docker, setup.sh).

The sources are not copied here: `mbrl_ros`, `mbrl_ros_hardware`, `launch` and
`config` are symlinks to the repository root, so this package installs the very
files a pip install uses. colcon follows them both with and without
--symlink-install.
"""

import os
import runpy

from setuptools import find_packages, setup

PACKAGE = 'mbrl_ros'
HERE = os.path.dirname(os.path.abspath(__file__))


def share_files(folder):
    """(destination, [files]) pairs installing folder/ under share/mbrl_ros/folder/."""
    pairs = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d != '__pycache__' and not d.startswith('.'))
        # isfile: with --symlink-install this runs in the build space, where a
        # file removed from the repository leaves a dangling link behind.
        files = sorted(p for p in (os.path.join(root, f) for f in files if not f.startswith('.'))
                       if os.path.isfile(p))
        if files:
            pairs.append((os.path.join('share', PACKAGE, root), files))
    return pairs


# `ros2 run mbrl_ros <name>`: the one list of executables, shared with the
# pip-only launcher. Read by path so that this file needs no torch to run.
EXECUTABLES = runpy.run_path(os.path.join(HERE, 'mbrl_ros', 'executables.py'))['EXECUTABLES']

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(include=['mbrl_ros', 'mbrl_ros.*',
                                    'mbrl_ros_hardware', 'mbrl_ros_hardware.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        *share_files('launch'),
        *share_files('config'),
    ],
    install_requires=['setuptools'],
    zip_safe=False,
    maintainer='mbrl_ros maintainers',
    maintainer_email='maintainers@mbrl-ros.org',
    description='Model-based RL for ROS 2: nodes, launch files and parameters.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [f'{name} = {target}' for name, target in sorted(EXECUTABLES.items())],
    },
)
