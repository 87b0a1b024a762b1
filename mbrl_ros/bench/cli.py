"""``mbrl-ros bench ...``: benchmarks that print numbers, never pass/fail tests."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="run a benchmark and print its numbers")
    which = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    planners = which.add_parser(
        "planners",
        help="planning-step latency of MPPI/CEM/iLQR against pytorch_mppi",
        description="Median and p99 ms per planning step for each case, the same case through "
        "pytorch_mppi in the same run, and the machine's fp32 GEMM rate.",
    )
    planners.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run, noisier numbers)")
    planners.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    planners.add_argument("--cases", nargs="+", metavar="NAME", help="run only these cases")
    planners.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    planners.set_defaults(func=_run_planners)


def _run_planners(args: argparse.Namespace) -> int:
    from mbrl_ros.bench.planners import main

    return main(quick=args.quick, json_path=args.json, cases=args.cases, threads=args.threads)
