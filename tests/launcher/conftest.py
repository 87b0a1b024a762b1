"""Fixtures of the launcher tests: an ament-index-like prefix holding the test
node scripts as `lib/test_pkg/<exec>`, ROS isolation, output capture."""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

import pytest

from launcher_helpers import NODES, CapturedOutput

_domain_ids = itertools.count()


@pytest.fixture
def ament_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`test_pkg` with executables `sleeper` and `param_node`, on AMENT_PREFIX_PATH."""
    prefix = tmp_path / "install"
    lib = prefix / "lib" / "test_pkg"
    lib.mkdir(parents=True)
    for script in NODES.glob("*.py"):
        executable = lib / script.stem
        executable.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
        executable.chmod(0o755)
    index = prefix / "share" / "ament_index" / "resource_index" / "packages"
    index.mkdir(parents=True)
    (index / "test_pkg").write_text("")
    (prefix / "share" / "test_pkg" / "launch").mkdir(parents=True)
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    monkeypatch.setenv("ROS_LOG_DIR", str(tmp_path / "ros_log"))
    return prefix


@pytest.fixture
def ros_isolation(monkeypatch: pytest.MonkeyPatch) -> int:
    """Keep DDS traffic on this host and in a domain of its own; returns the domain id."""
    domain = 10 + (os.getpid() * 7 + next(_domain_ids)) % 90
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    return domain


@pytest.fixture
def captured() -> CapturedOutput:
    return CapturedOutput()
