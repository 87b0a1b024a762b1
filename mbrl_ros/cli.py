"""The ``mbrl-ros`` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mbrl-ros", description=__doc__)
    parser.add_subparsers(dest="command", required=True)
    args = parser.parse_args(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
