"""The mbrl_interfaces message types for ``rosbags``, so bags can be read and written without ROS 2.

rosbags knows the standard messages of each ROS 2 release but not ours:
``register_mbrl_types`` adds them to a typestore from the ``.msg`` files
themselves (``ros_ws/src/mbrl_interfaces/msg`` in a checkout, or
``share/mbrl_interfaces/msg`` of an installed workspace), so there is one
definition, the one rosidl builds. Pure Python: rosbags only, no rclpy.

    store = mbrl_typestore()
    raw = store.serialize_cdr(msg, "mbrl_interfaces/msg/StateVector")

``bag_typestore`` builds the typestore one bag is decoded with: the types the
bag defines itself (MCAP schemas, sqlite3 ``message_definitions``) as the bag
defines them, the others as built in here.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Mapping

from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

# How each type of a bag is decoded (``bag_typestore``).
FROM_BAG = "definition in the bag"
BUILT_IN = "built-in definition"
UNKNOWN = "not decodable: unknown type"

PACKAGE = "mbrl_interfaces"
MESSAGES = ("StateVector", "CommandVector", "ModelUpdate", "CycleTiming")
# The robots' release (docker/Dockerfile); the standard messages we use are the
# same in Kilted, which the pip-only install runs.
DEFAULT_STORE = Stores.ROS2_JAZZY

_CHECKOUT_MSG_DIR = Path(__file__).resolve().parents[2] / "ros_ws" / "src" / PACKAGE / "msg"

# ackermann_msgs is in no ROS 2 wheel, yet F1TENTH-style car drivers speak it, so
# their bags need it: upstream's definitions (ros-drivers/ackermann_msgs), field for
# field, which fixes the CDR layout and the RIHS01 hash.
ACKERMANN_DEFINITIONS = {
    "ackermann_msgs/msg/AckermannDrive": (
        "float32 steering_angle\nfloat32 steering_angle_velocity\nfloat32 speed\nfloat32 acceleration\nfloat32 jerk\n"
    ),
    "ackermann_msgs/msg/AckermannDriveStamped": "std_msgs/Header header\nAckermannDrive drive\n",
}


def msg_dir_candidates() -> list[Path]:
    """Where the .msg files are looked for, in order: this checkout, then ``AMENT_PREFIX_PATH``."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    return [_CHECKOUT_MSG_DIR] + [Path(p) / "share" / PACKAGE / "msg" for p in prefixes]


def find_msg_dir() -> Path:
    """The first candidate directory holding all of ``MESSAGES``; FileNotFoundError naming all tried."""
    candidates = msg_dir_candidates()
    for directory in candidates:
        if all((directory / f"{name}.msg").is_file() for name in MESSAGES):
            return directory
    tried = ", ".join(str(d) for d in candidates)
    raise FileNotFoundError(f"no {PACKAGE} .msg files ({', '.join(MESSAGES)}) in any of: {tried}")


