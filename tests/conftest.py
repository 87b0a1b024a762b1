"""Parallel test runs (pytest-xdist, ``-n 2 --dist loadgroup`` in pyproject.toml): which tests share a worker.

Each module runs on one worker, so a module's fixtures (a recorded bag, a running stack) are made once.
The end-to-end modules (tests/e2e: whole stacks through the launch files) run one after another on one
worker, never two stacks of them at once; the soak runs apart from them, beside the rest. On two cores
that keeps at most two heavy process groups running, as the tests' loaded-machine bounds assume.
"""

from __future__ import annotations

from pathlib import Path

import pytest

E2E = Path(__file__).parent / "e2e"


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        path = Path(item.fspath)
        if path.parent == E2E and path.name != "test_soak.py":
            group = "e2e"
        else:
            group = str(path.relative_to(Path(__file__).parent))
        item.add_marker(pytest.mark.xdist_group(group))
