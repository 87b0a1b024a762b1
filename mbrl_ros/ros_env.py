"""The environment a child process needs to use the colcon workspace ``ros_ws/``.

``workspace_env()`` returns a copy of the environment extended the way sourcing
``ros_ws/install/setup.bash`` extends it (``AMENT_PREFIX_PATH``,
``LD_LIBRARY_PATH``, ``PYTHONPATH``, ...), so that a process started with it can
``import mbrl_interfaces`` and find ``share/mbrl_ros``. It reads colcon's own
environment descriptions (``share/<pkg>/package.dsv``) instead of running a
shell. Stdlib only, no rclpy import: the launcher and tests call it before any
ROS process exists. ``LD_LIBRARY_PATH`` is read by the dynamic loader at
process start, which is why this is for *child* processes.

In a pip-only install (ROS 2 from PyPI wheels, workspace built by
``scripts/build_ros_ws.sh``) the venv is the underlay: its prefix goes on
``AMENT_PREFIX_PATH`` after the workspace, as colcon chains
``/opt/ros/<distro>`` on a robot. That build uses --symlink-install, so
children import ``mbrl_ros`` through ``ros_ws/build/mbrl_ros/mbrl_ros``, a
symlink to this checkout's sources (the same files; use
``Path(__file__).resolve()`` to find the checkout).

Shell users: ``source scripts/ros_env.sh``, or
``eval "$(python mbrl_ros/ros_env.py)"``.
"""

from __future__ import annotations

import os
import socket
import sys
import typing
import zlib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_INSTALL = REPO_ROOT / "ros_ws" / "install"



class WorkspaceNotBuiltError(RuntimeError):
    """ros_ws has not been built (and no sourced ROS environment provides it)."""


def workspace_env(
    install: str | os.PathLike | None = None,
    base: dict[str, str] | None = None,
    *,
    domain_id: int | None = None,
) -> dict[str, str]:
    """Return ``base`` (default ``os.environ``) extended with the workspace at ``install``.

    ``install`` defaults to ``$MBRL_ROS_WS_INSTALL`` or this checkout's
    ``ros_ws/install``. If it is not built but the environment already provides
    ``mbrl_interfaces`` (a robot where ``install/setup.bash`` was sourced), the
    environment is returned as it is. ``domain_id`` also isolates the child's
    DDS traffic: it sets ``ROS_DOMAIN_ID`` and keeps discovery on this host.
    """
    env = dict(os.environ if base is None else base)
    install = Path(install or env.get("MBRL_ROS_WS_INSTALL") or DEFAULT_INSTALL)
    if domain_id is not None:
        if not 0 <= domain_id <= 232:
            raise ValueError(f"ROS_DOMAIN_ID must be in 0..232, got {domain_id}")
        env["ROS_DOMAIN_ID"] = str(domain_id)
        env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

    packages = _installed_packages(install)
    if not packages:
        if _provides(env.get("AMENT_PREFIX_PATH", ""), "mbrl_interfaces"):
            return env
        raise WorkspaceNotBuiltError(
            f"no colcon workspace at {install} (no share/colcon-core/packages/* in it) and "
            "no mbrl_interfaces on AMENT_PREFIX_PATH: run scripts/build_ros_ws.sh "
            "(setup.sh does), or on a robot `colcon build` in ros_ws and source install/setup.bash"
        )

    # The venv as underlay, when ROS 2 comes from its wheels.
    venv = Path(sys.prefix)
    if (venv / "share" / "ament_index" / "resource_index" / "packages" / "rclpy").is_file():
        _extend(env, "AMENT_PREFIX_PATH", str(venv), prepend=False)

    for name in _topological_order(packages):
        prefix = install / name
        dsv = prefix / "share" / name / "package.dsv"
        if dsv.is_file():
            for op, variable, value in _read_dsv(dsv, prefix):
                _apply(env, op, variable, value)
    return env


# Set in a process that reexec_in_workspace started, so that it never re-executes again.
REEXEC_MARK = "MBRL_ROS_IN_WORKSPACE"


