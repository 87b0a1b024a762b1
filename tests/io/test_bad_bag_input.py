"""Bad bag input: a clear error naming the file and what is wrong, a non-zero exit, nothing overwritten.

Each case breaks a good bag one way (metadata.yaml that is not YAML, lacks a
key, has a key of the wrong type or an unknown storage, lists a file that is
not there; a storage file cut short; a foreign file under a storage file's
name) and runs ``bag info``, ``bag info --count``, ``fit`` and ``replay`` on it through the
command line's entry point, then ``bag repair``: which rebuilds a bag whose
storage survived (keeping the original beside it) and refuses the rest.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from mbrl_ros.cli import main
from mbrl_ros.io.bag_tools import DAMAGED_SUFFIX
from mbrl_ros.io.bags import default_typestore
from mbrl_ros.io.recording import BagRecorder

from test_bags import command_cdr, state_cdr  # tests/io is on sys.path

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


def good_bag(path: Path, storage: str) -> Path:
    """The stack's state and command for 800 steps."""
    store = default_typestore()
    with BagRecorder(path, storage=storage, typestore=store) as bag:
        bag.add_topic("/car/state", "mbrl_interfaces/msg/StateVector")
        bag.add_topic("/car/hw/command", "mbrl_interfaces/msg/CommandVector")
        for k in range(800):
            t = 10**12 + k * 200_000_000
            bag.write("/car/state", t + 1, state_cdr(store, t, [k, 0.0, 0.0, 1.0, 0.0]))
            bag.write("/car/hw/command", t + 2, command_cdr(store, t, [np.sin(k), 0.0]))
    return path


def edit_metadata(bag: Path, change) -> None:
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())
    change(meta["rosbag2_bagfile_information"])
    (bag / "metadata.yaml").write_text(yaml.safe_dump(meta))


def storage_file(bag: Path) -> Path:
    return next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))


def cut(file: Path, fraction: float) -> None:
    os.truncate(file, int(file.stat().st_size * fraction))


# case -> (break the bag, the file the error names (relative to the bag), what the error says,
#          whether repair can rebuild it from its storage)
CASES = {
    "metadata not YAML": (lambda b: (b / "metadata.yaml").write_text("rosbag2_bagfile_information: [1, 2\n"),
                          "metadata.yaml", "not valid YAML", True),
    "metadata of something else": (lambda b: (b / "metadata.yaml").write_text("ros1_bag: {version: 2}\n"),
                                   "metadata.yaml", "not rosbag2 metadata", True),
    "metadata key missing": (lambda b: edit_metadata(b, lambda i: i.pop("relative_file_paths")),
                             "metadata.yaml", "key 'rosbag2_bagfile_information.relative_file_paths': expected a list",
                             True),
    "metadata key of the wrong type": (lambda b: edit_metadata(b, lambda i: i.update(version="nine")),
                                       "metadata.yaml", "key 'rosbag2_bagfile_information.version': expected an "
                                       "integer, got 'nine'", True),
    "unknown storage": (lambda b: edit_metadata(b, lambda i: i.update(storage_identifier="rosbag_v2")),
                        "metadata.yaml", "storage 'rosbag_v2' is not one this reader knows", True),
    "listed file missing": (lambda b: edit_metadata(b, lambda i: i["relative_file_paths"].append("gone_1.mcap")),
                            "metadata.yaml", "lists storage files that are not there", True),
    "storage cut short": (lambda b: cut(storage_file(b), 0.6), "{storage}", "truncated", True),
    "foreign file": (lambda b: storage_file(b).write_bytes(PNG), "{storage}", "not a", False),
}


def tree(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(path.rglob("*"))}


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("case", list(CASES))
def test_bad_bag_gives_a_clear_error_and_changes_nothing(tmp_path, capsys, storage, case):
    breaks, named, says, repairable = CASES[case]
    bag = good_bag(tmp_path / "run" / "bag_0000", storage)
    named = str(bag / named.format(storage=storage_file(bag).name))
    breaks(bag)
    before = tree(tmp_path)
    for argv, code in ((["bag", "info", str(bag)], 1), (["bag", "info", str(bag), "--count"], 1),
                       (["fit", str(bag), "--robot", "car", "--out", str(tmp_path / "fit")], 2),
                       (["replay", str(bag)], 2)):
        assert main(argv) == code, argv
        err = capsys.readouterr().err
        assert named in err and says in err, (argv, err)
        assert "Traceback" not in err
        assert tree(tmp_path) == before, argv  # nothing written, nothing changed (no fit output either)

    status = main(["bag", "repair", str(bag)])
    out, err = capsys.readouterr()
    if repairable:  # the storage survived: a complete bag again, the original kept as it was beside it
        assert status == 0 and "repaired" in out, out + err
        damaged = bag.with_name(bag.name + DAMAGED_SUFFIX)
        assert tree(damaged) == {k.removeprefix("run/bag_0000/"): v for k, v in before.items()
                                 if k.startswith("run/bag_0000/")}
        assert main(["bag", "info", str(bag), "--count"]) == 0
    else:
        assert status == 1 and str(storage_file(bag)) in err and "Traceback" not in err, err
        assert tree(tmp_path) == before
