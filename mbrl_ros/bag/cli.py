"""`mbrl-ros bag info BAG [--count] [--json FILE]` and `mbrl-ros bag repair BAG [-o OUT]`.

Thin: the work is ``mbrl_ros.io.bag_tools``. A bad bag is one line on stderr
naming it (exit 1), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("bag", help="inspect or repair rosbag2 recordings",
                                   description="Inspect (info) or repair (repair) rosbag2 directories, "
                                               "MCAP or sqlite3.")
    which = parser.add_subparsers(dest="bag_command", required=True, metavar="{info,repair}")
    info = which.add_parser(
        "info", help="storage, duration, per topic type and message count",
        description="Storage, duration and per topic the type and message count of a bag, or summed over "
                    "the complete bags of a folder (a split recording).")
    info.add_argument("bag", metavar="BAG", help="bag directory, or a folder of bags")
    info.add_argument("--count", action="store_true",
                      help="read and decode every message instead of trusting metadata.yaml; "
                           "report the ones that cannot be read or decoded")
    info.add_argument("--json", metavar="FILE",
                      help='also write {"storage", "duration_s", "topics": [{"name", "type", "count"}]} to FILE')
    info.set_defaults(func=run_info)
    repair = which.add_parser(
        "repair", help="make a killed recording a complete bag",
        description="Turn a recording that was killed (no metadata.yaml, an MCAP file without footer or cut "
                    "inside a chunk, a sqlite3 database with an open transaction) into a complete bag of every "
                    "message that survived. The damaged original is kept as BAG.damaged. A folder of bags: "
                    "every damaged bag in it is repaired. A bag a live process is still writing (a data_logger's "
                    "open bag: a process here holds its file open for writing) is left alone.")
    repair.add_argument("bag", metavar="BAG", help="bag directory, or a folder of bags")
    repair.add_argument("-o", "--output", metavar="OUT",
                        help="write the repaired bag to OUT (a new path) and leave BAG as it is (one bag only)")
    repair.set_defaults(func=run_repair)


def run_info(args: argparse.Namespace) -> int:
    from mbrl_ros.io.bag_tools import bag_info
    from mbrl_ros.io.bags import BagError

    try:
        info = bag_info(args.bag, count=args.count, progress=True)
        if args.json:
            _write_json(Path(args.json), info.as_json())
    except BagError as error:
        print(f"mbrl-ros bag info: error: {error}", file=sys.stderr)
        return 1
    source = "read and decoded" if info.counted else "from metadata.yaml"
    print(f"bag:       {info.path}" + (f" ({len(info.bags)} bags, summed)" if len(info.bags) > 1 else ""))
    print(f"storage:   {info.storage}")
    print(f"duration:  {info.duration_s:.3f} s")
    print(f"messages:  {info.message_count} ({source})" + ("  empty bag" if not info.message_count else ""))
    width = max((len(t.name) for t in info.topics), default=0)
    for topic in info.topics:
        line = f"  {topic.name:<{width}}  {topic.count:>9}  {topic.type}"
        if info.counted and topic.decoded is None:
            line += f"  ({topic.decoding})"  # counted, not decoded: the type is unknown here
        elif info.counted and topic.decoded != topic.count:
            line += f"  ({topic.decoded} decode)"
        print(line)
    for bag in info.incomplete:
        if bag in info.writing:
            print(f"not counted: {bag} is still being written ({info.writing[bag]})")
        else:
            print(f"not counted: {bag} has no metadata.yaml; run `mbrl-ros bag repair {bag}`")
    if info.problems:
        print(f"{len(info.problems)} messages or reads failed:")
        for problem in info.problems:
            print(f"  {problem}")
    return 1 if info.problems else 0


def run_repair(args: argparse.Namespace) -> int:
    from mbrl_ros.io.bag_tools import repair_bag, repair_path
    from mbrl_ros.io.bags import BagError

    try:
        results = [repair_bag(args.bag, args.output, progress=True)] if args.output else \
            repair_path(args.bag, progress=True)
    except (BagError, OSError) as error:
        print(f"mbrl-ros bag repair: error: {error}", file=sys.stderr)
        return 1
    if not results:
        print(f"{args.bag}: every bag in it is complete; nothing to repair")
    for result in results:
        if result.was_complete:
            print(f"{result.path}: complete ({result.message_count} messages); nothing to repair")
            continue
        if not result.storage:  # still written, or nothing survived: left as it was (the note names the bag)
            print("; ".join(result.lost))
            continue
        print(f"{result.path}: repaired ({result.storage}), recovered {result.message_count} messages"
              + (f"; damaged original kept as {result.damaged_copy}" if result.damaged_copy else ""))
        width = max((len(t) for t in result.counts), default=0)
        for topic, n in sorted(result.counts.items()):
            print(f"  {topic:<{width}}  {n:>9}")
        for note in result.lost:
            print(f"  note: {note}")
    return 0


def _write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` through a temporary file, so a reader never sees half of it."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(path)
    except OSError as error:
        from mbrl_ros.io.bags import BagError

        raise BagError(f"{path}: cannot write the JSON: {error.strerror}") from None
