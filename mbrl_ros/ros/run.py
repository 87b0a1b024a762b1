"""One ``main`` for every node: init, spin until SIGINT/SIGTERM, shut down cleanly.

A node class may define ``start()`` (called once it is built, before spinning:
the controller's lifecycle autostart) and ``close()`` (called before the node is
destroyed: the logger closes its bag, the trainer stops its worker). A bad
parameter or checkpoint ends the process with exit code 1 and a message that
names it.
"""

from __future__ import annotations

import sys
from typing import Callable

import rclpy
from rclpy._rclpy_pybind11 import RCLError
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node


def run_node(make_node: Callable[[], Node], name: str, args: list[str] | None = None) -> int:
    rclpy.init(args=args if args is not None else sys.argv)
    node = None
    try:
        node = make_node()
        if hasattr(node, "start"):
            node.start()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RCLError:
        if rclpy.ok():
            raise  # after SIGINT/SIGTERM shut the context down, a callback's publish may fail: that is the end
    except (ValueError, ParameterException) as err:
        print(f"{name}: {err}", file=sys.stderr)
        return 1
    finally:
        if node is not None:
            if hasattr(node, "close"):
                node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
