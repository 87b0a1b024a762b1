"""Reading a rosbag2 bag's storage directly: metadata.yaml, sqlite3 databases, MCAP files.

Every message the storage files hold is found here, whatever metadata.yaml
says about it, and each topic comes with the type definition the bag carries
(MCAP ``ros2msg`` schemas; the ``message_definitions`` table of sqlite3 bags
since Jazzy), so reading needs neither rosbags' Reader nor a ROS install.

Why not rosbags' Reader (0.11.9), which the stack used before:
- it pairs metadata.yaml's topics with the storage's by name, type,
  serialisation format *and* offered QoS, and a storage topic without a partner
  yields nothing, silently. Bags of earlier ``ros2 bag`` releases (metadata
  versions 4 and 5, QoS as a YAML string) where the two QoS strings differ
  (a later publisher's profile in one of them; "infinite" durations written as
  2147483647 s / 4294967295 ns by one release, 9223372036 s / 854775807 ns by
  another) read as empty bags although their files hold every message;
- it refuses to open a bag whose QoS string lacks a key (``rosbag2_py`` users
  write partial profiles: ros2/rosbag2#1420), and one whose
  ``message_definitions`` table says encoding ``unknown`` (what Jazzy's
  ``ros2 bag record`` writes for a type it has no definition of);
- it yields message by message through Python (~10 us each).
So metadata.yaml is parsed here, each storage file is read on its own terms,
and counts are checked against the storage's own (sqlite3 ``count(*)``, the
MCAP summary's statistics) and against metadata.yaml.

- ``read_metadata``: metadata.yaml, any version 1..9, checked key by key.
- ``StorageBag``: the opened bag (file compression undone in a temporary
  folder): ``topics`` (per topic its type, definition and count in storage),
  ``read(names)`` (each topic's messages packed into one buffer, in log
  order: the fast column-wise path of ``mbrl_ros.io.bags``) and ``iter_files``
  / ``StorageFile.messages`` (every message, streamed: ``bag info --count``).

Errors are ``BagError`` naming the file and what is wrong.
"""

from __future__ import annotations

import shutil
import sqlite3
import struct
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path, PurePath
from typing import Iterator

import numpy as np
import yaml

METADATA = "metadata.yaml"
STORAGE_SUFFIXES = {".mcap": "mcap", ".db3": "sqlite3"}
MCAP_MAGIC = b"\x89MCAP0\r\n"
# rosbag2 names the serialisation of message definitions; what the MCAP schema and
# sqlite3 message_definitions records say when the writer had none.
DEFINITION_FORMATS = ("ros2msg", "ros2idl")


class BagError(ValueError):
    """A bag cannot be written or read as asked; the message names the bag, the topic and the field."""


# ---- metadata.yaml -----------------------------------------------------------------------------
@dataclass(frozen=True)
class MetadataTopic:
    name: str
    type: str
    serialization_format: str
    count: int  # message_count


@dataclass(frozen=True)
class Metadata:
    """What metadata.yaml says (rosbag2 metadata versions 1..9)."""

    path: Path  # the metadata.yaml file
    version: int
    storage: str  # storage_identifier: 'sqlite3' or 'mcap'
    files: tuple[Path, ...]  # storage files as listed (file-compressed ones end in .zstd)
    compression_format: str  # '' or 'zstd'
    compression_mode: str  # '' (none), 'file' or 'message'
    topics: tuple[MetadataTopic, ...]
    message_count: int
    start_ns: int
    duration_ns: int
    ros_distro: str = ""


