"""Helpers of the launcher tests (a uniquely named module: test folders share sys.path)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]
NODES = Path(__file__).parent / "nodes"
DATA = Path(__file__).parent / "data"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


class CapturedOutput:
    """An output sink that keeps every line (called from the runner's thread)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, label: str, stream: str, text: str) -> None:
        with self._lock:
            self.lines.append((label, stream, text))

    def of(self, label: str, stream: str | None = None) -> list[str]:
        with self._lock:
            return [t for l, s, t in self.lines if l == label and (stream is None or s == stream)]

    def text(self) -> str:
        with self._lock:
            return "\n".join(f"{l}|{s}|{t}" for l, s, t in self.lines)


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {predicate}")


def read_pids(path: Path, count: int, timeout: float = 10.0) -> list[int]:
    def ready():
        if not path.exists():
            return None
        pids = [int(x) for x in path.read_text().split()]
        return pids if len(pids) >= count else None
    return wait_for(ready, timeout)


def process_gone(pid: int) -> bool:
    """No such process, or only a zombie left for init to reap."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def start_launcher(*args: str, cwd: Path = REPO) -> subprocess.Popen:
    """`python -m mbrl_ros.launcher ARGS` as a separate process, as a user runs it."""
    return subprocess.Popen([sys.executable, "-m", "mbrl_ros.launcher", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
