"""One ``main`` for every node: init, spin until SIGINT/SIGTERM, shut down cleanly.

A node class may define ``start()`` (called once it is built, before spinning:
the controller's lifecycle autostart) and ``close()`` (called before the node is
destroyed: the logger closes its bag, the trainer stops its worker, the
controller sends its stop). SIGINT and SIGTERM end the spin but leave the ROS
context up until ``close()`` has run, so what it publishes still goes out
(rclpy's own handlers shut the context down first). A bad
parameter, params file or checkpoint ends the process with exit code 1 and a
message that names it, and so does a key of the node's own section of a params
file that the node does not have (``check_params_files``: a typo, not a default),
and a ``NodeFatalError`` raised in a callback (a node that decided it cannot go on).
Every node has the parameter ``executor``: rclpy's SingleThreadedExecutor
(``single``, the default) or its experimental EventsExecutor (``events``), which
took half the time per message hop here (README, "Executors"), and ``settle_heap``
(off by default): what building the node left alive is frozen out of the cyclic
collector's walk before it starts (``ros/gc_pauses.py``).
"""

from __future__ import annotations

import signal
import sys
from typing import Callable

import rclpy
from rclpy._rclpy_pybind11 import RCLError
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from mbrl_ros.ros.gc_pauses import PAUSES, settle_heap
from mbrl_ros.ros.params import Param, check_params_files, declare_all

class NodeFatalError(RuntimeError):
    """Raised by a node's callback that has decided the process must end (run_node: exit 1 with the message),
    e.g. a lockstep simulator whose recorder never came."""


SPIN_TIMEOUT = 0.1  # s: how long a signal may wait for the executor to come back to Python
EXECUTOR = Param(
    "executor", "single",
    "the rclpy executor that spins this node: 'single' (SingleThreadedExecutor) or 'events' (rclpy's "
    "experimental EventsExecutor: about half the time from a message's arrival to its callback)", read_only=True)
EXECUTORS = ("single", "events")
SETTLE_HEAP = Param(
    "settle_heap", False,
    "true: freeze what building the node left alive out of the cyclic garbage collector's walk before it starts "
    "(the controller: again after each new model's first plan; ros/gc_pauses.py). Off by default: with it on for "
    "every node the race's end-to-end p99 rose from 14.5-14.9 to 30-46 ms, cause not found (README)", read_only=True)


def make_executor(node: Node):
    """The executor the node's ``executor`` parameter names (every node has it; a params file's ``/**``
    section sets it for all of a robot's nodes)."""
    kind = declare_all(node, [EXECUTOR])["executor"]
    if kind not in EXECUTORS:
        raise ValueError(f"parameter 'executor' must be one of {list(EXECUTORS)}, got {kind!r}")
    if kind == "events":
        from rclpy.experimental import EventsExecutor

        return EventsExecutor()
    return rclpy.get_global_executor()


def run_node(make_node: Callable[[], Node], name: str, args: list[str] | None = None) -> int:
    try:
        rclpy.init(args=args if args is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    except RCLError as err:  # a params file that is not valid YAML, a malformed --ros-args: rcl names the file
        print(f"{name}: {err}", file=sys.stderr)
        return 1
    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.append(True))
    node = None
    try:
        node = make_node()
        executor = make_executor(node)
        settle = declare_all(node, [SETTLE_HEAP])["settle_heap"]
        check_params_files(node, args if args is not None else sys.argv)
        # What building the node left alive is out of the collector's walk; its passes from now on are timed
        # for /diagnostics (ros/gc_pauses.py). Before start(): the timers it makes are due from the spin on.
        PAUSES.start()
        if settle:
            settle_heap()
        if hasattr(node, "start"):
            node.start()
        executor.add_node(node)
        while rclpy.ok() and not stop:
            executor.spin_once(timeout_sec=SPIN_TIMEOUT)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RCLError:
        if rclpy.ok():
            raise  # after SIGINT/SIGTERM shut the context down, a callback's publish may fail: that is the end
    except (ValueError, ParameterException, NodeFatalError) as err:
        print(f"{name}: {err}", file=sys.stderr)
        return 1
    finally:
        if node is not None:
            if hasattr(node, "close"):
                node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
