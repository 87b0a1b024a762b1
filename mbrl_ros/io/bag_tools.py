"""Inspecting and repairing rosbag2 directories (``mbrl-ros bag info | repair``), no rclpy.

- ``bag_info``: storage, duration and per topic the type and message count,
  from metadata.yaml, or with ``count=True`` by reading every message from the
  storage files (``bag_storage``: whatever metadata.yaml says) and decoding
  those whose type can be decoded (the bag's own definition, else the built-in
  one); a topic of an unknown type is counted and marked "not decodable:
  unknown type". What could not be read or decoded, and counts that disagree
  with the storage's own or metadata.yaml's, are listed, not raised. A folder
  of bags (a split recording) is summed over its complete bags.
- ``repair_bag``: a recording killed before it closed (no metadata.yaml; an
  MCAP file without summary and footer, maybe ending inside a chunk; a sqlite3
  database with an open transaction and its -journal or -wal file, or cut
  short) becomes a complete bag holding every message that survived. The
  surviving messages are read by a tolerant scan of the storage file and
  written again through rosbags' Writer (the same writer the logger uses),
  into a temporary folder that is renamed into place only when complete; the
  damaged original is kept beside it as ``<bag>.damaged``. ``repair_path``
  does this for every damaged bag in a folder of bags. A bag that a live
  process is still writing (``live_writers``) is left alone.

Why our own MCAP scan: rosbags' reader needs the MCAP footer, which a killed
writer never wrote, and the ``mcap`` package's StreamReader gives up on the
whole chunk a file ends in. The scan walks the records (opcode, length, body)
and parses each complete one with the ``mcap`` package; of a chunk cut short it
keeps the complete messages, if the chunk is uncompressed (rosbags writes them
so), since their bytes are on disk as they were written.

Errors are ``BagError`` naming the path and what to do.
"""

from __future__ import annotations

import mmap
import os
import shutil
import sqlite3
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Iterator

from mcap.data_stream import ReadDataStream
from mcap.exceptions import McapError
from mcap.opcode import Opcode
from mcap.records import Channel, Chunk, Message, Schema
from mcap.stream_reader import get_chunk_data_stream
from rosbags.interfaces import Qos
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.errors import WriterError
from rosbags.rosbag2.metadata import parse_qos
from rosbags.typesys import get_types_from_msg
from rosbags.typesys.store import Typestore
from tqdm import tqdm

from mbrl_ros.io.bag_storage import (
    MCAP_MAGIC,
    STORAGE_SUFFIXES,
    StorageBag,
    sqlite_declared_size,
    storage_files_in,
)
from mbrl_ros.io.bags import BAG_VERSION, METADATA, BagError, list_bags
from mbrl_ros.io.ros_types import BUILT_IN, FROM_BAG, UNKNOWN, bag_typestore, mbrl_typestore

DAMAGED_SUFFIX = ".damaged"
STILL_WRITTEN = "still being written"
# Where not every process can be inspected: a bag modified this recently may have a writer we cannot see.
# The data_logger flushes every 0.5 s while messages come in: ten of its flush periods.
UNSEEN_WRITER_QUIET_S = 5.0
REPAIR_HINT = "run `mbrl-ros bag repair {path}`"


# ---- info ---------------------------------------------------------------------------------
@dataclass
class TopicInfo:
    name: str
    type: str
    count: int  # messages: metadata.yaml's count, or with count=True every one in storage
    decoded: int | None = None  # with count=True: how many decode (None: the type cannot be decoded here)
    decoding: str = ""  # with count=True: how its type is decoded (ros_types.FROM_BAG / BUILT_IN / UNKNOWN)


@dataclass
class Problem:
    """A message (or a stretch of a file) that could not be read or decoded."""

    bag: Path
    topic: str
    index: int | None  # the message's index within its topic; None if the file itself failed
    time_ns: int | None
    reason: str

    def __str__(self) -> str:
        where = f"message {self.index}" if self.index is not None else "reading"
        when = f" at t={self.time_ns} ns" if self.time_ns is not None else ""
        return f"{self.bag}: {self.topic}: {where}{when}: {self.reason}"


