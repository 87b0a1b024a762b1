"""`mbrl-ros launch FILE [name:=value ...] [--show-args] [--dry-run]`.

Also `mbrl-ros launch PACKAGE FILE_NAME ...` as with `ros2 launch`: the file is
looked up in the package's share directory.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from . import make_runner
from .description import (BUILTIN_CONFIGURATIONS, LaunchDescription, discover_arguments,
                          load_launch_file, parse_cli_arguments)
from .errors import LaunchError
from .packages import find_package_share
from .substitutions import SubstitutionFailure

DESCRIPTION = ("Run a ROS 2 YAML launch file without ros2launch (pip-only installs): each node "
               "its own process, output prefixed by node name, Ctrl-C stops them all.")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `launch` on the `mbrl-ros` command's subparsers."""
    parser = subparsers.add_parser("launch", help="run a YAML launch file (like ros2 launch)",
                                   description=DESCRIPTION)
    configure_parser(parser)
    parser.set_defaults(func=run_from_args, launch_parser=parser)
    return parser


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE",
                        help="launch file (or a package name, then the file name, as ros2 launch)")
    # Everything after FILE, options included: argparse cannot interleave
    # positionals and options under the `mbrl-ros` command's parse_args, and
    # `FILE --dry-run robot:=car` must work. run_from_args picks the options out.
    parser.add_argument("arguments", nargs=argparse.REMAINDER, metavar="name:=value",
                        help="launch arguments (see --show-args)")
    parser.add_argument("-s", "--show-args", action="store_true",
                        help="list the launch arguments, included files' too, and exit")
    parser.add_argument("--dry-run", action="store_true",
                        help="print each node's resolved command, environment and parameters; "
                             "start nothing")


def run_from_args(args: argparse.Namespace) -> int:
    late = _take_late_options(args)
    if late is not None:
        return late
    try:
        path, launch_arguments = _locate(args.file, list(args.arguments))
        if args.show_args:
            return _show_arguments(path, parse_cli_arguments(launch_arguments))
        description = load_launch_file(path, launch_arguments)
    except LaunchError as err:
        print(f"mbrl-ros launch: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:  # Ctrl-C or SIGTERM while reading files: nothing was started
        from mbrl_ros.interrupts import exit_code

        return exit_code(interrupt)
    if args.dry_run:
        with description:
            print(format_dry_run(description))
        return 0
    return make_runner(description).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mbrl-ros launch", description=DESCRIPTION)
    configure_parser(parser)
    parser.set_defaults(launch_parser=parser)
    return run_from_args(parser.parse_args(argv))


_LATE_FLAGS = {"-s": "show_args", "--show-args": "show_args", "--dry-run": "dry_run"}


def _take_late_options(args: argparse.Namespace) -> int | None:
    """Move options written after FILE out of `args.arguments`; returns an exit
    status if the command is already answered (help, or an unknown option)."""
    remaining = []
    for item in args.arguments:
        if item in _LATE_FLAGS:
            setattr(args, _LATE_FLAGS[item], True)
        elif item in ("-h", "--help"):
            parser = getattr(args, "launch_parser", None)
            if parser is not None:
                parser.print_help()
            return 0
        elif item.startswith("-"):
            print(f"mbrl-ros launch: error: unknown option '{item}' "
                  f"(options: {', '.join(_LATE_FLAGS)})", file=sys.stderr)
            return 2
        else:
            remaining.append(item)
    args.arguments = remaining
    return None


def _locate(first: str, rest: list[str]) -> tuple[Path, list[str]]:
    """FILE args... or PACKAGE FILE_NAME args... (the second when FILE is no file)."""
    if os.path.exists(first) or not rest or ":=" in rest[0]:
        return Path(first), rest
    package, file_name = first, rest[0]
    try:
        share = Path(find_package_share(package, os.environ))
    except SubstitutionFailure as err:
        raise LaunchError(f"'{first}' is neither a file nor a package: {err}") from None
    candidates = [share / "launch" / file_name, *sorted(share.rglob(file_name))]
    for candidate in candidates:
        if candidate.is_file():
            return candidate, rest[1:]
    raise LaunchError(f"no launch file '{file_name}' in package '{package}' ({share})")


def _show_arguments(path: Path, given: dict[str, str]) -> int:
    arguments, notes = discover_arguments(path, given)
    print("Arguments (pass arguments as '<name>:=<value>'):\n")
    if not arguments:
        print("  No arguments.\n")
    top_file = str(Path(os.path.abspath(path)))
    for info in arguments:
        print(f"    '{info.name}':")
        print(f"        {info.description or 'no description given'}")
        if info.choices:
            print(f"        Valid choices are: {info.choices}")
        print("        (required)" if info.default is None else f"        (default: '{info.default}')")
        if info.file != top_file:
            print(f"        (declared in {info.file}:{info.line})")
        print()
    print("Also accepted: " + ", ".join(f"{k} ({v})" for k, v in BUILTIN_CONFIGURATIONS.items()))
    for note in notes:
        print(f"Note: not fully resolved without launching: {note}")
    return 0


def format_dry_run(description: LaunchDescription) -> str:
    lines = [f"# {description.path}: {len(description.nodes)} node process(es); nothing started"]
    for node in description.nodes:
        lines.append("")
        lines.append(f"[{node.label}] {node.source} output={node.output} "
                     f"respawn={str(node.respawn).lower()}"
                     + (f" respawn_delay={node.respawn_delay:g}" if node.respawn else "")
                     + (f" respawn_max_retries={node.respawn_max_retries}"
                        if node.respawn and node.respawn_max_retries >= 0 else "")
                     + (" on_exit=shutdown" if node.shutdown_on_exit else ""))
        for name, value in sorted(node.environment_changes.items()):
            lines.append(f"  env {name}={value}")
        lines.append("  $ " + shlex.join(node.command))
        for params_file in node.params_files:
            if description.params_directory and params_file.startswith(str(description.params_directory)):
                lines.append(f"  generated {params_file} (deleted when the launch ends):")
                lines.extend("    " + line for line in Path(params_file).read_text().splitlines())
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