def read_metadata(bag: str | Path) -> Metadata:
    """metadata.yaml of the bag directory ``bag``; BagError naming the file and the key at fault."""
    path = Path(bag) / METADATA
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise BagError(f"{path}: no such file (a bag directory has one; a recording that was killed has "
                       f"none: run `mbrl-ros bag repair {bag}`)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise BagError(f"{path}: cannot read: {error}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise BagError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("rosbag2_bagfile_information"), dict):
        raise BagError(f"{path}: not rosbag2 metadata (no mapping 'rosbag2_bagfile_information')")
    info = document["rosbag2_bagfile_information"]
    where = f"{path}: key 'rosbag2_bagfile_information"

    def get(key: str, kind, *, default=None, required: bool = True):
        value = info.get(key, default)
        if value is None and not required:
            return default
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            raise BagError(f"{where}.{key}': expected {_kind_name(kind)}, got {value!r}")
        return value

    version = get("version", int)
    if version < 1:
        raise BagError(f"{where}.version': expected a version >= 1, got {version}")
    storage = get("storage_identifier", str)
    if storage not in STORAGE_SUFFIXES.values():
        raise BagError(f"{where}.storage_identifier': storage '{storage}' is not one this reader knows "
                       f"({', '.join(sorted(STORAGE_SUFFIXES.values()))})")
    names = get("relative_file_paths", list)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise BagError(f"{where}.relative_file_paths': expected a list of file names, got {names!r}")
    compression_format = str(get("compression_format", str, default="", required=False) or "")
    compression_mode = str(get("compression_mode", str, default="", required=False) or "").lower()
    compression_mode = "" if compression_mode == "none" else compression_mode
    if compression_mode not in ("", "file", "message"):
        raise BagError(f"{where}.compression_mode': expected '', 'file' or 'message', got {compression_mode!r}")
    if compression_mode and compression_format != "zstd":
        raise BagError(f"{where}.compression_format': compression '{compression_format}' is not supported "
                       "(zstd is)")
    topics = []
    for k, entry in enumerate(get("topics_with_message_count", list, default=[], required=False)):
        at = f"{where}.topics_with_message_count[{k}]"
        meta = entry.get("topic_metadata") if isinstance(entry, dict) else None
        if not isinstance(meta, dict):
            raise BagError(f"{at}.topic_metadata': missing or not a mapping")
        for key in ("name", "type"):
            if not isinstance(meta.get(key), str) or not meta.get(key):
                raise BagError(f"{at}.topic_metadata.{key}': expected a non-empty string, got {meta.get(key)!r}")
        count = entry.get("message_count", 0)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise BagError(f"{at}.message_count': expected a count >= 0, got {count!r}")
        topics.append(MetadataTopic(meta["name"], meta["type"], str(meta.get("serialization_format") or "cdr"), count))
    message_count = get("message_count", int, default=sum(t.count for t in topics), required=False)
    start = info.get("starting_time") or {}
    duration = info.get("duration") or {}
    start_ns = start.get("nanoseconds_since_epoch", 0) if isinstance(start, dict) else 0
    duration_ns = duration.get("nanoseconds", 0) if isinstance(duration, dict) else 0
    for key, value in (("starting_time.nanoseconds_since_epoch", start_ns), ("duration.nanoseconds", duration_ns)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise BagError(f"{where}.{key}': expected an integer, got {value!r}")
    # Foxy wrote paths relative to the bag's parent ('bag/bag_0.db3'); later releases just the name.
    files = tuple(Path(bag) / PurePath(name).name for name in names)
    return Metadata(path, version, storage, files, compression_format, compression_mode, tuple(topics),
                    message_count, start_ns, duration_ns, str(info.get("ros_distro") or ""))


def _kind_name(kind) -> str:
    return {int: "an integer", str: "a string", list: "a list", dict: "a mapping"}.get(kind, kind.__name__)


# ---- what a storage file holds ---------------------------------------------------------------
@dataclass
class StorageTopic:
    """One topic as the storage records it (summed over the bag's files)."""

    name: str
    type: str
    encoding: str  # serialisation format: 'cdr'
    definition: str = ""  # the type's definition the bag carries ('' if none)
    definition_format: str = ""  # 'ros2msg', 'ros2idl' or '' (none)
    qos: str = ""  # offered_qos_profiles as stored (YAML text)
    type_hash: str = ""  # RIHS01 (Iron on)
    count: int | None = 0  # messages in storage; None where the file does not say (an MCAP without statistics)


@dataclass
class Packed:
    """One topic's messages in one bag: serialised bytes packed into one buffer, in log order."""

    topic: str
    buffer: np.ndarray  # uint8
    offsets: np.ndarray  # int64
    lengths: np.ndarray  # int64
    log_ns: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.offsets)

    def message(self, k: int) -> bytes:
        return self.buffer[self.offsets[k]:self.offsets[k] + self.lengths[k]].tobytes()


def pack(topic: str, log_ns, datas) -> Packed:
    """A Packed of the messages ``datas`` (bytes) logged at ``log_ns``, in the order given."""
    lengths = np.fromiter(map(len, datas), dtype=np.int64, count=len(datas))
    offsets = np.zeros(len(datas), dtype=np.int64)
    if len(datas) > 1:
        np.cumsum(lengths[:-1], out=offsets[1:])
    buffer = np.frombuffer(b"".join(datas), dtype=np.uint8)
    return Packed(topic, buffer, offsets, lengths, np.asarray(log_ns, dtype=np.int64).reshape(-1))


def empty(topic: str) -> Packed:
    return Packed(topic, np.zeros(0, np.uint8), *(np.zeros(0, np.int64) for _ in range(3)))


