"""Parallel test runs (pytest-xdist, ``-n 2`` in pyproject.toml): which tests share a worker.

Each module runs on one worker, so a module's fixtures (a recorded bag, a running stack) are made once.
The end-to-end modules (tests/e2e: whole stacks through the launch files) run one after another on one
worker, never two stacks of them at once; the soak runs apart from them, beside the rest. On two cores
that keeps at most two heavy process groups running, as the tests' loaded-machine bounds assume.

Done with xdist's scheduler hook rather than ``--dist loadgroup`` and ``xdist_group`` marks: pytest-xdist
3.8.0 puts the group into ``item._nodeid``, which pytest 9 no longer reads (a node's id is ``item._id``),
so under pytest 9.2 the marks are silently ignored and every test is scheduled on its own.
"""

from __future__ import annotations

from pathlib import PurePosixPath


def scheduling_group(nodeid: str) -> str:
    """The scheduling unit of a test, from its node id (``tests/e2e/test_x.py::test_y[param]``)."""
    path = PurePosixPath(nodeid.split("::", 1)[0])
    if path.parent.name == "e2e" and path.name != "test_soak.py":
        return "tests/e2e"
    return str(path)


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ByTestGroup(LoadScopeScheduling):
        """xdist's loadscope, with the scope of a test given by ``scheduling_group``."""

        def _split_scope(self, nodeid: str) -> str:
            return scheduling_group(nodeid)

    return ByTestGroup(config, log)