@dataclass
class BagInfo:
    path: Path
    bags: list[Path]  # the bag directories it sums (one unless path is a folder of bags)
    storage: str
    duration_s: float
    topics: list[TopicInfo]
    counted: bool = False  # counts from reading every message, not from metadata.yaml
    problems: list[Problem] = field(default_factory=list)
    incomplete: list[Path] = field(default_factory=list)  # bags in the folder without metadata.yaml
    writing: dict[Path, str] = field(default_factory=dict)  # of those, the ones a live process writes: who

    @property
    def message_count(self) -> int:
        return sum(t.count for t in self.topics)

    def as_json(self) -> dict:
        return {"storage": self.storage, "duration_s": self.duration_s,
                "topics": [{"name": t.name, "type": t.type, "count": t.count} for t in self.topics]}


def bag_info(path: str | os.PathLike, *, count: bool = False, progress: bool = False) -> BagInfo:
    """What ``path`` (a bag directory, or a folder of bags) holds; see the module docstring.

    With ``count``, every message in the storage files is counted, whatever
    metadata.yaml says, and decoded where its type can be (the bag's own
    definition, else the built-in one); a topic of a type that cannot be is
    still counted and says "not decodable: unknown type". The storage's own
    counts and metadata.yaml's are checked against what was read; a
    disagreement, a message that does not decode, or a file that cannot be read
    to its end is a Problem.
    """
    path = Path(path)
    bags, incomplete = _bags_at(path)
    storages: list[str] = []
    types: dict[str, str] = {}
    counts: Counter[str] = Counter()
    decoded: dict[str, int | None] = {}
    decoding: dict[str, str] = {}
    start, end = None, None
    problems: list[Problem] = []
    for bag in bags:
        with StorageBag(bag) as storage:
            storages.append(storage.metadata.storage)
            for topic in storage.topics.values():
                if types.setdefault(topic.name, topic.type) != topic.type:
                    raise BagError(f"{bag}: topic '{topic.name}' is {topic.type} here but "
                                   f"{types[topic.name]} in an earlier bag of {path}")
            if count:
                first, last = _count_messages(bag, storage, counts, decoded, decoding, problems, progress)
            else:
                for topic in storage.metadata.topics:
                    counts[topic.name] += topic.count
                meta = storage.metadata
                first, last = ((meta.start_ns, meta.start_ns + meta.duration_ns) if meta.message_count
                               else (None, None))
        if first is not None:
            start = first if start is None else min(start, first)
            end = last if end is None else max(end, last)
    storage_name = storages[0] if len(set(storages)) == 1 else "mixed: " + ", ".join(sorted(set(storages)))
    duration_ns = 0 if start is None else end - start
    return BagInfo(
        path=path, bags=bags, storage=storage_name, duration_s=duration_ns / 1e9,
        topics=[TopicInfo(name, types[name], counts[name], decoded.get(name), decoding.get(name, ""))
                for name in sorted(types)],
        counted=count, problems=problems, incomplete=incomplete,
        writing={bag: who for bag in incomplete if (who := live_writers(bag))},
    )


