"""A stand-in node for launcher tests (no ROS): reports what it got, then exits
or waits for a signal. Options come before --ros-args, which it ignores."""

import argparse
import os
import signal
import subprocess
import sys
import time


def main() -> int:
    argv = sys.argv[1:]
    ros_args = argv[argv.index("--ros-args"):] if "--ros-args" in argv else []
    parser = argparse.ArgumentParser()
    parser.add_argument("--exit-code", type=int, default=0)
    parser.add_argument("--after", type=float, help="exit after this many seconds")
    parser.add_argument("--ignore", action="append", default=[], help="SIGINT or SIGTERM")
    parser.add_argument("--child", action="store_true", help="start a child process too")
    parser.add_argument("--pid-file")
    parser.add_argument("--print-env", action="append", default=[])
    parser.add_argument("--silent", action="store_true",
                        help="print nothing (a busy node: its launcher's closed pipes do not end it)")
    options, extra = parser.parse_known_args(argv[:len(argv) - len(ros_args)])

    pids = [os.getpid()]
    if options.child:
        pids.append(subprocess.Popen(["sleep", "60"]).pid)
    for name in options.ignore:
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    for name in ("SIGINT", "SIGTERM"):
        if name not in options.ignore:
            signal.signal(getattr(signal, name), _exit_on(name))
    if not options.silent:
        print(f"started {os.path.basename(sys.argv[0])} extra={extra} ros_args={ros_args}")
        print("a line on stderr", file=sys.stderr)
        for name in options.print_env:
            print(f"env {name}={os.environ.get(name)}")
    if options.pid_file:
        with open(options.pid_file, "a") as handle:
            handle.write("".join(f"{pid}\n" for pid in pids))
    if options.after is not None:
        time.sleep(options.after)
        return options.exit_code
    while True:
        time.sleep(3600)


def _exit_on(name):
    def handler(_signum, _frame):
        print(f"got {name}", flush=True)
        sys.exit(0)
    return handler


if __name__ == "__main__":
    sys.exit(main())
