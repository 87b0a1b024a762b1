"""launch_check: whether the stack can run this robot, task and model, for the whole launch.

Every argument of bringup.launch.yaml may be a valid choice while the combination is not
(``robot:=car task:=reach``; a robot without a physics prior with ``model:=parametric``). The launch file starts this
small process (no ROS, no torch) with ``on_exit: shutdown``: for a combination the robot
plug-ins cannot run it exits 1 with the reason and the launch ends, under the upstream
``ros2 launch`` and ``mbrl-ros launch`` alike, instead of a half-started stack. Otherwise it
stays until the launch stops it (SIGINT or SIGTERM: exit 0). The one rule of what is valid:

- the robot is a plug-in (``mbrl_ros.robots``);
- the task has its parameter file ``<config_dir>/<robot>_<task>.yaml``;
- the model kind is one of the robot's ``model_kinds(state_names)`` for the task's state (those on a physics
  prior need one that covers it: the hand's does not know rotate's block);
- a learned policy (``learn_policy``, the default under ``controller:=policy``) needs a ``policy``
  section for the trainer in the robot's or the task's file (the method, the actor, the context).

    launch_check --robot car --task parking --model parametric --config-dir config [--learn-policy true] [--ros-args ...]
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

HARDWARE_FILES = ("sim", "real")  # <robot>_real.yaml holds the hardware's parameters, not a task


def robot_tasks(folder: Path, robot: str) -> list[str]:
    """The robot's tasks: one ``<robot>_<task>.yaml`` each in ``folder`` (not its hardware files)."""
    tasks = (p.stem[len(robot) + 1:] for p in folder.glob(f"{robot}_*.yaml"))
    return sorted(task for task in tasks if task not in HARDWARE_FILES)


def check_combination(robot: str, task: str, model: str, config_dir: str | Path, learn_policy: bool = False) -> None:
    """Raise ValueError naming what cannot run together (and what can)."""
    from mbrl_ros.robots import get_robot

    plugin = get_robot(robot, "launch argument 'robot'")
    folder = Path(config_dir)
    if task in HARDWARE_FILES or not (folder / f"{robot}_{task}.yaml").is_file():
        raise ValueError(f"robot '{robot}' has no task '{task}' (no task file {folder / f'{robot}_{task}.yaml'}); "
                         f"its tasks: {', '.join(robot_tasks(folder, robot)) or 'none'}")
    from mbrl_ros.io.config import launch_parameters

    kinds = plugin.model_kinds(launch_parameters(folder, robot, task, "trainer").get("state_names"))
    if model not in kinds:
        raise ValueError(f"robot '{robot}' task '{task}' cannot run model '{model}'; its models: {', '.join(kinds)}")
    if learn_policy:
        if not launch_parameters(folder, robot, task, "trainer").get("policy"):
            with_policy = [other for other in robot_tasks(folder, robot)
                           if launch_parameters(folder, robot, other, "trainer").get("policy")]
            raise ValueError(f"robot '{robot}' task '{task}' has no learned policy (controller:=policy or "
                             f"learn_policy:=true): no trainer 'policy' section in {folder / f'{robot}.yaml'} or "
                             f"{folder / f'{robot}_{task}.yaml'}; tasks with one: {', '.join(with_policy) or 'none'}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--ros-args" in argv:  # what launch_ros adds for a node (name, namespace): not ours
        argv = argv[:argv.index("--ros-args")]
    parser = argparse.ArgumentParser(prog="launch_check", description=__doc__.split("\n\n")[0])
    for name in ("robot", "task", "model", "config-dir"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--learn-policy", choices=["true", "false", "True", "False"], default="false")
    args = parser.parse_args(argv)
    try:
        check_combination(args.robot, args.task, args.model, args.config_dir, args.learn_policy.lower() == "true")
    except ValueError as err:
        print(f"launch_check: {err}: the launch cannot run this combination", file=sys.stderr, flush=True)
        return 1
    print(f"launch_check: robot {args.robot}, task {args.task}, model {args.model}"
          f"{', a learned policy' if args.learn_policy.lower() == 'true' else ''}: ok", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            signal.pause()
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