class StorageFile:
    """One storage file: its topics by the file's own id, their messages."""

    path: Path
    topics: dict[int, StorageTopic]

    def read(self, names: list[str]) -> list[Packed]:
        """Per name, the messages of that topic in this file, in log order."""
        raise NotImplementedError

    def messages(self) -> Iterator[tuple[int, int, bytes]]:
        """(topic id, log time, data) of every message, in storage order."""
        raise NotImplementedError

    def count_messages(self) -> None:
        """Fill in ``topics[*].count`` where the file can say more than it said on opening."""

    def close(self) -> None:
        pass


# ---- sqlite3 ---------------------------------------------------------------------------------
class SqliteFile(StorageFile):
    """A rosbag2 sqlite3 database of any release.

    Tables by release (rosbag2_storage_default_plugins, later rosbag2_storage_sqlite3):
    Foxy and Galactic ``topics(id, name, type, serialization_format,
    offered_qos_profiles)`` and ``messages(id, topic_id, timestamp, data)``;
    Humble adds ``schema`` (version 3) and ``metadata``; Iron on (schema 4) adds
    ``topics.type_description_hash`` and ``message_definitions(topic_type,
    encoding, encoded_message_definition, type_description_hash)``; before Foxy
    ``topics`` had no QoS column. Opened read-only and immutable: a database is
    never changed by reading it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        _check_sqlite_size(path)
        try:
            self.db = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
        except sqlite3.Error as error:
            raise BagError(f"{path}: cannot open the sqlite3 database: {error}") from None
        try:
            self.topics = self._topics()
        except sqlite3.DatabaseError as error:
            self.db.close()
            raise BagError(f"{path}: not a readable rosbag2 sqlite3 database: {error}") from None

    def _topics(self) -> dict[int, StorageTopic]:
        tables = {row[0] for row in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        missing = {"topics", "messages"} - tables
        if missing:
            raise BagError(f"{self.path}: not a rosbag2 sqlite3 database (no table {', '.join(sorted(missing))})")
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(topics)")}
        qos = "offered_qos_profiles" if "offered_qos_profiles" in columns else "''"
        type_hash = "type_description_hash" if "type_description_hash" in columns else "''"
        definitions: dict[str, tuple[str, str]] = {}
        if "message_definitions" in tables:
            for typename, encoding, text in self.db.execute(
                    "SELECT topic_type, encoding, encoded_message_definition FROM message_definitions ORDER BY id"):
                if encoding in DEFINITION_FORMATS and text:  # 'unknown' + '': the writer had no definition
                    definitions.setdefault(typename, (encoding, text))
        topics = {}
        for tid, name, typename, encoding, qos_text, hash_text in self.db.execute(
                f"SELECT id, name, type, serialization_format, {qos}, {type_hash} FROM topics ORDER BY id"):
            text_format, text = definitions.get(typename, ("", ""))
            # count: None until ``count_messages`` (a scan of the whole table, which reading does not need)
            topics[tid] = StorageTopic(name, typename, encoding, text, text_format, qos_text or "", hash_text or "",
                                       None)
        return topics

    def count_messages(self) -> None:
        """The database's own count of each topic's messages (``SELECT count(*)``) into ``topics``."""
        try:
            counts = dict(self.db.execute("SELECT topic_id, count(*) FROM messages GROUP BY topic_id"))
        except sqlite3.DatabaseError as error:
            raise BagError(f"{self.path}: cannot count its messages: {error}") from None
        for tid, topic in self.topics.items():
            topic.count = counts.get(tid, 0)

    def read(self, names: list[str]) -> list[Packed]:
        out = []
        for name in names:
            ids = [tid for tid, topic in self.topics.items() if topic.name == name]
            if not ids:
                out.append(empty(name))
                continue
            try:
                # In insertion order (a plain scan; ordering by timestamp makes sqlite walk the
                # timestamp index and fetch row by row, ~20 % slower), then sorted stably by log
                # time below: the order rosbag2 reads in (timestamp, then id).
                rows = self.db.execute(f"SELECT timestamp, data FROM messages WHERE topic_id IN "
                                       f"({', '.join('?' * len(ids))}) ORDER BY id", ids).fetchall()
            except sqlite3.DatabaseError as error:
                raise BagError(f"{self.path}: cannot read the messages of '{name}': {error}") from None
            if not rows:
                out.append(empty(name))
                continue
            log_ns, datas = zip(*rows)  # one pass in C: a tuple per column
            packed = pack(name, log_ns, datas)
            if np.any(np.diff(packed.log_ns) < 0):
                order = np.argsort(packed.log_ns, kind="stable")
                packed = Packed(name, packed.buffer, packed.offsets[order], packed.lengths[order], packed.log_ns[order])
            out.append(packed)
        return out

    def messages(self) -> Iterator[tuple[int, int, bytes]]:
        try:
            cursor = self.db.execute("SELECT topic_id, timestamp, data FROM messages ORDER BY id")
            while rows := cursor.fetchmany(4096):
                yield from rows
        except sqlite3.DatabaseError as error:
            raise BagError(f"{self.path}: reading its messages stopped: {error}") from None

    def close(self) -> None:
        self.db.close()


SQLITE_MAGIC = b"SQLite format 3\0"


def sqlite_declared_size(head: bytes) -> tuple[int, int] | None:
    """(page size, bytes) the sqlite3 header ``head`` (the file's first 100 bytes) says the database has.

    Per https://sqlite.org/fileformat.html: page size at offset 16, database
    size in pages at 28, valid while the version-valid-for number (92) equals
    the change counter (24). None where the header does not say.
    """
    if len(head) < 100 or not head.startswith(SQLITE_MAGIC):
        return None
    (page,) = struct.unpack_from(">H", head, 16)
    page = 65536 if page == 1 else page
    (changed,) = struct.unpack_from(">I", head, 24)
    (pages,) = struct.unpack_from(">I", head, 28)
    (valid_for,) = struct.unpack_from(">I", head, 92)
    return (page, pages * page) if pages and changed == valid_for else None


def _check_sqlite_size(path: Path) -> None:
    """BagError if the file is not sqlite3, or shorter than its header says (a copy or download cut short:
    sqlite itself would fail on the first missing page, mid-query)."""
    try:
        with open(path, "rb") as file:
            head = file.read(100)
            size = file.seek(0, 2)
    except OSError as error:
        raise BagError(f"{path}: cannot open: {error.strerror}") from None
    if not head.startswith(SQLITE_MAGIC):
        raise BagError(f"{path}: not a sqlite3 database (it does not start with the sqlite3 header)")
    declared = sqlite_declared_size(head)
    if declared is not None and size < declared[1]:
        raise BagError(f"{path}: truncated: its header says {declared[1]} bytes, the file has {size}")


# ---- MCAP ------------------------------------------------------------------------------------
# Records (https://mcap.dev/spec): opcode (1 byte), body length (uint64), body.
_SCHEMA, _CHANNEL, _MESSAGE, _CHUNK, _MESSAGE_INDEX, _DATA_END, _FOOTER = 0x03, 0x04, 0x05, 0x06, 0x07, 0x0F, 0x02
_MESSAGE_DATA = 1 + 8 + 2 + 4 + 8 + 8  # opcode, length, channel id, sequence, log time, publish time
_CHUNK_FIXED = 1 + 8 + 8 + 8 + 8 + 4  # opcode, length, start and end time, uncompressed size, crc


class McapFile(StorageFile):
    """An MCAP file as rosbag2_storage_mcap writes it (profile ``ros2``: ``ros2msg``
    schemas named like ``nav_msgs/msg/Odometry``, ``cdr`` channels with
    ``offered_qos_profiles`` and from Iron on ``topic_type_hash`` metadata).

    With a summary and chunk indexes (every file rosbag2 closed) the messages
    are found through the chunk and message indexes with numpy, never record by
    record in Python; without them (a file whose writer was killed, or written
    without chunks) the records are walked. A file that ends inside a record is
    an error here: ``mbrl-ros bag repair`` keeps what it holds.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.stream = open(path, "rb")
        except OSError as error:
            raise BagError(f"{path}: cannot open: {error.strerror}") from None
        try:
            if self.stream.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
                raise BagError(f"{path}: not an MCAP file (it does not start with the MCAP magic bytes)")
            self.summary = self._summary()
            self.topics: dict[int, StorageTopic] = {}
            self._scanned: _Scan | None = None
            if self.summary is not None and self.summary.channels:
                self._topics_from(self.summary.schemas, self.summary.channels)
                stats = self.summary.statistics
                for cid, topic in self.topics.items():
                    topic.count = stats.channel_message_counts.get(cid, 0) if stats is not None else None
            else:  # no summary: schemas and channels are among the records
                scan = self._scan()
                self._topics_from(scan.schemas, scan.channels)
                for cid, topic in self.topics.items():
                    topic.count = len(scan.offsets.get(cid, ()))
        except BaseException:
            self.stream.close()
            raise

    def _summary(self):
        from mcap.exceptions import McapError
        from mcap.reader import make_reader

        try:
            self.stream.seek(0)  # the reader checks the magic where the stream is
            return make_reader(self.stream).get_summary()
        except (McapError, struct.error, ValueError, EOFError, OSError):
            return None  # no footer (a killed writer) or a damaged one: the records are walked

    def _topics_from(self, schemas: dict, channels: dict) -> None:
        for cid, channel in channels.items():
            schema = schemas.get(channel.schema_id)
            metadata = channel.metadata or {}
            text_format = schema.encoding if schema is not None and schema.encoding in DEFINITION_FORMATS else ""
            self.topics[cid] = StorageTopic(
                channel.topic, schema.name if schema is not None else "", channel.message_encoding,
                bytes(schema.data).decode("utf-8", "replace") if text_format else "", text_format,
                metadata.get("offered_qos_profiles", ""), metadata.get("topic_type_hash", ""))
            if schema is None:
                raise BagError(f"{self.path}: channel '{channel.topic}' names schema {channel.schema_id}, "
                               "which the file does not hold")

    def count_messages(self) -> None:
        """Without statistics in the summary, the message indexes' entries are counted (no chunk is read)."""
        if all(t.count is not None for t in self.topics.values()) or not self.indexed():
            return
        counts: dict[int, int] = defaultdict(int)
        for chunk in self.summary.chunk_indexes:
            if not chunk.message_index_offsets:
                return  # chunks without message indexes: the count stays unknown
            base = chunk.chunk_start_offset + chunk.chunk_length
            self.stream.seek(base)
            index = self.stream.read(chunk.message_index_length)
            for cid, at in chunk.message_index_offsets.items():
                counts[cid] += len(_message_index(index, at - base, cid, self.path)[0])
        for cid, topic in self.topics.items():
            topic.count = counts.get(cid, 0)

    def indexed(self) -> bool:
        return self.summary is not None and bool(self.summary.chunk_indexes) and bool(self.summary.channels)

    def read(self, names: list[str]) -> list[Packed]:
        wanted = {cid: names.index(t.name) for cid, t in self.topics.items() if t.name in names}
        parts: list[list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in names]
        if self.indexed():
            sources = self._indexed_parts(wanted)
        else:
            scan = self._scan()
            sources = ((buffer, [(cid, offsets, logs) for cid, (offsets, logs) in found.items() if cid in wanted])
                       for buffer, found in scan.parts())
        for buffer, found in sources:
            for cid, offsets, logs in found:
                if not len(offsets):
                    continue
                record_len = buffer[(offsets + 1)[:, None] + np.arange(8)].copy().view("<u8").reshape(-1)
                lengths = record_len.astype(np.int64) - (_MESSAGE_DATA - 9)
                parts[wanted[cid]].append((buffer, offsets + _MESSAGE_DATA, lengths, logs))
        out = []
        for k, name in enumerate(names):
            if not parts[k]:
                out.append(empty(name))
                continue
            buffers, offsets, lengths, logs, base = [], [], [], [], 0
            for buffer, offs, lens, log in parts[k]:
                buffers.append(buffer)
                offsets.append(offs + base)
                lengths.append(lens)
                logs.append(log)
                base += len(buffer)
            log = np.concatenate(logs)
            order = np.argsort(log, kind="stable")  # chunks may overlap in time
            out.append(Packed(name, np.concatenate(buffers), np.concatenate(offsets)[order],
                              np.concatenate(lengths)[order], log[order]))
        return out

    def _indexed_parts(self, wanted: dict[int, int]) -> Iterator[tuple[np.ndarray, list]]:
        """(chunk records, [(channel, record offsets, log times)]) of the chunks holding wanted channels.

        Every chunk's message index already lists (log time, offset) of each
        channel's messages, so the records are found without walking them.
        """
        for chunk in self.summary.chunk_indexes:
            indexed = bool(chunk.message_index_offsets)
            ids = [cid for cid in wanted if cid in chunk.message_index_offsets]
            if indexed and not ids:
                continue  # the chunk's index lists no wanted channel
            self.stream.seek(chunk.chunk_start_offset)
            record = self.stream.read(chunk.chunk_length)
            if len(record) < chunk.chunk_length or not record or record[0] != _CHUNK:
                raise BagError(f"{self.path}: no chunk at byte {chunk.chunk_start_offset} where the summary "
                               "says one is; the file is damaged")
            buffer = np.frombuffer(_chunk_records(record, chunk.compression, self.path), dtype=np.uint8)
            if indexed:
                self.stream.seek(chunk.chunk_start_offset + chunk.chunk_length)
                index = self.stream.read(chunk.message_index_length)
                base = chunk.chunk_start_offset + chunk.chunk_length
                found = [(cid, *_message_index(index, chunk.message_index_offsets[cid] - base, cid, self.path))
                         for cid in ids]
            else:  # a writer that indexes chunks but not messages (rosbags): walk the chunk's records
                found = [(cid, *f) for cid, f in _walk(buffer.tobytes(), set(wanted), self.path).items()]
            yield buffer, found

    def _scan(self) -> "_Scan":
        if self._scanned is None:
            self.stream.seek(0)
            data = self.stream.read()
            self._scanned = _Scan(self.path, data)
        return self._scanned

    def messages(self) -> Iterator[tuple[int, int, bytes]]:
        if self.indexed():
            for buffer, found in self._indexed_parts({cid: 0 for cid in self.topics}):
                entries = sorted((int(o), cid, int(t)) for cid, offsets, logs in found for o, t in zip(offsets, logs))
                raw = buffer.tobytes()
                for offset, cid, log_ns in entries:
                    (length,) = struct.unpack_from("<Q", raw, offset + 1)
                    yield cid, log_ns, raw[offset + _MESSAGE_DATA:offset + 9 + length]
            return
        for buffer, found in self._scan().parts():
            raw = buffer.tobytes()
            entries = sorted((int(o), cid, int(t)) for cid, (offsets, logs) in found.items()
                             for o, t in zip(offsets, logs))
            for offset, cid, log_ns in entries:
                (length,) = struct.unpack_from("<Q", raw, offset + 1)
                yield cid, log_ns, raw[offset + _MESSAGE_DATA:offset + 9 + length]

    def close(self) -> None:
        self.stream.close()


class _Scan:
    """An MCAP file walked record by record: schemas, channels, and where each channel's messages are."""

    def __init__(self, path: Path, data: bytes) -> None:
        from mcap.data_stream import ReadDataStream
        from mcap.records import Channel, Schema

        self.path = path
        self.schemas: dict = {}
        self.channels: dict = {}
        self._parts: list[tuple[np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]]]] = []
        top: dict[int, tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
        at, end = len(MCAP_MAGIC), len(data)
        while at < end:
            if at + 9 > end:
                raise BagError(f"{path}: truncated: the file ends inside a record at byte {at} of {end}; "
                               "`mbrl-ros bag repair` keeps the messages before it")
            opcode = data[at]
            (length,) = struct.unpack_from("<Q", data, at + 1)
            if at + 9 + length > end:
                raise BagError(f"{path}: truncated: a record (opcode {opcode:#04x}) at byte {at} needs "
                               f"{9 + length} bytes, the file ends {end - at} bytes after its start; "
                               "`mbrl-ros bag repair` keeps the messages before it")
            body = data[at + 9:at + 9 + length]
            if opcode == _SCHEMA:
                schema = Schema.read(ReadDataStream(BytesIO(body)))
                self.schemas[schema.id] = schema
            elif opcode == _CHANNEL:
                channel = Channel.read(ReadDataStream(BytesIO(body)))
                self.channels[channel.id] = channel
            elif opcode == _MESSAGE:
                cid, _sequence, log_ns = struct.unpack_from("<HIQ", data, at + 9)
                top[cid][0].append(at)
                top[cid][1].append(log_ns)
            elif opcode == _CHUNK:
                records = _chunk_records(data[at:at + 9 + length], _chunk_compression(data, at), path)
                for record in _definitions(records):
                    kind, parsed = record
                    if kind == _SCHEMA:
                        self.schemas[parsed.id] = parsed
                    else:
                        self.channels[parsed.id] = parsed
                found = _walk(records, None, path)
                self._parts.append((np.frombuffer(records, dtype=np.uint8), found))
            elif opcode in (_DATA_END, _FOOTER):
                break  # the summary section follows
            at += 9 + length
        if top:
            self._parts.append((np.frombuffer(data, dtype=np.uint8),
                                {cid: (np.asarray(o, np.int64), np.asarray(t, np.int64)) for cid, (o, t) in top.items()}))
        self.offsets: dict[int, list] = defaultdict(list)
        for _buffer, found in self._parts:
            for cid, (offsets, _logs) in found.items():
                self.offsets[cid].extend(offsets.tolist())

    def parts(self) -> list[tuple[np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]]]]:
        return self._parts


