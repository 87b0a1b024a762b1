"""Run the node processes of a launch and supervise them, like `ros2 launch`.

- Each node runs in its own session (`start_new_session`), so a terminal's
  Ctrl-C reaches only the launcher, which decides what the nodes get, and a
  node's whole process group can be signalled.
- Output is read line by line from pipes and prefixed with `[label]`.
  `output: screen` shows stdout and stderr; `log` (upstream's default) writes
  both to the launch log and shows stderr; `both` does both.
- Stopping (Ctrl-C, SIGTERM, `stop()`) sends SIGINT to every node's process
  group, SIGTERM after `sigterm_timeout`, SIGKILL after `sigkill_timeout` more,
  as upstream does; a second Ctrl-C skips ahead to the next signal. The
  launcher returns only when no process of any group is left.
- A node that exits on its own is reported with its exit code; the others keep
  running (upstream's default); a node with `respawn` is started again after
  `respawn_delay`, at most `respawn_max_retries` times over the launch (as upstream counts them: a node
  that cannot start, e.g. with a lasting configuration error, is not restarted every second for ever);
  a node with `on_exit: shutdown` ends the whole launch. The exit status is 1 if any node failed (exited non-zero
  on its own, could not start, or had to be killed with SIGKILL), else 0.

Everything happens in one loop (one thread, no per-process threads): spawning,
reading pipes, reaping, timers.
"""

from __future__ import annotations

import atexit
import ctypes
import datetime
import functools
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, TextIO

from .evaluate import NodeAction

OutputSink = Callable[[str, str, str], None]
"""sink(label, stream, text): stream is 'stdout' or 'stderr' for a node's
lines, 'launch' for the launcher's own messages (already formatted)."""

POLL_INTERVAL_S = 0.05   # how often exits are checked when no output arrives
KILL_WAIT_S = 2.0        # after SIGKILL, how long to wait before giving up on a group
MAX_LINE_BYTES = 65536   # a longer line without newline is emitted in pieces
_CLEAN_STOP_CODES = {0, -signal.SIGINT, -signal.SIGTERM, 128 + signal.SIGINT, 128 + signal.SIGTERM}
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)


def print_to_screen(label: str, stream: str, text: str) -> None:
    """The default sink: node stdout to stdout, the rest to stderr."""
    target = sys.stdout if stream == "stdout" else sys.stderr
    line = text if stream == "launch" else f"[{label}] {text}"
    try:
        target.write(line + "\n")
        target.flush()
    except (OSError, ValueError):
        pass  # a closed terminal must not stop the supervision


def default_log_directory() -> Path:
    """Where upstream puts launch logs: $ROS_LOG_DIR, else $ROS_HOME/log, else ~/.ros/log."""
    base = os.environ.get("ROS_LOG_DIR") or os.path.join(
        os.environ.get("ROS_HOME") or os.path.expanduser("~/.ros"), "log")
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H-%M-%S-%f")
    return Path(base) / f"{stamp}-mbrl-launch-{os.getpid()}"


def _load_prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()  # resolved here, so the forked child only makes the call
_PR_SET_PDEATHSIG = 1


def _terminate_with_parent(parent_pid: int) -> None:
    # Runs in the child between fork and exec: if the launcher dies without
    # cleaning up (SIGKILL, crash), the kernel sends the node SIGTERM. The
    # "parent" is the forking thread, so all spawns happen in the loop's thread.
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    # A launcher that died between the fork and the call above sends no signal: the child, already
    # re-parented (to init or a subreaper), would run its node on for ever. Not started then.
    if os.getppid() != parent_pid:
        os._exit(128 + signal.SIGTERM)