def _bags_at(path: Path) -> tuple[list[Path], list[Path]]:
    """(complete bags, bags without metadata.yaml) at ``path``; BagError if there is no bag to read."""
    if not path.exists():
        raise BagError(f"{path}: no such bag (neither a bag directory nor a folder of bags)")
    if path.is_file():
        parent = path.parent
        hint = f"; give its bag directory {parent}" if path.suffix in STORAGE_SUFFIXES or path.name == METADATA else ""
        raise BagError(f"{path}: is a file, not a rosbag2 directory (a folder with metadata.yaml){hint}")
    if (path / METADATA).is_file():
        return [path], []
    if _storage_files(path):
        who = live_writers(path)
        if who:
            raise BagError(f"{path}: no {METADATA} yet: it is being written ({who}); it is complete once its "
                           "writer closes it")
        raise BagError(f"{path}: no {METADATA} (a recording that was killed or is still being written); "
                       + REPAIR_HINT.format(path=path))
    bags = list_bags(path)
    incomplete = sorted(p for p in _storage_dirs(path) if not (p / METADATA).is_file())
    if not bags:
        if incomplete:
            raise BagError(f"{path}: none of its bags is complete ({', '.join(p.name for p in incomplete)} "
                           f"have no {METADATA}); " + REPAIR_HINT.format(path=path))
        raise BagError(f"{path}: not a bag: no {METADATA} and no .mcap or .db3 files in it or below it")
    return bags, incomplete


def _storage_files(bag: Path) -> list[Path]:
    return storage_files_in(bag)


def _storage_dirs(root: Path) -> list[Path]:
    """Directories at or under ``root`` holding storage files (bags, complete or not)."""
    return sorted({p.parent for suffix in STORAGE_SUFFIXES for p in root.rglob(f"*{suffix}")
                   if not p.parent.name.endswith(DAMAGED_SUFFIX)})


def _count_messages(bag: Path, storage: StorageBag, counts: Counter, decoded: dict, decoding: dict,
                    problems: list[Problem], progress: bool) -> tuple[int | None, int | None]:
    """Read every message of ``bag``, decode those whose type can be; the first and last log time read."""
    own = storage.count_messages()  # the storage's own counts, before reading
    definitions = {t.type: (t.definition_format, t.definition) for t in storage.topics.values() if t.definition}
    store, status = bag_typestore(definitions, tuple(t.type for t in storage.topics.values()))
    for name, topic in storage.topics.items():
        decoding[name] = status[topic.type]
        if not status[topic.type].endswith(UNKNOWN):
            decoded.setdefault(name, 0)
        if status[topic.type] not in (FROM_BAG, BUILT_IN, UNKNOWN):  # a definition that cannot be parsed
            problems.append(Problem(bag, name, None, None, status[topic.type]))
    read: Counter[str] = Counter()
    first, last = None, None
    total = sum(c for c in own.values() if c is not None) or None
    with tqdm(total=total, desc=bag.name, unit="msg", disable=None if progress else True, leave=False) as bar:
        for file in storage.iter_files():
            topic = "(any)"
            try:
                for tid, time_ns, data in file.messages():
                    bar.update()
                    name = file.topics[tid].name
                    topic, index = name, read[name]
                    read[name] += 1
                    first = time_ns if first is None else min(first, time_ns)
                    last = time_ns if last is None else max(last, time_ns)
                    if decoded.get(name) is None:
                        continue  # counted, not decodable here
                    msgtype = storage.topics[name].type
                    try:
                        store.deserialize_cdr(storage.decompress(data), msgtype)
                    except Exception as error:  # any decoder error is a finding about this message
                        problems.append(Problem(bag, name, index, time_ns, f"cannot decode as {msgtype}: "
                                                f"{type(error).__name__}: {error}"))
                        continue
                    decoded[name] += 1
            except Exception as error:  # a damaged file (BagError, or a parser's own): what was read stays counted
                problems.append(Problem(bag, topic, None, last, f"cannot read past this point: {error}"))
    listed = {t.name: t.count for t in storage.metadata.topics}
    for name in storage.topics:
        counts[name] += read[name]
        if own.get(name) is not None and own[name] != read[name]:
            problems.append(Problem(bag, name, None, None, f"the storage counts {own[name]} messages, "
                                    f"{read[name]} were read"))
        if name in listed and listed[name] != read[name]:
            problems.append(Problem(bag, name, None, None, f"metadata.yaml counts {listed[name]} messages, "
                                    f"the storage holds {read[name]}"))
    return first, last


