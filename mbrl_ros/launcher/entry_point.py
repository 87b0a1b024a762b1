"""Run a node given as a Python entry point: `python -m mbrl_ros.launcher.entry_point
module:function EXEC_NAME [ARGS...]`.

The launcher uses this when a node's executable is an entry point rather than a
file in the ament index; the node then sees `sys.argv == [EXEC_NAME, ARGS...]`,
as it would when started by `ros2 run`.
"""

from __future__ import annotations

import importlib
import signal
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m mbrl_ros.launcher.entry_point module:function NAME [ARGS...]",
              file=sys.stderr)
        return 2
    target, name, *rest = argv
    module_name, _, attribute = target.partition(":")
    try:
        function = importlib.import_module(module_name)
    except KeyboardInterrupt:  # stopped while still importing (a launch ending at once): no traceback
        return 128 + signal.SIGINT
    for part in attribute.split(".") if attribute else ():
        function = getattr(function, part)
    sys.argv = [name, *rest]
    result = function()
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