def message_definitions(msg_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """Full type name (``mbrl_interfaces/msg/StateVector``) -> its .msg text."""
    directory = Path(msg_dir) if msg_dir is not None else find_msg_dir()
    definitions = {}
    for name in MESSAGES:
        path = directory / f"{name}.msg"
        try:
            definitions[f"{PACKAGE}/msg/{name}"] = path.read_text()
        except OSError as error:
            raise FileNotFoundError(f"cannot read {path}: {error}") from error
    return definitions


def register_mbrl_types(store: Typestore, msg_dir: str | os.PathLike | None = None) -> Typestore:
    """Add the mbrl_interfaces messages to ``store`` (in place) and return it."""
    directory = Path(msg_dir) if msg_dir is not None else find_msg_dir()
    types = {}
    for typename, text in message_definitions(directory).items():
        try:
            types.update(get_types_from_msg(text, typename))
        except Exception as error:  # rosbags raises its own parse errors
            raise ValueError(f"cannot parse {directory / typename.rsplit('/', 1)[1]}.msg: {error}") from error
    store.register(types)
    return store


def register_ackermann_types(store: Typestore) -> Typestore:
    """Add ackermann_msgs' AckermannDrive and AckermannDriveStamped to ``store`` (in place) and return it."""
    types = {}
    for typename, text in ACKERMANN_DEFINITIONS.items():
        types.update(get_types_from_msg(text, typename))
    store.register(types)
    return store


def mbrl_typestore(store: Stores = DEFAULT_STORE, msg_dir: str | os.PathLike | None = None) -> Typestore:
    """A fresh typestore of ``store``'s standard messages plus mbrl_interfaces and ackermann_msgs."""
    return register_ackermann_types(register_mbrl_types(get_typestore(store), msg_dir))


@functools.lru_cache(maxsize=1)
def _base_typestore() -> Typestore:
    return mbrl_typestore()


def bag_typestore(definitions: Mapping[str, tuple[str, str]], types: tuple[str, ...] = (),
                  base: Typestore | None = None) -> tuple[Typestore, dict[str, str]]:
    """The typestore for one bag, and how each of its types is decoded.

    ``definitions``: type -> (format, text) as the bag carries them
    (``ros2msg`` or ``ros2idl``, dependencies included). ``types``: the bag's
    other types (no definition in it). A type the bag defines is decoded by
    that definition, even where a built-in one of the same name differs (a
    robot's own message, changed since); a type it does not define by the
    built-in one; else it is ``UNKNOWN``. A definition that cannot be parsed
    falls back to the built-in one, and says so. ``base``: the built-in types
    (default: ``mbrl_typestore()``). Cached per set of definitions and base.
    """
    return _bag_typestore(tuple(sorted(definitions.items())), tuple(sorted(set(types) - set(definitions))),
                          base if base is not None else _base_typestore())


@functools.lru_cache(maxsize=64)
def _bag_typestore(definitions: tuple, others: tuple, base: Typestore) -> tuple[Typestore, dict[str, str]]:
    parsed: dict = {}
    status: dict[str, str] = {}
    for typename, (text_format, text) in definitions:
        try:
            found = _parse_definition(typename, text_format, text)
        except Exception as error:  # rosbags' parsers raise their own errors
            known = typename in base.fielddefs
            status[typename] = (f"the bag's definition cannot be parsed ({type(error).__name__}: {error}); "
                                + (BUILT_IN + " used" if known else UNKNOWN))
            continue
        clash = [name for name, (_, fields) in found.items() if name in parsed and parsed[name][1] != fields]
        if clash:
            status[typename] = (f"the bag defines {clash[0]} twice, differently; "
                                + (BUILT_IN + " used" if typename in base.fielddefs else UNKNOWN))
            continue
        parsed.update(found)
        status[typename] = FROM_BAG
    if not parsed:
        store = base
    else:
        store = Typestore()
        store.fielddefs.update(base.fielddefs)
        store.types.update(base.types)
        for name, (_, fields) in parsed.items():
            have = store.fielddefs.get(name)
            if have is not None and _fields(have[1]) != _fields(fields):
                del store.fielddefs[name], store.types[name]  # the bag's own definition wins
        store.register({name: value for name, value in parsed.items() if name not in store.fielddefs})
    for typename in others:
        status[typename] = BUILT_IN if typename in store.fielddefs else UNKNOWN
    for typename, why in list(status.items()):
        if why != FROM_BAG and typename not in store.fielddefs and not why.endswith(UNKNOWN):
            status[typename] = UNKNOWN
    return store, status


def _fields(fields: list) -> list:
    return [(name.lower(), desc) for name, desc in fields]


_IDL_HEADER = re.compile(r"^=+\nIDL: (\S+)\n", re.MULTILINE)


def _parse_definition(typename: str, text_format: str, text: str) -> dict:
    if text_format == "ros2msg":
        return get_types_from_msg(text, typename)
    if text_format == "ros2idl":
        # rosbag2 joins the IDL files of a type and its dependencies, each after a
        # line of '=' and "IDL: pkg/msg/Type".
        found: dict = {}
        for part in _IDL_HEADER.split("=" * 80 + "\nIDL: " + typename + "\n" + text)[1:][1::2]:
            found.update(get_types_from_idl(part))
        if typename not in found:
            raise ValueError(f"the IDL text does not define {typename}")
        return found
    raise ValueError(f"definition format '{text_format}' is not ros2msg or ros2idl")