# ---- repair: what survived -----------------------------------------------------------------
@dataclass
class Topic:
    """A topic as the storage file records it."""

    name: str
    type: str
    msgdef: str
    encoding: str  # serialisation format, 'cdr'
    qos: list[Qos]
    type_hash: str


@dataclass
class Salvage:
    """What a damaged storage file still holds: topics by id, and what was lost where."""

    file: Path
    storage: str
    topics: dict[int, Topic] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)  # notes on what could not be recovered


def scan_mcap(file: Path, salvage: Salvage) -> Iterator[tuple[int, int, bytes]]:
    """(channel id, log time, data) of every complete message in ``file``; topics go into ``salvage``."""
    size = file.stat().st_size
    if size < len(MCAP_MAGIC):
        salvage.lost.append(f"{file.name}: {size} bytes, not even an MCAP header")
        return
    with file.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:len(MCAP_MAGIC)] != MCAP_MAGIC:
            raise BagError(f"{file}: not an MCAP file (bad magic bytes)")
        schemas: dict[int, Schema] = {}
        end = yield from _scan_records(memoryview(buf)[len(MCAP_MAGIC):], schemas, salvage, top_level=True)
        if end is not None:
            salvage.lost.append(f"{file.name}: the file ends inside a record at byte {end + len(MCAP_MAGIC)} "
                                f"of {size}")


def _scan_records(buf: memoryview, schemas: dict[int, Schema], salvage: Salvage,
                  top_level: bool) -> Iterator[tuple[int, int, bytes]]:
    """Walk the records in ``buf``; returns None, or the offset of a record cut short by the end of ``buf``."""
    pos = 0
    while pos < len(buf):
        if pos + 9 > len(buf):
            return pos
        opcode = buf[pos]
        (length,) = struct.unpack_from("<Q", buf, pos + 1)
        body = buf[pos + 9:pos + 9 + length]
        if len(body) < length:
            if top_level and opcode == Opcode.CHUNK:
                yield from _scan_cut_chunk(body, schemas, salvage)
            return pos
        pos += 9 + length
        stream = ReadDataStream(BytesIO(body))
        try:
            if opcode == Opcode.SCHEMA:
                schema = Schema.read(stream)
                schemas[schema.id] = schema
            elif opcode == Opcode.CHANNEL:
                _add_channel(Channel.read(stream), schemas, salvage)
            elif opcode == Opcode.MESSAGE:
                message = Message.read(stream, length)
                if message.channel_id in salvage.topics:
                    yield message.channel_id, message.log_time, bytes(message.data)
            elif top_level and opcode == Opcode.CHUNK:
                chunk = Chunk.read(stream)
                records, records_length = get_chunk_data_stream(chunk)
                inner = memoryview(records.read(records_length) if records_length else b"")
                cut = yield from _scan_records(inner, schemas, salvage, top_level=False)
                if cut is not None:
                    salvage.lost.append(f"a chunk's records end inside a record at offset {cut}")
            elif top_level and opcode in (Opcode.DATA_END, Opcode.FOOTER):
                return None  # the summary follows: the data section is complete
        except (McapError, struct.error, UnicodeDecodeError, ValueError) as error:
            salvage.lost.append(f"a record (opcode {opcode:#04x}) cannot be parsed: {error}")
    return None


def _scan_cut_chunk(body: memoryview, schemas: dict[int, Schema],
                    salvage: Salvage) -> Iterator[tuple[int, int, bytes]]:
    """The complete records of a chunk whose end is missing (uncompressed chunks only)."""
    # Chunk: start u64, end u64, uncompressed size u64, crc u32, compression (u32 length + text), records length u64.
    head = 8 + 8 + 8 + 4
    if len(body) < head + 4:
        return
    (name_len,) = struct.unpack_from("<I", body, head)
    records_at = head + 4 + name_len + 8
    if len(body) < records_at:
        return
    compression = bytes(body[head + 4:head + 4 + name_len]).decode(errors="replace")
    if compression:
        salvage.lost.append(f"the last chunk is cut short and {compression}-compressed: its messages are lost")
        return
    yield from _scan_records(body[records_at:], schemas, salvage, top_level=False)