def _definitions(records: bytes):
    """The Schema and Channel records inside a chunk's records."""
    from mcap.data_stream import ReadDataStream
    from mcap.records import Channel, Schema

    at = 0
    while at + 9 <= len(records):
        opcode = records[at]
        (length,) = struct.unpack_from("<Q", records, at + 1)
        if opcode in (_SCHEMA, _CHANNEL):
            stream = ReadDataStream(BytesIO(records[at + 9:at + 9 + length]))
            yield opcode, (Schema.read(stream) if opcode == _SCHEMA else Channel.read(stream))
        at += 9 + length


def _walk(records: bytes, wanted: set[int] | None, path: Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Channel -> (record offsets, log times) of the (wanted) message records in a chunk's records."""
    found: dict[int, tuple[list[int], list[int]]] = {}
    at, end = 0, len(records)
    while at < end:
        if at + 9 > end:
            raise BagError(f"{path}: a chunk's records end inside a record at offset {at}; the file is damaged")
        opcode = records[at]
        (length,) = struct.unpack_from("<Q", records, at + 1)
        if opcode == _MESSAGE:
            cid, _sequence, log_ns = struct.unpack_from("<HIQ", records, at + 9)
            if wanted is None or cid in wanted:
                offsets, logs = found.setdefault(cid, ([], []))
                offsets.append(at)
                logs.append(log_ns)
        at += 9 + length
    if at != end:
        raise BagError(f"{path}: a chunk's last record runs {at - end} bytes past the chunk; the file is damaged")
    return {cid: (np.asarray(o, dtype=np.int64), np.asarray(t, dtype=np.int64)) for cid, (o, t) in found.items()}


def _message_index(index: bytes, at: int, cid: int, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(record offsets, log times) of channel ``cid``'s messages from its message index record at ``at``."""
    if at < 0 or at + 15 > len(index) or index[at] != _MESSAGE_INDEX or struct.unpack_from("<H", index, at + 9)[0] != cid:
        raise BagError(f"{path}: the message index of channel {cid} is not where the chunk index says; "
                       "the file is damaged")
    (size,) = struct.unpack_from("<I", index, at + 11)
    entries = np.frombuffer(index, dtype="<u8", count=size // 8, offset=at + 15).reshape(-1, 2).astype(np.int64)
    return entries[:, 1], entries[:, 0]


def _chunk_compression(data: bytes, at: int) -> str:
    (name_len,) = struct.unpack_from("<I", data, at + _CHUNK_FIXED)
    return data[at + _CHUNK_FIXED + 4:at + _CHUNK_FIXED + 4 + name_len].decode()


def _chunk_records(record: bytes, compression: str, path: Path) -> bytes:
    """The records inside an MCAP chunk record, decompressed."""
    (name_len,) = struct.unpack_from("<I", record, _CHUNK_FIXED)
    start = _CHUNK_FIXED + 4 + name_len + 8
    (size,) = struct.unpack_from("<Q", record, start - 8)
    data = record[start:start + size]
    try:
        if compression == "zstd":
            return zstd().decompress(data)
        if compression == "lz4":
            from lz4.frame import decompress

            return decompress(data)
    except Exception as error:  # each decompressor raises its own errors
        raise BagError(f"{path}: a {compression} chunk cannot be decompressed ({error}); the file is damaged") from None
    if compression:
        raise BagError(f"{path}: MCAP chunk compression '{compression}' is not supported (zstd, lz4, none are)")
    return data


def zstd():
    try:
        from compression import zstd as module  # Python >= 3.14
    except ImportError:
        from backports import zstd as module  # what rosbags uses before 3.14
    return module


def open_storage_file(path: Path) -> StorageFile:
    if path.suffix == ".mcap":
        return McapFile(path)
    if path.suffix == ".db3":
        return SqliteFile(path)
    raise BagError(f"{path}: not a storage file this reader knows (.mcap or .db3)")


# ---- a bag ------------------------------------------------------------------------------------
class StorageBag:
    """A bag directory opened for reading: metadata.yaml and its storage files.

        with StorageBag(path) as bag:
            bag.topics                      # name -> StorageTopic (counts summed over the files)
            state, command = bag.read(["/car/state", "/car/hw/command"])

    A file-compressed bag's files are decompressed into a temporary folder,
    removed on close; a message-compressed bag's messages are decompressed as
    they are read. Nothing in the bag directory is written.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise BagError(f"{self.path}: no such bag directory" if not self.path.exists() else
                           f"{self.path}: is a file, not a rosbag2 directory (a folder with {METADATA})")
        self.metadata = read_metadata(self.path)
        self.files: list[StorageFile] = []
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.topics: dict[str, StorageTopic] = {}

    def __enter__(self) -> "StorageBag":
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        missing = [str(f) for f in self.metadata.files if not f.is_file()]
        if missing:
            raise BagError(f"{self.metadata.path}: lists storage files that are not there: {', '.join(missing)}")
        for listed in self.metadata.files:
            try:
                self.files.append(open_storage_file(self._decompressed(listed)))
            except BagError:
                raise
            except Exception as error:  # the mcap package's and the decompressors' own errors on a damaged file
                raise BagError(f"{listed}: cannot read: {type(error).__name__}: {error}; the file is damaged") from None
        self._merge()

    def count_messages(self) -> dict[str, int | None]:
        """Topic -> the storage's own count of its messages (sqlite3 ``count(*)``, the MCAP statistics or a
        walk of the records); None where a file cannot say (an MCAP summary without statistics)."""
        for file in self.files:
            file.count_messages()
        self._merge()
        return {name: topic.count for name, topic in self.topics.items()}

    def _merge(self) -> None:
        self.topics = {}
        for file in self.files:
            for topic in file.topics.values():
                have = self.topics.get(topic.name)
                if have is None:
                    self.topics[topic.name] = StorageTopic(**{**topic.__dict__})
                    continue
                if have.type != topic.type:
                    raise BagError(f"{file.path}: topic '{topic.name}' is recorded as {topic.type} here and as "
                                   f"{have.type} elsewhere in the bag")
                have.count = None if have.count is None or topic.count is None else have.count + topic.count
                if not have.definition and topic.definition:
                    have.definition, have.definition_format = topic.definition, topic.definition_format
        for meta in self.metadata.topics:  # listed in metadata.yaml but never created in storage (no message)
            self.topics.setdefault(meta.name, StorageTopic(meta.name, meta.type, meta.serialization_format, count=0))

    def _decompressed(self, listed: Path) -> Path:
        if self.metadata.compression_mode != "file":
            return listed
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="mbrl_bag_")
        target = Path(self._tmp.name) / (listed.stem if listed.suffix == ".zstd" else listed.name)
        try:
            with open(listed, "rb") as raw, zstd().open(raw, "rb") as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
        except Exception as error:  # zstd's own errors on a damaged file
            raise BagError(f"{listed}: cannot decompress (zstd file compression): {error}") from None
        return target

    def iter_files(self) -> Iterator[StorageFile]:
        yield from self.files

    def read(self, names: list[str]) -> list[Packed]:
        """Per name, every message of the topic in the bag's files, in log order, decompressed."""
        per_file = []
        for file in self.files:
            try:
                per_file.append(file.read(names))
            except BagError:
                raise
            except Exception as error:  # a damaged file
                raise BagError(f"{file.path}: cannot read: {type(error).__name__}: {error}; the file is damaged") from None
        out = []
        for k, name in enumerate(names):
            parts = [p[k] for p in per_file if len(p[k])]
            packed = parts[0] if len(parts) == 1 else _join(name, parts)
            if self.metadata.compression_mode == "message" and len(packed):
                packed = self._decompress_messages(packed)
            out.append(packed)
        return out

    def messages(self, names: list[str] | None = None) -> Iterator[tuple[str, int, bytes]]:
        """(topic, log time, serialised message) of the named topics (default: all), in log order over the
        bag's files (ties in the order of ``names``). Holds the topics' messages in memory."""
        names = list(self.topics) if names is None else [name for name in names if name in self.topics]
        packed = self.read(names)
        which = np.concatenate([np.full(len(p), k) for k, p in enumerate(packed)] or [np.zeros(0, np.int64)])
        row = np.concatenate([np.arange(len(p)) for p in packed] or [np.zeros(0, np.int64)])
        log = np.concatenate([p.log_ns for p in packed] or [np.zeros(0, np.int64)])
        for k in np.lexsort((which, log)):
            part = packed[which[k]]
            yield part.topic, int(log[k]), part.message(int(row[k]))

    def _decompress_messages(self, packed: Packed) -> Packed:
        module = zstd()
        try:
            datas = [module.decompress(packed.message(k)) for k in range(len(packed))]
        except Exception as error:  # zstd's own errors
            raise BagError(f"{self.path}: topic '{packed.topic}': a message cannot be decompressed "
                           f"(zstd message compression): {error}") from None
        return pack(packed.topic, packed.log_ns, datas)

    def decompress(self, data: bytes) -> bytes:
        """A message as stored -> its serialised bytes (message compression undone)."""
        return zstd().decompress(data) if self.metadata.compression_mode == "message" else data

    def close(self) -> None:
        for file in self.files:
            file.close()
        self.files = []
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _join(name: str, parts: list[Packed]) -> Packed:
    if not parts:
        return empty(name)
    buffers, offsets, base = [], [], 0
    for part in parts:
        buffers.append(part.buffer)
        offsets.append(part.offsets + base)
        base += len(part.buffer)
    log = np.concatenate([p.log_ns for p in parts])
    order = np.argsort(log, kind="stable")  # split files follow each other; stable keeps each file's order
    return Packed(name, np.concatenate(buffers), np.concatenate(offsets)[order],
                  np.concatenate([p.lengths for p in parts])[order], log[order])


def storage_files_in(directory: Path) -> list[Path]:
    """The storage files directly in ``directory`` (a bag, complete or not)."""
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in STORAGE_SUFFIXES)
