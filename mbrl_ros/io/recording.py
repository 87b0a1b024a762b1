"""Writing the stack's rosbag2 recordings with ``rosbags`` (no rclpy).

- ``BagRecorder``: a rosbag2 directory (MCAP by default, or sqlite3) that takes
  messages already serialised as CDR (as rclpy's raw subscriptions deliver
  them, so nothing is decoded and re-encoded on the way to disk) and writes
  ``metadata.yaml`` when closed. A directory with ``metadata.yaml`` is complete.
  ``flush`` makes what was written so far survive a SIGKILL (see below).
- ``BagSequence``: a recording split by duration and/or size into
  ``<prefix>_<NNNN>`` bags, each closed when its time or size is up, so the
  trainer reads closed ones while the logger goes on.

Crash safety. rosbags' writers keep messages in memory until they close: the
MCAP writer builds a chunk in a BytesIO and writes it only when it passes 1 MiB
(or on close), through a buffered file; the sqlite3 writer runs every INSERT in
one implicit transaction that is committed only on close. A SIGKILL before
close loses every message of the bag. ``flush`` ends that: MCAP -> the pending
chunk is closed and written (a complete Chunk record plus its MessageIndex
records) and the file buffer handed to the OS; sqlite3 -> the transaction is
committed. What the OS holds survives the death of the process (not a power
cut: no fsync, that would cost a disk sync per flush). A killed bag has no
metadata.yaml and no MCAP summary; ``mbrl-ros bag repair`` (``bag_tools``)
turns it into a complete bag.

Reading is ``mbrl_ros.io.bags``.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Sequence

from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import Writer
from rosbags.rosbag2.storage_mcap import McapWriter
from rosbags.rosbag2.storage_sqlite3 import Sqlite3Writer
from rosbags.typesys.store import Typestore

from mbrl_ros.io.bags import BAG_VERSION, STORAGES, BagError, default_typestore


def bag_qos(*, reliable: bool, transient_local: bool, depth: int = 1) -> Qos:
    """The offered QoS recorded with a topic, so a replay can offer the same (latched stays latched)."""
    unspecified = QosTime(sec=0, nsec=0)
    return Qos(
        history=QosHistory.KEEP_LAST,
        depth=int(depth),
        reliability=QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
        durability=QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
        deadline=unspecified,
        lifespan=unspecified,
        liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=unspecified,
        avoid_ros_namespace_conventions=False,
    )


def flush_storage(writer: Writer) -> None:
    """Put what ``writer`` holds in memory into its file, so a SIGKILL does not lose it.

    rosbags (0.11) has no flush API; this uses its storage writers' public
    attributes (``Writer.storage``, ``McapWriter.chunk/close_chunk/bio``,
    ``Sqlite3Writer.conn``), which is why it is the one place that knows them,
    checked by tests/io/test_recording.py against a killed process.
    """
    storage = writer.storage
    if isinstance(storage, McapWriter):
        # Only a chunk with messages is closed: a chunk of schemas and channels
        # alone would have an empty time range in the chunk index. They stay
        # in the pending chunk and are written with the first message.
        if storage.chunk.msgs:
            storage.close_chunk()
        storage.bio.flush()
    elif isinstance(storage, Sqlite3Writer):
        storage.conn.commit()
    elif storage is not None:
        raise BagError(f"{writer.path}: cannot flush storage {type(storage).__name__}")


class BagRecorder:
    """Write CDR-serialised messages to a new rosbag2 directory.

        with BagRecorder("bags/run_0000") as bag:
            bag.add_topic("/car/state", "mbrl_interfaces/msg/StateVector")
            bag.write("/car/state", receive_time_ns, raw_bytes)

    ``close`` (idempotent; also on leaving the ``with`` block, exception or not)
    writes ``metadata.yaml`` last, atomically, so a directory that has it is
    complete and readable.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        storage: str = "mcap",
        typestore: Typestore | None = None,
    ) -> None:
        self.path = Path(path)
        if storage not in STORAGES:
            raise BagError(f"{self.path}: storage must be one of {sorted(STORAGES)}, got {storage!r}")
        if self.path.exists():
            raise BagError(f"{self.path}: exists already; a recorder only creates new bags")
        self.storage = storage
        self.typestore = typestore or default_typestore()
        self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=STORAGES[storage])
        try:
            self._writer.open()
        except Exception as error:
            raise BagError(f"{self.path}: cannot create bag: {error}") from error
        self._connections: dict[str, object] = {}
        self.counts: Counter[str] = Counter()
        self.first_ns: int | None = None
        self.last_ns: int | None = None
        self.bytes_written = 0  # serialised message bytes (the storage adds a few % of framing)
        self.unflushed = 0  # messages written since the last flush

    @property
    def closed(self) -> bool:
        return self._writer is None

    @property
    def topics(self) -> dict[str, str]:
        """Topic -> message type of the topics added so far."""
        return {topic: conn.msgtype for topic, conn in self._connections.items()}

    def add_topic(self, topic: str, msgtype: str, qos: Qos | Sequence[Qos] | None = None) -> None:
        """Register ``topic`` with its type (and offered QoS); needed once before writing it."""
        self._require_open(topic)
        if topic in self._connections:
            if self._connections[topic].msgtype != msgtype:
                raise BagError(
                    f"{self.path}: topic '{topic}' was added as {self._connections[topic].msgtype}, not {msgtype}"
                )
            return
        if msgtype not in self.typestore.types:
            raise BagError(f"{self.path}: topic '{topic}': type {msgtype} is not in the bag's typestore")
        profiles = [] if qos is None else [qos] if isinstance(qos, Qos) else list(qos)
        self._connections[topic] = self._writer.add_connection(
            topic, msgtype, typestore=self.typestore, offered_qos_profiles=profiles
        )

    def write(self, topic: str, timestamp_ns: int, data: bytes | memoryview) -> None:
        """Write one serialised message of ``topic`` logged at ``timestamp_ns``."""
        self._require_open(topic)
        connection = self._connections.get(topic)
        if connection is None:
            raise BagError(f"{self.path}: topic '{topic}' was not added before writing")
        self._writer.write(connection, int(timestamp_ns), data)
        self.counts[topic] += 1
        self.bytes_written += len(data)
        self.unflushed += 1
        if self.first_ns is None:
            self.first_ns = int(timestamp_ns)
        self.last_ns = int(timestamp_ns)

    def flush(self) -> int:
        """Make everything written so far survive a crash of this process; the number of messages flushed."""
        if self._writer is None or not self.unflushed:
            return 0
        try:
            flush_storage(self._writer)
        except (OSError, sqlite3.Error) as error:
            raise BagError(f"{self.path}: cannot flush bag: {error}") from error
        flushed, self.unflushed = self.unflushed, 0
        return flushed

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except Exception as error:
                raise BagError(f"{self.path}: cannot close bag: {error}") from error

    def _require_open(self, topic: str) -> None:
        if self._writer is None:
            raise BagError(f"{self.path}: topic '{topic}': the bag is closed")

    def __enter__(self) -> "BagRecorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class BagSequence:
    """A recording split into bags of ``split_duration_ns`` each: ``<output_dir>/<prefix>_<NNNN>/``.

    Each bag is closed (metadata.yaml written) once the time passed to
    ``write``/``tick`` is ``split_duration_ns`` past its first message, or once
    it holds ``split_size_bytes`` of serialised messages (if given), so the
    closed ones can be read while the recording goes on. A bag opens with the
    next message; time going backwards (a restarted simulation clock) also
    starts a new bag. Numbering continues after the highest ``<prefix>_NNNN``
    already in ``output_dir``, so a restarted logger never overwrites.

    ``latched`` topics (goal, episode results: published once, transient-local)
    have their last message repeated at the start of every new bag, so each
    bag is complete on its own, as ``ros2 bag record --repeat-transient-local``
    does. The copies are logged at the bag's start time.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        *,
        prefix: str = "bag",
        storage: str = "mcap",
        split_duration_ns: int = 60 * 10**9,
        split_size_bytes: int | None = None,
        repeat_latched: bool = True,
        typestore: Typestore | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        if storage not in STORAGES:
            raise BagError(f"{self.output_dir}: storage must be one of {sorted(STORAGES)}, got {storage!r}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", prefix):
            raise BagError(f"{self.output_dir}: bag prefix {prefix!r} must be a plain file name")
        if split_duration_ns <= 0:
            raise BagError(f"{self.output_dir}: split duration must be > 0, got {split_duration_ns} ns")
        if split_size_bytes is not None and split_size_bytes <= 0:
            raise BagError(f"{self.output_dir}: split size must be > 0 bytes (or None: no size split), "
                           f"got {split_size_bytes}")
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise BagError(f"{self.output_dir}: cannot create the bag folder: {error.strerror}") from None
        self.prefix, self.storage = prefix, storage
        self.split_duration_ns = int(split_duration_ns)
        self.split_size_bytes = None if split_size_bytes is None else int(split_size_bytes)
        self.repeat_latched = repeat_latched
        self.typestore = typestore or default_typestore()
        numbers = [int(m.group(1)) for p in self.output_dir.iterdir()
                   if (m := re.fullmatch(re.escape(prefix) + r"_(\d+)", p.name))]
        self.next_index = max(numbers, default=-1) + 1
        self._topics: dict[str, tuple[str, list[Qos], bool]] = {}  # topic -> (type, qos, latched)
        self._last_latched: dict[str, bytes] = {}
        self.bag: BagRecorder | None = None
        self.bag_start_ns = 0
        self.counts: Counter[str] = Counter()  # messages written per topic, over all bags
        self.closed_paths: list[Path] = []

    def add_topic(self, topic: str, msgtype: str, qos: Qos | None = None, *, latched: bool = False) -> None:
        if msgtype not in self.typestore.types:
            raise BagError(f"{self.output_dir}: topic '{topic}': type {msgtype} is not in the bag's typestore")
        self._topics[topic] = (msgtype, [] if qos is None else [qos], latched)
        if self.bag is not None:
            self.bag.add_topic(topic, msgtype, qos)

    def write(self, topic: str, time_ns: int, data: bytes | memoryview) -> None:
        """Write one serialised message received at ``time_ns`` (closing and opening bags as due)."""
        if topic not in self._topics:
            raise BagError(f"{self.output_dir}: topic '{topic}' was not added before writing")
        self.tick(time_ns)
        if self.bag is None:
            self._open(time_ns, skip=topic)
        self.bag.write(topic, time_ns, data)
        self.counts[topic] += 1
        if self._topics[topic][2]:
            self._last_latched[topic] = bytes(data)
        if self.split_size_bytes is not None and self.bag.bytes_written >= self.split_size_bytes:
            self.close()

    def flush(self) -> int:
        """Flush the open bag (``BagRecorder.flush``); the number of messages flushed."""
        return 0 if self.bag is None else self.bag.flush()

    def tick(self, time_ns: int) -> Path | None:
        """Close the current bag if its time is up (or time went backwards); the closed bag's path."""
        if self.bag is not None and (time_ns - self.bag_start_ns >= self.split_duration_ns or time_ns < self.bag_start_ns):
            return self.close()
        return None

    def close(self) -> Path | None:
        bag, self.bag = self.bag, None
        if bag is None:
            return None
        bag.close()
        self.closed_paths.append(bag.path)
        return bag.path

    @property
    def current_path(self) -> Path | None:
        return None if self.bag is None else self.bag.path

    def _open(self, time_ns: int, skip: str) -> None:
        path = self.output_dir / f"{self.prefix}_{self.next_index:04d}"
        self.next_index += 1
        bag = BagRecorder(path, storage=self.storage, typestore=self.typestore)
        for topic, (msgtype, qos, _latched) in self._topics.items():
            bag.add_topic(topic, msgtype, qos)
        if self.repeat_latched:
            for topic, data in self._last_latched.items():
                if topic != skip:
                    bag.write(topic, time_ns, data)
        self.bag, self.bag_start_ns = bag, int(time_ns)