def _add_channel(channel: Channel, schemas: dict[int, Schema], salvage: Salvage) -> None:
    schema = schemas.get(channel.schema_id)
    if schema is None:
        salvage.lost.append(f"topic '{channel.topic}' has no schema record (id {channel.schema_id}): skipped")
        return
    metadata = channel.metadata or {}
    salvage.topics[channel.id] = Topic(
        name=channel.topic, type=schema.name, msgdef=schema.data.decode(),
        encoding=channel.message_encoding,
        qos=_qos(metadata.get("offered_qos_profiles", ""), channel.topic, salvage),
        type_hash=metadata.get("topic_type_hash", ""),
    )


def _qos(text: str, topic: str, salvage: Salvage) -> list[Qos]:
    """The offered QoS profiles stored with a topic; [] (and a note) where rosbags cannot parse them
    (a partial profile, as rosbag2_py users write: rosbags' parse_qos needs every key)."""
    if not text:
        return []
    try:
        return parse_qos(text)
    except Exception as error:  # ReaderError, KeyError, TypeError on a partial or odd profile
        salvage.lost.append(f"topic '{topic}': its offered QoS cannot be parsed ({type(error).__name__}: {error}); "
                            "written without")
        return []


def scan_sqlite3(file: Path, salvage: Salvage, workdir: Path) -> Iterator[tuple[int, int, bytes]]:
    """(topic id, time, data) of every committed message in ``file``; topics go into ``salvage``.

    The database is copied with its -journal/-wal/-shm files into ``workdir``
    and opened there, so sqlite's own recovery (rolling back the transaction
    the killed writer left open, or replaying the committed part of a WAL)
    runs on the copy and the original stays as it was.
    """
    if file.stat().st_size == 0:
        salvage.lost.append(f"{file.name}: empty file")
        return
    copy = workdir / file.name
    for suffix in ("", "-journal", "-wal", "-shm"):
        side = file.with_name(file.name + suffix)
        if side.is_file():
            shutil.copy2(side, copy.with_name(copy.name + suffix))
            if suffix:
                salvage.lost.append(f"{side.name}: sqlite recovered the database with it (a transaction that "
                                    "was not committed is rolled back)")
    _open_cut_database(copy, salvage)
    try:
        conn = sqlite3.connect(copy)
        try:
            columns = {row[1] for row in conn.execute("PRAGMA table_info(topics)")}
            if not columns:
                raise BagError(f"{file}: not a rosbag2 sqlite3 database (no 'topics' table)")
            definitions = {}
            if conn.execute("SELECT name FROM sqlite_master WHERE name='message_definitions'").fetchone():
                definitions = dict(conn.execute("SELECT topic_type, encoded_message_definition FROM message_definitions"))
            hash_column = "type_description_hash" if "type_description_hash" in columns else "''"
            qos_column = "offered_qos_profiles" if "offered_qos_profiles" in columns else "''"
            for tid, name, msgtype, encoding, qos, type_hash in conn.execute(
                    f"SELECT id, name, type, serialization_format, {qos_column}, {hash_column} FROM topics"):
                salvage.topics[tid] = Topic(name, msgtype, definitions.get(msgtype, ""), encoding,
                                            _qos(qos, name, salvage), type_hash)
            try:
                integrity = conn.execute("PRAGMA quick_check").fetchone()[0]
            except sqlite3.DatabaseError as error:  # a file cut short fails the check itself
                integrity = str(error)
            if integrity != "ok":
                salvage.lost.append(f"{file.name}: database damaged ({integrity}); reading what can be read")
            # Row by row in rowid order: a cut or damaged file fails at its first missing page, and
            # every row before it is kept (a batch would lose the rows fetched with the failing one).
            try:
                rows = iter(conn.execute("SELECT topic_id, timestamp, data FROM messages ORDER BY id"))
                while (row := next(rows, None)) is not None:
                    yield row
            except sqlite3.DatabaseError as error:
                salvage.lost.append(f"{file.name}: reading messages stopped: {error}")
        finally:
            conn.close()
    except sqlite3.DatabaseError as error:
        raise BagError(f"{file}: not a readable sqlite3 database: {error}") from None


