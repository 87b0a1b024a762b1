"""``mbrl-ros fit`` data-parallel on torch.distributed: each process a rank reading its share of the bags.

On one machine ``mbrl-ros fit BAG... --nproc N`` starts N ranks with torch's own launcher
(``torch.distributed.run``, what ``torchrun`` runs). Across machines, run this module under
``torchrun`` on each, with its standard rendezvous options and the same arguments::

    torchrun --nnodes 2 --nproc-per-node 1 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m mbrl_ros.offline.distributed BAG... --robot car --out DIR

The BAG arguments must name the same bags, in the same order, on every machine (each rank
reads only its consecutive share). Ranks talk over gloo: the fit trains on the CPU (CUDA
tensors would go over NCCL where each local rank has a GPU; not exercised here, no GPU).
Rank 0 alone writes the checkpoint and the report. A rank that dies ends the job: the
launcher stops the others and the error names the rank; files are written only after every
model is fitted, checkpoints atomically, so no half-written output is left.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.distributed as dist


def worker_argv(args: argparse.Namespace) -> list[str]:
    """The ``fit`` arguments of ``args`` as a command line for each rank (without ``--nproc``)."""
    argv = [*args.bags, "--robot", args.robot, "--out", args.out]
    for flag, value in (("--model", args.model), ("--json", args.json), ("--config-dir", args.config_dir),
                        ("--task", args.task)):
        if value is not None:
            argv += [flag, value]
    return argv + (["--only"] if args.only else [])


def launch(args: argparse.Namespace, nproc: int) -> int:
    """Run the fit in ``nproc`` local ranks with torch's launcher; 1 (and which rank failed) if one fails."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    launcher = parse_args(["--standalone", f"--nproc-per-node={nproc}", "-m", __name__, *worker_argv(args)])
    try:
        run(launcher)
    except ChildFailedError as err:
        print(f"mbrl-ros fit: error: {failure_summary(err)}; no checkpoint or report written", file=sys.stderr)
        return 1
    return 0


def failure_summary(err) -> str:
    """Which rank failed first and how (exit code or signal), then the ranks stopped after it."""
    first_rank, first = err.get_first_failure()

    def how(failure) -> str:
        if failure.exitcode < 0:
            return f"was killed by {failure.signal_name()}"
        return f"exited with code {failure.exitcode}"

    text = f"rank {first_rank} (pid {first.pid}) {how(first)}"
    others = [f"rank {rank} (pid {failure.pid}) {how(failure)}" for rank, failure in sorted(err.failures.items())
              if rank != first_rank]
    return text + (f"; then {', '.join(others)}" if others else "")


def main(argv: list[str] | None = None) -> int:
    """One rank: join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR...), fit its share."""
    from mbrl_ros.offline.cli import fit_parser, run_fit_args

    args = fit_parser().parse_args(sys.argv[1:] if argv is None else argv)
    # The fit's tensors (weights, gradients, sums, gathered objects) are on the CPU: gloo carries them. Where
    # every local rank has a GPU of its own, CUDA tensors go over NCCL (NCCL needs one device per rank).
    if torch.cuda.device_count() >= int(os.environ.get("LOCAL_WORLD_SIZE", 1)):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("cpu:gloo,cuda:nccl")
    else:
        dist.init_process_group("gloo")
    try:
        return run_fit_args(args, data_parallel=True)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