def domain_in_use(domain: int) -> bool:
    """Whether a DDS participant on this host is in ROS domain ``domain``: the first participant of a
    domain binds its well-known metatraffic unicast port (the RTPS port mapping that Fast DDS and
    Cyclone DDS follow: 7400 + 250 * domain + 10), which no other process can then bind."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("", 7410 + 250 * domain))
        except OSError:
            return True
    return False


def free_domain_id(label: str, domains: int = 200) -> int:
    """A ROS domain (1..domains) for a run of its own: the first free one from a hash of the pid and
    ``label``, so two runs on one machine (a demo and a test, two tests) do not talk to each other,
    and none talks to robots on the default domain 0."""
    start = zlib.crc32(f"{os.getpid()}:{label}".encode())
    candidates = [1 + (start + k) % domains for k in range(domains)]
    return next((d for d in candidates if not domain_in_use(d)), candidates[0])


def reexec_in_workspace(cli_args: list[str], why: str) -> "typing.NoReturn":
    """Replace this process by ``python -m mbrl_ros.cli *cli_args`` in ``workspace_env()``.

    For commands that need the workspace's message types (``why`` says which are
    missing) in a process started without its environment; ``LD_LIBRARY_PATH``
    only counts at process start, hence a new process. Raises
    WorkspaceNotBuiltError when there is no workspace, or when this process was
    itself started this way (the types are missing from the built workspace).
    """
    if os.environ.get(REEXEC_MARK):
        raise WorkspaceNotBuiltError(f"{why}, even in the workspace's environment: rebuild it with "
                                     "scripts/build_ros_ws.sh (or source ros_ws/install/setup.bash)")
    env = workspace_env()
    env[REEXEC_MARK] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "mbrl_ros.cli", *cli_args], env)


def mbrl_interfaces_usable() -> bool:
    """Whether this process can use mbrl_interfaces messages (the Python module and its C type support)."""
    try:
        from mbrl_interfaces.msg import CommandVector

        type(CommandVector).__import_type_support__()
    except Exception:  # ImportError, or rosidl's UnsupportedTypeSupport when the libraries are not found
        return False
    return True


def restart_in_workspace_if_needed(cli_args: list[str]) -> None:
    """For commands that use mbrl_interfaces messages: ``reexec_in_workspace(cli_args)`` unless this
    process can use them already (then it returns)."""
    if not mbrl_interfaces_usable():
        reexec_in_workspace(cli_args, "mbrl_interfaces cannot be imported")


def _installed_packages(install: Path) -> dict[str, set[str]]:
    """Package name -> run dependencies inside the workspace (isolated or merged layout)."""
    index_dirs = [install / "share" / "colcon-core" / "packages"]
    if install.is_dir():
        index_dirs += [p / "share" / "colcon-core" / "packages" for p in sorted(install.iterdir()) if p.is_dir()]
    packages: dict[str, set[str]] = {}
    for index in index_dirs:
        if index.is_dir():
            for f in index.iterdir():
                if f.is_file() and not f.name.startswith("."):
                    text = f.read_text().strip()
                    packages[f.name] = set(text.split(os.pathsep)) if text else set()
    return {name: deps & packages.keys() for name, deps in packages.items()}


def _topological_order(packages: dict[str, set[str]]) -> list[str]:
    """Dependencies first, ties by name, as colcon's setup scripts order them."""
    remaining = {name: set(deps) for name, deps in packages.items()}
    ordered: list[str] = []
    while remaining:
        ready = sorted(name for name, deps in remaining.items() if not deps)
        if not ready:
            raise RuntimeError("circular dependency between workspace packages: " + ", ".join(sorted(remaining)))
        ordered.append(ready[0])
        del remaining[ready[0]]
        for deps in remaining.values():
            deps.discard(ready[0])
    return ordered


def _read_dsv(path: Path, prefix: Path) -> list[tuple[str, str, str]]:
    """(operation, variable, value) from a colcon .dsv file, following its ``source`` lines."""
    ops: list[tuple[str, str, str]] = []
    sourced: list[str] = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        op, _, rest = line.partition(";")
        if op == "source":
            base = os.path.splitext(rest)[0]
            if base not in sourced:
                sourced.append(base)
            continue
        variable, *values = rest.split(";")
        if op in ("set", "set-if-unset"):
            value = ";".join(values)
            candidate = prefix / value if value else prefix
            ops.append((op, variable, str(candidate) if candidate.exists() else value))
            continue
        for value in values:
            ops.append((op, variable, str(prefix / value) if value else str(prefix)))
    # A sourced script is used through its .dsv twin; shell-only hooks are skipped
    # (colcon and ament generate a .dsv for every hook they write).
    for base in sourced:
        twin = Path(base) if os.path.isabs(base) else prefix / base
        twin = twin.with_name(twin.name + ".dsv")
        if twin.is_file():
            ops += _read_dsv(twin, prefix)
    return ops


def _apply(env: dict[str, str], op: str, variable: str, value: str) -> None:
    if op == "set":
        env[variable] = value
    elif op == "set-if-unset":
        env.setdefault(variable, value)
    elif op == "append-non-duplicate":
        _extend(env, variable, value, prepend=False)
    elif op == "prepend-non-duplicate":
        _extend(env, variable, value, prepend=True)
    elif op == "prepend-non-duplicate-if-exists":
        if os.path.exists(value):
            _extend(env, variable, value, prepend=True)
    else:
        raise RuntimeError(f"unknown colcon environment operation {op!r} for {variable}")


def _extend(env: dict[str, str], variable: str, value: str, *, prepend: bool) -> None:
    parts = [p for p in env.get(variable, "").split(os.pathsep) if p and p != value]
    env[variable] = os.pathsep.join([value, *parts] if prepend else [*parts, value])


def _provides(ament_prefix_path: str, package: str) -> bool:
    return any(
        (Path(prefix) / "share" / "ament_index" / "resource_index" / "packages" / package).is_file()
        for prefix in ament_prefix_path.split(os.pathsep)
        if prefix
    )


def _shell_exports(env: dict[str, str], before: dict[str, str]) -> str:
    import shlex

    changed = sorted(k for k in env if env[k] != before.get(k))
    return "\n".join(f"export {k}={shlex.quote(env[k])}" for k in changed)


if __name__ == "__main__":
    # `eval "$(python mbrl_ros/ros_env.py [INSTALL])"` exports what changed.
    try:
        print(_shell_exports(workspace_env(sys.argv[1] if len(sys.argv) > 1 else None), dict(os.environ)))
    except WorkspaceNotBuiltError as error:
        print(f"ros_env: {error}", file=sys.stderr)
        sys.exit(1)