def _open_cut_database(copy: Path, salvage: Salvage) -> None:
    """Make a database cut short (shorter than its header says) readable up to the cut, in the copy.

    sqlite refuses the whole file, even its first page, when the header's
    database size (valid while the version-valid-for number equals the change
    counter) exceeds the file. Cut to whole pages and with that number made
    stale, sqlite sizes the database by the file and reads every page that is
    there; rows on the pages that are not fail the read where they start.
    """
    with open(copy, "r+b") as file:
        head = file.read(100)
        size = file.seek(0, 2)
        declared = sqlite_declared_size(head)
        if declared is None or size >= declared[1]:
            return
        page, expected = declared
        file.truncate(size - size % page)
        file.seek(92)  # the version-valid-for number: one off the change counter makes the size stale
        file.write(struct.pack(">I", (struct.unpack_from(">I", head, 24)[0] + 1) & 0xFFFFFFFF))
    salvage.lost.append(f"{copy.name}: cut short at {size} of {expected} bytes; the rows after the cut are lost")


# ---- repair: writing the result -------------------------------------------------------------
@dataclass
class RepairResult:
    path: Path  # the repaired bag
    storage: str
    counts: dict[str, int]  # messages recovered per topic
    lost: list[str]  # what could not be recovered
    damaged_copy: Path | None  # where the damaged original was kept
    was_complete: bool = False  # nothing to do: the bag was complete
    still_written: bool = False  # left alone: a live process is writing it

    @property
    def message_count(self) -> int:
        return sum(self.counts.values())


def needs_repair(bag: Path) -> bool:
    """True if ``bag`` has storage files but cannot be opened as a complete bag (metadata.yaml missing or
    broken, a storage file unreadable or cut short)."""
    if not (bag / METADATA).is_file():
        return True
    try:
        with StorageBag(bag):
            return False
    except BagError:
        return True


def live_writers(bag: Path) -> str:
    """Who is still writing ``bag``: '' if nobody is known to, else e.g. "process 4242 (data_logger)".

    A bag is being written while a process on this machine holds one of its
    files open for writing (``/proc/<pid>/fd`` and the open flags in
    ``fdinfo``). Every writer keeps its storage file open from the bag's start
    to its close (rosbags' and rosbag2's alike), however rarely it writes, and
    a killed one holds nothing once it is dead, so a bag can be repaired the
    moment its logger died. Neither the last modification time (a logger on a
    quiet topic does not write for long stretches; a bag killed a second ago
    was just modified) nor a lock or marker file (upstream ``ros2 bag record``
    takes none, and a marker outlives a SIGKILL) says it as well.
    Where the processes cannot all be inspected (another user's, without root;
    no /proc), a bag modified within the last ``UNSEEN_WRITER_QUIET_S``
    seconds is taken to be written, and the answer says why.
    """
    files = [p for p in bag.iterdir() if p.is_file()] if bag.is_dir() else []
    if not files:
        return ""
    targets = {str(p.resolve()) for p in files}
    seen_all = True
    proc = Path("/proc")
    if not proc.is_dir():
        seen_all = False
    else:
        me = os.getpid()
        for entry in proc.iterdir():
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            try:
                fds = list((entry / "fd").iterdir())
            except PermissionError:
                seen_all = False
                continue
            except OSError:  # the process ended meanwhile
                continue
            for fd in fds:
                try:
                    if os.readlink(fd) not in targets:
                        continue
                    flags = next(line.split()[1] for line in (entry / "fdinfo" / fd.name).read_text().splitlines()
                                 if line.startswith("flags:"))
                except (OSError, StopIteration):
                    continue
                if int(flags, 8) & (os.O_WRONLY | os.O_RDWR):
                    return f"process {entry.name} ({_process_name(entry)}) has {Path(os.readlink(fd)).name} open for writing"
    if not seen_all:
        age = time.time() - max(p.stat().st_mtime for p in files)
        if age < UNSEEN_WRITER_QUIET_S:
            return (f"modified {age:.1f} s ago, and not every process here can be inspected for open files; "
                    f"taken as being written until it is {UNSEEN_WRITER_QUIET_S:.0f} s quiet")
    return ""


