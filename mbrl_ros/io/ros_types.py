"""The mbrl_interfaces message types for ``rosbags``, so bags can be read and written without ROS 2.

rosbags knows the standard messages of each ROS 2 release but not ours:
``register_mbrl_types`` adds them to a typestore from the ``.msg`` files
themselves (``ros_ws/src/mbrl_interfaces/msg`` in a checkout, or
``share/mbrl_interfaces/msg`` of an installed workspace), so there is one
definition, the one rosidl builds. Pure Python: rosbags only, no rclpy.

    store = mbrl_typestore()
    raw = store.serialize_cdr(msg, "mbrl_interfaces/msg/StateVector")
"""

from __future__ import annotations

import os
from pathlib import Path

from rosbags.typesys import Stores, get_typestore, get_types_from_msg
from rosbags.typesys.store import Typestore

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
