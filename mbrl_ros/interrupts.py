"""SIGINT and SIGTERM in the ``mbrl-ros`` command: both end a subcommand through its own cleanup.

Python turns SIGINT into KeyboardInterrupt but leaves SIGTERM (what ``kill``, a service manager, a CI
runner's timeout send) at its default: the process dies at once, no ``finally`` runs. A demo killed that
way never stopped its stack: the nodes were left to the kernel's parent-death signal, and a busy
one (the niced trainer in an epoch, on a loaded machine) ran on, re-parented to pid 1, after the demo
had gone. ``Terminated`` is SIGTERM raised like Ctrl-C, a KeyboardInterrupt, so every cleanup
written for Ctrl-C (``except KeyboardInterrupt``, ``finally``) runs for it too. Stdlib only.
"""

from __future__ import annotations

import signal


class Terminated(KeyboardInterrupt):
    """SIGTERM received (raised in the main thread by ``stop_on_signals``' handler)."""

    signum = signal.SIGTERM


def _raise_terminated(_signum, _frame) -> None:
    raise Terminated()


def stop_on_signals() -> None:
    """From the main thread: SIGINT raises KeyboardInterrupt, even where the parent started us with SIGINT
    ignored (a non-interactive shell's background job, some test runners' workers: Python keeps an
    inherited SIG_IGN, and ``mbrl-ros replay --loop`` ran on after its SIGINT, a CI failure); SIGTERM raises
    ``Terminated``."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_terminated)


def signal_name(interrupt: KeyboardInterrupt) -> str:
    return "SIGTERM" if isinstance(interrupt, Terminated) else "SIGINT"


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """The shell's code for a command ended by the signal: 128 + its number (143 SIGTERM, 130 SIGINT)."""
    return 128 + (signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT)