def _process_name(entry: Path) -> str:
    try:
        args = (entry / "cmdline").read_bytes().split(b"\0")
        named = [a.decode(errors="replace") for a in args if a]
        return " ".join(Path(a).name if k == 0 else a for k, a in enumerate(named[:3])) or "?"
    except OSError:
        return "?"


def repair_bag(path: str | os.PathLike, output: str | os.PathLike | None = None, *,
               progress: bool = False) -> RepairResult:
    """Turn the killed recording at ``path`` into a complete bag; see the module docstring.

    ``output``: where the repaired bag goes (must not exist). By default it
    replaces ``path``, and the damaged original is moved to ``<path>.damaged``.
    A complete bag is left alone (``was_complete``); so is a bag a live
    process is still writing (BagError: ``live_writers``).
    """
    path = Path(path)
    if not path.is_dir():
        raise BagError(f"{path}: no such bag directory" if not path.exists() else
                       f"{path}: is a file; give the bag directory that holds it")
    files = _storage_files(path)
    if not files:
        raise BagError(f"{path}: no .mcap or .db3 file in it: nothing to repair")
    who = live_writers(path)
    if who:
        raise BagError(f"{path}: {STILL_WRITTEN}: {who}; left alone")
    if not needs_repair(path):
        with StorageBag(path) as bag:
            counts = {t.name: t.count for t in bag.metadata.topics}
            return RepairResult(path, bag.metadata.storage, counts, [], None, was_complete=True)
    storages = {STORAGE_SUFFIXES[f.suffix] for f in files}
    if len(storages) > 1:
        raise BagError(f"{path}: holds both .mcap and .db3 files; repair each storage in a bag of its own")
    storage = storages.pop()
    final = Path(output) if output is not None else path
    if output is not None and final.exists():
        raise BagError(f"{final}: exists already; the repaired bag goes to a new path")
    damaged = path.with_name(path.name + DAMAGED_SUFFIX)
    if output is None and damaged.exists():
        raise BagError(f"{damaged}: exists already (an earlier repair's original?); move it away first")
    # The temporary bag is <parent>/.<name>.repairing/<name>, so the storage file inside is named
    # after the final bag and the rename into place is one rename within the same folder.
    work = final.parent / f".{final.name}.repairing"
    shutil.rmtree(work, ignore_errors=True)  # left by an interrupted repair of this bag: ours to remove
    work.mkdir(parents=True)
    try:
        counts, lost = _rewrite(files, storage, work / final.name, work, progress)
        if not sum(counts.values()):
            raise BagError(f"{path}: no message survived ({'; '.join(lost) or 'the storage holds none'}); "
                           "left as it is")
        if output is None:
            path.rename(damaged)
        (work / final.name).rename(final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return RepairResult(final, storage, counts, lost, damaged if output is None else None)


def _rewrite(files: list[Path], storage: str, target: Path, workdir: Path,
             progress: bool) -> tuple[dict[str, int], list[str]]:
    """Write every surviving message of ``files`` to a new bag at ``target``; counts per topic and losses."""
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    writer = Writer(target, version=BAG_VERSION, storage_plugin=plugin)
    writer.open()
    store = mbrl_typestore()
    counts: Counter[str] = Counter()
    lost: list[str] = []
    try:
        for file in files:
            salvage = Salvage(file, storage)
            messages = scan_mcap(file, salvage) if storage == "mcap" else scan_sqlite3(file, salvage, workdir)
            connections: dict[int, object] = {}
            orphans: Counter[int] = Counter()
            for topic_id, time_ns, data in tqdm(messages, desc=f"repair {file.name}", unit="msg",
                                                 disable=None if progress else True, leave=False):
                conn = connections.get(topic_id)
                if conn is None:
                    topic = salvage.topics.get(topic_id)
                    if topic is None:  # its channel record was lost (MCAP) or never committed (sqlite3)
                        orphans[topic_id] += 1
                        continue
                    conn = connections[topic_id] = _add_connection(writer, topic, store, file)
                writer.write(conn, time_ns, data)
                counts[conn.topic] += 1
            for topic_id, topic in salvage.topics.items():  # topics that kept no message stay listed
                if topic_id not in connections and topic.name not in counts:
                    connections[topic_id] = _add_connection(writer, topic, store, file)
                    counts[topic.name] += 0
            lost += salvage.lost
            lost += [f"{file.name}: {n} messages of topic id {tid}, which has no topic record"
                     for tid, n in orphans.items()]
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return dict(counts), lost


def _add_connection(writer: Writer, topic: Topic, store: Typestore, file: Path):
    for existing in writer.connections:  # a topic seen in an earlier file of the same bag
        if existing.topic == topic.name and existing.msgtype == topic.type:
            return existing
    type_hash = topic.type_hash
    msgdef = topic.msgdef
    if not type_hash or not msgdef:
        if topic.type not in store.types and msgdef:
            store.register(get_types_from_msg(msgdef, topic.type))
        if topic.type not in store.types:
            raise BagError(f"{file}: topic '{topic.name}': type {topic.type} has no definition in the bag "
                           "and is not a known message type")
        msgdef = msgdef or store.generate_msgdef(topic.type, ros_version=2)[0]
        type_hash = type_hash or store.hash_rihs01(topic.type)
    try:
        return writer.add_connection(topic.name, topic.type, msgdef=msgdef, rihs01=type_hash,
                                     serialization_format=topic.encoding, offered_qos_profiles=topic.qos)
    except WriterError as error:
        raise BagError(f"{file}: topic '{topic.name}': {error}") from None


def repair_path(path: str | os.PathLike, *, progress: bool = False) -> list[RepairResult]:
    """Repair ``path`` if it is a bag, or every damaged bag in the folder of bags ``path``.

    In a folder, a damaged bag from which no message survived (a logger killed
    just after opening it) is reported with a count of 0 and left as it is, and
    so is a bag a live process is still writing (``still_written``): the
    logger's open bag has no metadata.yaml yet, like a killed one.
    """
    path = Path(path)
    if not path.exists():
        raise BagError(f"{path}: no such bag or folder")
    if path.is_file():
        raise BagError(f"{path}: is a file; give the bag directory that holds it")
    if _storage_files(path):
        return [repair_bag(path, progress=progress)]
    bags = _storage_dirs(path)
    if not bags:
        raise BagError(f"{path}: not a bag and no bags under it (no .mcap or .db3 files)")
    results = []
    for bag in bags:
        if not needs_repair(bag):
            continue
        try:
            results.append(repair_bag(bag, progress=progress))
        except BagError as error:
            if "no message survived" not in str(error) and STILL_WRITTEN not in str(error):
                raise
            results.append(RepairResult(bag, "", {}, [str(error)], None,
                                        still_written=STILL_WRITTEN in str(error)))
    return results