class _Process:
    """One node: its current process (respawns replace it) and its stop state."""

    def __init__(self, action: NodeAction) -> None:
        self.action = action
        self.popen: subprocess.Popen | None = None
        self.pids: list[int] = []
        self.exit_codes: list[int] = []
        self.leader_exited = True      # the node's own process has been reaped
        self.group_gone = True         # no process is left in its group
        self.stop_stage = 0            # signals sent so far: 0 none, 1 SIGINT, 2 SIGTERM, 3 SIGKILL
        self.next_stage_at: float | None = None
        self.hurried = False           # a repeated stop request moved the next signal to now
        self.respawn_at: float | None = None
        self.respawns = 0              # made so far (respawn_max_retries bounds them)
        self.given_up = False          # respawn_max_retries reached: stays down
        self.failed = False
        self.partial: dict[int, bytes] = {}

    @property
    def label(self) -> str:
        return self.action.label

    @property
    def active(self) -> bool:
        return not (self.leader_exited and self.group_gone)

    def group_alive(self) -> bool:
        if self.popen is None:
            return False
        try:
            os.killpg(self.popen.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return _group_has_running_member(self.popen.pid)


def _group_has_running_member(pgid: int) -> bool:
    """True unless /proc shows only zombies in the group: an orphaned child's
    zombie waits for init to reap it, which can take a while in containers."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


class LaunchRunner:
    """Start, supervise and stop the processes of a launch.

    Blocking: `LaunchRunner(nodes).run()` (handles SIGINT/SIGTERM when called
    from the main thread). In the background: `r = LaunchRunner(nodes).start()`,
    later `r.stop()`; `r.wait()` waits for the launch to end by itself.
    """

    def __init__(self, nodes: list[NodeAction], *, output: OutputSink | None = None,
                 sigterm_timeout: float = 5.0, sigkill_timeout: float = 5.0,
                 log_directory: str | os.PathLike | None = None,
                 on_finish: Callable[[], None] | None = None) -> None:
        self._processes = [_Process(a) for a in nodes]
        self._sink = output or print_to_screen
        self.sigterm_timeout = sigterm_timeout
        self.sigkill_timeout = sigkill_timeout
        self._log_directory = None if log_directory is None else Path(log_directory)
        self._log_file: TextIO | None = None
        self._on_finish = on_finish
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._requests: list[str] = []   # stop requests; appended from signal handlers and threads
        self._handled_requests = 0
        self._shutting_down = False
        self._started = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._used = False
        self.returncode: int | None = None

    # ---- public API ----

    def run(self) -> int:
        """Run until every process is gone; returns the exit status."""
        self._claim()
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                handlers[signum] = signal.signal(signum, self._on_signal)
        try:
            self._loop()
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
        return self.returncode

    def start(self) -> "LaunchRunner":
        """Start the processes and supervise them from a background thread."""
        self._claim()
        self._thread = threading.Thread(target=self._loop, name="mbrl-launch", daemon=True)
        # Before anything can be spawned: a Ctrl-C or SIGTERM while the caller waits below still stops them at exit.
        atexit.register(self._stop_at_exit)
        self._thread.start()
        self._started.wait()
        return self

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask for an orderly stop (or, if one is running, its next signal); returns at once."""
        self._requests.append(reason)
        self._wake()

    def stop(self, timeout: float | None = None) -> int | None:
        """Stop every process and wait; returns the exit status (None on timeout)."""
        if not self._done.is_set():
            self.request_stop()
        return self.wait(timeout)

    def wait(self, timeout: float | None = None) -> int | None:
        self._done.wait(timeout)
        return self.returncode

    @property
    def pids(self) -> dict[str, list[int]]:
        """Every pid each node has had, oldest first (respawns add pids)."""
        return {p.label: list(p.pids) for p in self._processes}

    @property
    def exit_codes(self) -> dict[str, list[int]]:
        return {p.label: list(p.exit_codes) for p in self._processes}

    @property
    def done(self) -> bool:
        return self._done.is_set()

    # ---- the loop ----

    def _claim(self) -> None:
        if self._used:
            raise RuntimeError("a LaunchRunner runs once; make a new one")
        self._used = True

    def _loop(self) -> None:
        self._selector.register(self._wake_read, selectors.EVENT_READ, None)
        try:
            self._announce_log_directory()
            for process in self._processes:
                self._spawn(process)
            self._started.set()
            while True:
                now = time.monotonic()
                self._handle_stop_requests(now)
                self._reap(now)
                self._run_timers(now)
                if not any(p.active or p.respawn_at is not None for p in self._processes):
                    break
                self._wait_for_output(now)
        finally:
            self._kill_leftovers()
            self.returncode = 1 if any(p.failed for p in self._processes) else 0
            self._close()
            self._started.set()
            self._done.set()
            atexit.unregister(self._stop_at_exit)
            if self._on_finish is not None:
                self._on_finish()

    def _spawn(self, process: _Process) -> None:
        action = process.action
        process.respawn_at = None
        try:
            popen = subprocess.Popen(
                action.command, env=action.environment, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                preexec_fn=functools.partial(_terminate_with_parent, os.getpid()) if _PRCTL is not None else None)
        except OSError as err:
            process.failed = True
            self._event("ERROR", process.label, f"failed to start {action.command[0]!r}: {err}")
            return
        process.popen = popen
        process.pids.append(popen.pid)
        process.leader_exited = process.group_gone = False
        process.stop_stage, process.next_stage_at = 0, None
        for pipe, stream in ((popen.stdout, "stdout"), (popen.stderr, "stderr")):
            os.set_blocking(pipe.fileno(), False)
            self._selector.register(pipe.fileno(), selectors.EVENT_READ, (process, stream, pipe))
        self._event("INFO", process.label, f"process started with pid [{popen.pid}]")

    def _handle_stop_requests(self, now: float) -> None:
        count = len(self._requests)
        if count == self._handled_requests:
            return
        first_new = self._handled_requests
        self._handled_requests = count
        if not self._shutting_down:
            self._shutting_down = True
            self._event("INFO", "launch", f"{self._requests[first_new]}: stopping all nodes")
            first_new += 1
            for process in self._processes:
                process.respawn_at = None
                if process.active and process.stop_stage == 0:
                    self._next_signal(process, now)
        if count > first_new:  # asked again while stopping: next signal now
            for process in self._processes:
                if process.active and 0 < process.stop_stage < 3:
                    process.next_stage_at = now
                    process.hurried = True

    def _next_signal(self, process: _Process, now: float) -> None:
        stage = process.stop_stage
        signum = _STOP_SIGNALS[stage]
        if stage == 2:
            process.failed = True  # it ignored SIGINT and SIGTERM: a node must not need SIGKILL
        if stage > 0 and process.hurried:
            self._event("WARNING", process.label, f"stop requested again: sending '{signum.name}'")
        elif stage > 0:
            waited = self.sigterm_timeout if stage == 1 else self.sigkill_timeout
            self._event("ERROR", process.label,
                        f"process[{process.label}] failed to terminate {waited:g} seconds after "
                        f"receiving '{_STOP_SIGNALS[stage - 1].name}', escalating to '{signum.name}'")
        process.hurried = False
        try:
            os.killpg(process.popen.pid, signum)
        except ProcessLookupError:
            pass
        process.stop_stage = stage + 1
        delay = (self.sigterm_timeout, self.sigkill_timeout, KILL_WAIT_S)[stage]
        process.next_stage_at = now + delay

    def _reap(self, now: float) -> None:
        for process in self._processes:
            if process.popen is None:
                continue
            if not process.leader_exited:
                code = process.popen.poll()
                if code is None:
                    continue
                self._drain(process)
                process.leader_exited = True
                process.exit_codes.append(code)
                self._report_exit(process, code)
                if process.action.shutdown_on_exit and not self._shutting_down:
                    # As upstream's on_exit: shutdown: the whole launch ends with this node, respawn or not.
                    self.request_stop(f"{process.label} exited (on_exit: shutdown)")
                if not process.group_alive():
                    process.group_gone = True
                elif process.stop_stage == 0:
                    # Its children outlived it: stop them like at shutdown.
                    self._event("WARNING", process.label,
                                "processes it started are still running; stopping them")
                    self._next_signal(process, now)
            elif not process.group_gone and not process.group_alive():
                process.group_gone = True
            if not process.active and process.action.respawn and not self._shutting_down \
                    and not self._requests and process.respawn_at is None and not process.given_up:
                limit = process.action.respawn_max_retries
                if 0 <= limit <= process.respawns:
                    process.given_up = True
                    self._event("ERROR", process.label, f"not respawning: respawned {process.respawns} time(s), "
                                                        f"respawn_max_retries is {limit}")
                    continue
                process.respawn_at = now + process.action.respawn_delay
                self._event("INFO", process.label,
                            f"respawning in {process.action.respawn_delay:g} s")

    def _report_exit(self, process: _Process, code: int) -> None:
        pid = process.popen.pid
        stopping = process.stop_stage > 0
        if code == 0 or (stopping and code in _CLEAN_STOP_CODES):
            self._event("INFO", process.label, f"process has finished cleanly [pid {pid}]")
            return
        how = (f"killed by {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals()
               else f"exit code {code}")
        if stopping and code != -signal.SIGKILL:
            # We asked it to stop; a signal during interpreter start-up, or an
            # untidy exit handler, gives odd codes. Shown, but not a failure:
            # only a node that must be killed counts (see _next_signal).
            self._event("WARNING", process.label, f"process exited while stopping [pid {pid}, {how}]")
            return
        process.failed = True
        self._event("ERROR", process.label,
                    f"process has died [pid {pid}, {how}, cmd '{' '.join(process.action.command)}']")

    def _run_timers(self, now: float) -> None:
        for process in self._processes:
            if process.respawn_at is not None and now >= process.respawn_at:
                process.respawns += 1
                self._spawn(process)
            if process.active and process.next_stage_at is not None and now >= process.next_stage_at:
                if process.stop_stage < 3:
                    self._next_signal(process, now)
                else:
                    # SIGKILL cannot be refused; what is left are zombies nobody reaps.
                    process.failed = True
                    process.group_gone = True
                    self._event("ERROR", process.label,
                                f"process group {process.popen.pid} still exists {KILL_WAIT_S:g} s "
                                "after SIGKILL; giving up on it")

    def _wait_for_output(self, now: float) -> None:
        timeout = POLL_INTERVAL_S
        for process in self._processes:
            for at in (process.respawn_at, process.next_stage_at if process.active else None):
                if at is not None:
                    timeout = min(timeout, max(0.0, at - now))
        for key, _ in self._selector.select(timeout):
            if key.data is None:
                try:
                    os.read(self._wake_read, 4096)
                except BlockingIOError:
                    pass
                continue
            process, stream, pipe = key.data
            self._read(process, stream, pipe)

    def _read(self, process: _Process, stream: str, pipe) -> str:
        """Read what is there: 'data', 'empty' (nothing yet) or 'eof' (pipe closed)."""
        fd = pipe.fileno()
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return "empty"
        except OSError:
            data = b""
        buffered = process.partial.pop(fd, b"") + data
        if not data:
            if buffered:
                self._line(process, stream, buffered)
            self._selector.unregister(fd)
            pipe.close()
            return "eof"
        *lines, rest = buffered.split(b"\n")
        for line in lines:
            self._line(process, stream, line)
        if len(rest) > MAX_LINE_BYTES:
            self._line(process, stream, rest)
            rest = b""
        if rest:
            process.partial[fd] = rest
        return "data"

    def _drain(self, process: _Process) -> None:
        """After a process exits, take the output it left in its pipes. A pipe
        that a leftover child still holds stays open until that child is gone."""
        for pipe, stream in ((process.popen.stdout, "stdout"), (process.popen.stderr, "stderr")):
            while not pipe.closed and self._read(process, stream, pipe) == "data":
                pass

    # ---- output ----

    def _line(self, process: _Process, stream: str, raw: bytes) -> None:
        text = raw.decode("utf-8", errors="replace").rstrip("\r")
        mode = process.action.output
        if mode in ("log", "both"):
            self._log(f"[{process.label}] {text}")
        if mode in ("screen", "both") or stream == "stderr":
            self._sink(process.label, stream, text)

    def _event(self, level: str, label: str, message: str) -> None:
        line = f"[{level}] [{label}]: {message}"
        self._sink(label, "launch", line)
        if self._log_file is not None:
            self._log(line)

    def _announce_log_directory(self) -> None:
        if any(p.action.output in ("log", "both") for p in self._processes):
            directory = self._log_directory or default_log_directory()
            directory.mkdir(parents=True, exist_ok=True)
            self._log_file = open(directory / "launch.log", "a", buffering=1)
            self._event("INFO", "launch", f"All log files can be found below {directory}")

    def _log(self, line: str) -> None:
        if self._log_file is not None:
            stamp = f"{time.time():.7f}"
            self._log_file.write(f"{stamp} {line}\n")

    # ---- signals and teardown ----

    def _on_signal(self, signum: int, _frame) -> None:
        # Only append and wake: the loop, not the handler, does the work.
        self._requests.append(f"received {signal.Signals(signum).name}")
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_write, b"x")
        except (BlockingIOError, OSError):
            pass

    def _stop_at_exit(self) -> None:
        if not self._done.is_set():
            self.stop(self.sigterm_timeout + self.sigkill_timeout + KILL_WAIT_S + 1)

    def _kill_leftovers(self) -> None:
        # Only reached with processes left if the loop itself failed: never leave orphans.
        for process in self._processes:
            if process.popen is not None and process.active:
                try:
                    os.killpg(process.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    process.popen.wait(timeout=KILL_WAIT_S)
                except subprocess.TimeoutExpired:
                    pass
                process.failed = True

    def _close(self) -> None:
        for key in list(self._selector.get_map().values()):
            if key.data is not None:
                process, stream, pipe = key.data
                rest = process.partial.pop(pipe.fileno(), b"")
                if rest:
                    self._line(process, stream, rest)
                pipe.close()
        self._selector.close()
        os.close(self._wake_read)
        os.close(self._wake_write)
        if self._log_file is not None:
            self._log_file.close()
