"""Load a launch file with its arguments into a LaunchDescription: the resolved
node processes, ready to run, and the arguments the launch declares."""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from .errors import LaunchArgumentError
from .evaluate import ArgumentInfo, LaunchContext, NodeAction, Visitor

# Launch configurations upstream's process actions read without a declaring `arg`;
# accepted on the command line like declared arguments.
BUILTIN_CONFIGURATIONS = {
    "sigterm_timeout": "seconds between SIGINT and SIGTERM when stopping a node (default 5)",
    "sigkill_timeout": "seconds between SIGTERM and SIGKILL when stopping a node (default 5)",
}


@dataclass
class LaunchDescription:
    """What a launch file resolved to, for the given arguments."""

    path: Path
    arguments: list[ArgumentInfo]      # every argument declared, included files too
    configurations: dict[str, str]     # launch configurations at the end of the file
    nodes: list[NodeAction]
    params_directory: Path | None = None  # generated parameter files, removed by cleanup()
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Generated parameter files go away with the description at the latest.
        self._finalizer = weakref.finalize(self, _remove_directory, self.params_directory)

    def cleanup(self) -> None:
        """Remove generated parameter files (call once no node needs them)."""
        self._finalizer()

    def __enter__(self) -> "LaunchDescription":
        return self

    def __exit__(self, *_exc) -> None:
        self.cleanup()


def _remove_directory(path: Path | None) -> None:
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


def parse_cli_arguments(items: Iterable[str]) -> dict[str, str]:
    """`['robot:=car', 'rate:=20']` -> `{'robot': 'car', 'rate': '20'}`."""
    result: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition(":=")
        if not sep or not name:
            raise LaunchArgumentError(f"launch arguments are written name:=value, got '{item}'")
        result[name] = value
    return result


def discover_arguments(path: str | os.PathLike, arguments: Mapping[str, str] | None = None,
                       *, environment: Mapping[str, str] | None = None
                       ) -> tuple[list[ArgumentInfo], list[str]]:
    """Every argument the launch declares, in every branch and included file
    that can be found with these argument values. Starts nothing.
    Returns the arguments and notes on what could not be resolved."""
    visitor = Visitor(LaunchContext(arguments or {}, _environment(environment)), discovery=True)
    visitor.visit_file(Path(os.path.abspath(path)))
    return list(visitor.arguments.values()), visitor.notes


def load_launch_file(path: str | os.PathLike,
                     arguments: Mapping[str, str] | Iterable[str] | None = None,
                     *, environment: Mapping[str, str] | None = None) -> LaunchDescription:
    """Resolve a YAML launch file into the nodes to run, without starting anything.

    `arguments`: `{'robot': 'car'}` or `['robot:=car']`. `environment`: the base
    environment of the nodes (default: this process's). Raises LaunchError
    (LaunchFileError or LaunchArgumentError) naming file, line and tag.
    """
    path = Path(os.path.abspath(path))
    if arguments is None:
        arguments = {}
    elif not isinstance(arguments, Mapping):
        arguments = parse_cli_arguments(arguments)
    base_environment = _environment(environment)

    declared, _ = discover_arguments(path, arguments, environment=base_environment)
    _check_given_arguments(arguments, declared, path)

    params_dir: list[Path] = []

    def params_directory() -> Path:
        if not params_dir:
            params_dir.append(Path(tempfile.mkdtemp(prefix="mbrl_launch_params_")))
        return params_dir[0]

    visitor = Visitor(LaunchContext(arguments, base_environment), discovery=False,
                      params_directory=params_directory, base_environment=base_environment)
    try:
        visitor.visit_file(path)
    except BaseException:
        if params_dir:
            _remove_directory(params_dir[0])
        raise
    return LaunchDescription(path=path, arguments=declared,
                             configurations=visitor.context.configurations, nodes=visitor.nodes,
                             params_directory=params_dir[0] if params_dir else None)


def _environment(environment: Mapping[str, str] | None) -> dict[str, str]:
    """The nodes' base environment: given, else this process's with the colcon workspace
    (``ros_ws/install``) added the way sourcing its setup.bash would, when it is built."""
    if environment is not None:
        return dict(environment)
    from mbrl_ros.ros_env import WorkspaceNotBuiltError, workspace_env

    try:
        return workspace_env()
    except WorkspaceNotBuiltError:
        return dict(os.environ)  # a node that needs mbrl_interfaces says so when it imports it


def _check_given_arguments(given: Mapping[str, str], declared: list[ArgumentInfo],
                           path: Path) -> None:
    by_name = {a.name: a for a in declared}
    unknown = [name for name in given if name not in by_name and name not in BUILTIN_CONFIGURATIONS]
    if unknown:
        listing = "\n".join(f"  {format_argument_line(a)}" for a in declared) or "  (none)"
        raise LaunchArgumentError(
            f"unknown launch argument(s) {', '.join(unknown)} for {path}; valid arguments:\n{listing}")
    for name, value in given.items():
        info = by_name.get(name)
        if info is not None and info.choices is not None and value not in info.choices:
            raise LaunchArgumentError(
                f"argument '{name}' is '{value}', which is not one of its choices: "
                f"{', '.join(info.choices)} (declared at {info.file}:{info.line})")
        if name in BUILTIN_CONFIGURATIONS:
            try:
                if float(value) < 0:
                    raise ValueError
            except ValueError:
                raise LaunchArgumentError(f"{name} must be a non-negative number of seconds, "
                                          f"got '{value}'") from None


def format_argument_line(info: ArgumentInfo) -> str:
    text = info.name
    if info.choices:
        text += f" ({'|'.join(info.choices)})"
    text += " [required]" if info.default is None else f" [default: '{info.default}']"
    return text
