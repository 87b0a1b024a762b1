"""Bags written the way the upstream ``ros2 bag record`` of each ROS 2 release writes them.

There is no ``ros2 bag`` (no rosbag2_py wheel) here, so these rebuild its files
from the formats' public definitions (rosbag2_storage's metadata.yaml encoding
per version, the sqlite3 tables of rosbag2_storage_default_plugins /
rosbag2_storage_sqlite3 per release, rosbag2_storage_mcap's use of MCAP):

| release  | metadata.yaml | sqlite3 tables                                  | MCAP | definitions in the bag |
|----------|---------------|-------------------------------------------------|------|------------------------|
| Foxy     | 4             | topics(+offered_qos_profiles), messages         | no   | none                   |
| Galactic | 5 (+files)    | as Foxy                                         | yes  | MCAP schemas           |
| Humble   | 5             | + schema (version 3), metadata                  | yes  | MCAP schemas           |
| Iron     | 6 (+custom_data), 7 (+type_description_hash) | schema 4: + topics.type_description_hash, message_definitions | yes | both |
| Jazzy    | 8 (+ros_distro), 9 (QoS as a list, not a YAML string) | schema 4 | yes | both           |

The QoS profiles: a YAML string (metadata 4..8, and always in the storage), a
list (metadata 9). "Infinite" durations as the middleware reported them: Fast
DDS's 2147483647 s / 4294967295 ns under Foxy, RMW's 9223372036 s / 854775807 ns
from Galactic on. A type the writer had no definition of is recorded with
encoding ``unknown`` and an empty definition (Iron on).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from mcap.writer import CompressionType
from mcap.writer import Writer as McapWriter

QOS_FOXY = ("- history: 3\n  depth: 0\n  reliability: 1\n  durability: 2\n  deadline:\n    sec: 2147483647\n"
            "    nsec: 4294967295\n  lifespan:\n    sec: 2147483647\n    nsec: 4294967295\n  liveliness: 1\n"
            "  liveliness_lease_duration:\n    sec: 2147483647\n    nsec: 4294967295\n"
            "  avoid_ros_namespace_conventions: false")
QOS_GALACTIC = (QOS_FOXY.replace("2147483647", "9223372036").replace("4294967295", "854775807"))
QOS_V9 = [{"history": "unknown", "depth": 0, "reliability": "reliable", "durability": "volatile",
           "deadline": {"sec": 9223372036, "nsec": 854775807}, "lifespan": {"sec": 9223372036, "nsec": 854775807},
           "liveliness": "automatic", "liveliness_lease_duration": {"sec": 9223372036, "nsec": 854775807},
           "avoid_ros_namespace_conventions": False}]
DISTRO = {4: "foxy", 5: "humble", 6: "iron", 7: "iron", 8: "jazzy", 9: "jazzy"}

SQLITE_TABLES = {
    # Foxy and Galactic: topics carry their QoS; no schema table (rosbags calls it schema 2).
    2: """CREATE TABLE topics(id INTEGER PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL,
            serialization_format TEXT NOT NULL, offered_qos_profiles TEXT NOT NULL);""",
    # Humble: a schema table and the metadata table.
    3: """CREATE TABLE schema(schema_version INTEGER PRIMARY KEY, ros_distro TEXT NOT NULL);
          CREATE TABLE metadata(id INTEGER PRIMARY KEY, metadata_version INTEGER NOT NULL, metadata TEXT NOT NULL);
          CREATE TABLE topics(id INTEGER PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL,
            serialization_format TEXT NOT NULL, offered_qos_profiles TEXT NOT NULL);""",
    # Iron and later: type hashes and message definitions.
    4: """CREATE TABLE schema(schema_version INTEGER PRIMARY KEY, ros_distro TEXT NOT NULL);
          CREATE TABLE metadata(id INTEGER PRIMARY KEY, metadata_version INTEGER NOT NULL, metadata TEXT NOT NULL);
          CREATE TABLE topics(id INTEGER PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL,
            serialization_format TEXT NOT NULL, offered_qos_profiles TEXT NOT NULL, type_description_hash TEXT NOT NULL);
          CREATE TABLE message_definitions(id INTEGER PRIMARY KEY, topic_type TEXT NOT NULL, encoding TEXT NOT NULL,
            encoded_message_definition TEXT NOT NULL, type_description_hash TEXT NOT NULL);""",
}


def sqlite_schema(version: int, distro: str) -> int:
    """The sqlite3 table layout a release wrote with metadata ``version``."""
    if version >= 6:
        return 4
    return 3 if distro == "humble" else 2


def default_qos(version: int) -> str:
    return QOS_FOXY if version == 4 else QOS_GALACTIC


@dataclass
class Topic:
    """A recorded topic: its type, the definition the writer had ('' none), the QoS each place got."""

    name: str
    type: str
    definition: str = ""  # full ros2msg text, dependencies included; '' if the writer had none
    type_hash: str = ""  # RIHS01, written from Iron on
    qos: str | None = None  # the QoS string in the storage (default: the release's)
    metadata_qos: str | list | None = None  # in metadata.yaml (default: the storage's, a list in v9)


def topics_of(store, types: dict[str, str], definitions: bool = True) -> list[Topic]:
    """Topics of ``{name: type}`` with definitions and hashes from ``store``."""
    return [Topic(name, typename, store.generate_msgdef(typename, ros_version=2)[0] if definitions else "",
                  store.hash_rihs01(typename)) for name, typename in types.items()]


def _storage_qos(topic: Topic, version: int) -> str:
    return topic.qos if topic.qos is not None else (yaml.safe_dump(QOS_V9) if version >= 9 else default_qos(version))


def write_metadata(path: Path, version: int, storage: str, files, topics: list[Topic], counts: dict[str, int],
                   distro: str | None = None) -> None:
    """``metadata.yaml`` as rosbag2 of metadata ``version`` writes it; ``files``: (name, first, last, count)."""
    distro = distro or DISTRO[version]
    first = min((f[1] for f in files if f[3]), default=0)
    last = max((f[2] for f in files if f[3]), default=0)
    entries = []
    for topic in topics:
        qos = topic.metadata_qos
        if qos is None:
            qos = QOS_V9 if version >= 9 and topic.qos is None else _storage_qos(topic, version)
        meta = {"name": topic.name, "type": topic.type, "serialization_format": "cdr", "offered_qos_profiles": qos}
        if version >= 7:
            meta["type_description_hash"] = topic.type_hash
        entries.append({"topic_metadata": meta, "message_count": counts.get(topic.name, 0)})
    info = {
        "version": version, "storage_identifier": storage,
        "duration": {"nanoseconds": last - first}, "starting_time": {"nanoseconds_since_epoch": first},
        "message_count": sum(counts.values()), "topics_with_message_count": entries,
        "compression_format": "", "compression_mode": "",
        # Foxy: paths relative to the bag's parent folder; later releases: the file name.
        "relative_file_paths": [f"{path.name}/{f[0]}" if version == 4 else f[0] for f in files],
    }
    if version >= 5:
        info["files"] = [{"path": name, "starting_time": {"nanoseconds_since_epoch": a},
                          "duration": {"nanoseconds": b - a}, "message_count": n} for name, a, b, n in files]
    if version >= 6:
        info["custom_data"] = None
    if version >= 8:
        info["ros_distro"] = distro
    (path / "metadata.yaml").write_text(yaml.safe_dump({"rosbag2_bagfile_information": info}, sort_keys=False))


def write_sqlite_bag(path: Path, version: int, topics: list[Topic], messages: list[tuple[str, int, bytes]],
                     distro: str | None = None) -> Path:
    """A sqlite3 bag as ``ros2 bag record`` of that release writes it; ``messages``: (topic, log ns, CDR)."""
    distro = distro or DISTRO[version]
    schema = sqlite_schema(version, distro)
    path.mkdir(parents=True)
    name = f"{path.name}_0.db3"
    db = sqlite3.connect(path / name)
    db.executescript(SQLITE_TABLES[schema] + """
        CREATE TABLE messages(id INTEGER PRIMARY KEY, topic_id INTEGER NOT NULL, timestamp INTEGER NOT NULL,
                              data BLOB NOT NULL);
        CREATE INDEX timestamp_idx ON messages (timestamp ASC);""")
    if schema >= 3:
        db.execute("INSERT INTO schema VALUES (?, ?)", (schema, distro))
    ids = {}
    for topic_id, topic in enumerate(topics, start=1):
        row = [topic_id, topic.name, topic.type, "cdr", _storage_qos(topic, version)]
        if schema >= 4:
            row.append(topic.type_hash)
            if not db.execute("SELECT 1 FROM message_definitions WHERE topic_type = ?", (topic.type,)).fetchone():
                db.execute("INSERT INTO message_definitions(topic_type, encoding, encoded_message_definition, "
                           "type_description_hash) VALUES (?, ?, ?, ?)",
                           (topic.type, "ros2msg" if topic.definition else "unknown", topic.definition,
                            topic.type_hash))
        db.execute(f"INSERT INTO topics VALUES ({', '.join('?' * len(row))})", row)
        ids[topic.name] = topic_id
    db.executemany("INSERT INTO messages(topic_id, timestamp, data) VALUES (?, ?, ?)",
                   [(ids[topic], log_ns, raw) for topic, log_ns, raw in messages])
    db.commit()
    db.close()
    logs = [m[1] for m in messages]
    write_metadata(path, version, "sqlite3", [(name, min(logs, default=0), max(logs, default=0), len(messages))],
                   topics, _counts(messages), distro)
    return path


def write_mcap_bag(path: Path, version: int, topics: list[Topic], messages: list[tuple[str, int, bytes]],
                   n_files: int = 1, compression=CompressionType.ZSTD, distro: str | None = None) -> Path:
    """A bag as rosbag2_storage_mcap writes it, split into ``n_files`` files of consecutive messages."""
    distro = distro or DISTRO[version]
    path.mkdir(parents=True)
    files = []
    for index, part in enumerate(np.array_split(np.arange(len(messages)), n_files)):
        name = f"{path.name}_{index}.mcap"
        with open(path / name, "wb") as stream:
            writer = McapWriter(stream, chunk_size=2048, compression=compression)
            writer.start(profile="ros2", library="libmcap 1.4.0")  # what rosbag2_storage_mcap passes
            channels = {}
            for topic in topics:
                schema = writer.register_schema(topic.type, "ros2msg" if topic.definition else "unknown",
                                                topic.definition.encode())
                metadata = {"offered_qos_profiles": _storage_qos(topic, version)}
                if version >= 7:
                    metadata["topic_type_hash"] = topic.type_hash
                channels[topic.name] = writer.register_channel(topic.name, "cdr", schema, metadata)
            for k in part:
                topic, log_ns, raw = messages[k]
                writer.add_message(channels[topic], log_time=log_ns, data=raw, publish_time=log_ns, sequence=0)
            if version >= 8:
                writer.add_metadata("rosbag2", {"ros_distro": distro})
            writer.finish()
        logs = [messages[k][1] for k in part]
        files.append((name, min(logs, default=0), max(logs, default=0), len(part)))
    write_metadata(path, version, "mcap", files, topics, _counts(messages), distro)
    return path


def _counts(messages) -> dict[str, int]:
    counts: dict[str, int] = {}
    for topic, _, _ in messages:
        counts[topic] = counts.get(topic, 0) + 1
    return counts
