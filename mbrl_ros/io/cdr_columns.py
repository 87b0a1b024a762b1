"""Decoding many CDR messages of one type at once into numpy columns.

rosbags' ``deserialize_cdr`` builds a Python object per message (~10 us each),
which caps reading a bag at ~15,000 messages per second. The messages of one
topic almost always share one *layout*: the same strings and the same sequence
lengths, so every number sits at the same byte offset in every message. Here
that layout is found once by walking one message (the template) with the
type's field definitions from the rosbags typestore, the other messages are
checked to have the same layout bytes (CDR header, string and sequence lengths,
string contents), and each wanted field of all of them is read with one numpy
view. A message with another layout gets a walk of its own, so the result is
always what rosbags' deserializer gives (tests/io/test_bag_reading_cdr.py checks
this on several types).

CDR as ROS 2 writes it (XCDR1, "plain CDR"): a 4-byte encapsulation header
(byte 1: 1 little endian, 0 big endian), then the fields in order, each
primitive aligned to its size (at most 8) counted from after the header;
strings and sequences are a uint32 count then the elements.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from rosbags.interfaces import Nodetype
from rosbags.typesys.store import Typestore

# ROS 2 primitive -> numpy dtype (without byte order).
PRIMITIVES = {
    "bool": "u1", "byte": "u1", "char": "u1", "octet": "u1", "uint8": "u1", "int8": "i1",
    "uint16": "u2", "int16": "i2", "uint32": "u4", "int32": "i4", "float32": "f4",
    "uint64": "u8", "int64": "i8", "float64": "f8",
}
HEADER = 4  # CDR encapsulation header
# Message fields whose strings name the entries of a sibling array (JointState.name,
# StateVector.names, JointTrajectory.joint_names).
NAME_ARRAYS = ("names", "name", "joint_names")


class LayoutError(ValueError):
    """A message cannot be walked or a field cannot be found; says which field and why."""


@dataclass
class Layout:
    """Where each field of one message (the template) lies.

    ``numbers``: concrete path (``pose.pose.position.x``, ``values[3]``,
    ``points[0].positions[1]``) -> (byte offset, numpy dtype without byte
    order). ``strings``: path -> value. ``sequences``: path -> length.
    ``fixed``: byte indices that every message of this layout must share.
    """

    size: int
    little_endian: bool
    numbers: dict[str, tuple[int, str]] = field(default_factory=dict)
    strings: dict[str, str] = field(default_factory=dict)
    sequences: dict[str, int] = field(default_factory=dict)
    fixed: list[int] = field(default_factory=list)

    def resolve(self, path: str) -> str:
        """A concrete numeric path for ``path``, where ``array[name]`` picks an entry by name.

        The name is looked up in a sibling names array (``names``, ``name`` or
        ``joint_names``) of the array's message or of a message around it; so
        ``values[x]`` of a StateVector and ``points[0].positions[FFJ1]`` of a
        JointTrajectory both work.
        """
        concrete, parent = [], ""
        for part in path.split("."):
            if "[" in part and part.endswith("]"):
                array, key = part[:-1].split("[", 1)
                if not key.lstrip("-").isdigit():
                    index, names = self._index_of(parent, array, key, path)
                    entries = self.sequences.get(parent + array)
                    if entries is not None and entries != names:
                        # The names label the array's entries one to one; any other count
                        # means the message is malformed, whichever entry is asked for.
                        raise LayoutError(f"field '{path}': '{array}' has {entries} entries for {names} names")
                    key = str(index)
                part = f"{array}[{key}]"
            concrete.append(part)
            parent = ".".join(concrete) + "."
        resolved = ".".join(concrete)
        if resolved not in self.numbers:
            raise LayoutError(f"field '{path}' is not a number in the message (numbers: {self.describe()})")
        return resolved

    def _index_of(self, parent: str, array: str, key: str, path: str) -> tuple[int, int]:
        """(index of ``key`` in the names array beside ``array``, how many names there are)."""
        # The enclosing messages, innermost first: "points[0]." -> "points[0].", "".
        parts = parent.rstrip(".").split(".") if parent else []
        scopes = [".".join(parts[:k]) + "." if k else "" for k in range(len(parts), -1, -1)]
        for scope in scopes:
            for names_field in NAME_ARRAYS:
                count = self.sequences.get(scope + names_field)
                if count is None:
                    continue
                names = [self.strings[f"{scope}{names_field}[{k}]"] for k in range(count)]
                if names.count(key) == 1:
                    return names.index(key), count
                if key in names:
                    raise LayoutError(f"field '{path}': '{key}' appears {names.count(key)} times in {scope}{names_field}")
                raise LayoutError(f"field '{path}': no '{key}' in {scope}{names_field} {names}")
        raise LayoutError(f"field '{path}': '{array}[{key}]' picks by name but there is no names array beside it")

    def names_of(self, array_path: str) -> list[str]:
        """The names that label ``array_path`` (``values`` -> the message's ``names``)."""
        scope = array_path.rpartition(".")[0]
        scope = scope + "." if scope else ""
        for names_field in NAME_ARRAYS:
            count = self.sequences.get(scope + names_field)
            if count is not None:
                return [self.strings[f"{scope}{names_field}[{k}]"] for k in range(count)]
        raise LayoutError(f"'{array_path}' has no names array beside it")

    def describe(self, limit: int = 12) -> str:
        """The numeric fields, arrays shortened to ``name[]``, for error messages."""
        short = list(dict.fromkeys(_strip_indices(p) for p in self.numbers))
        more = f", ... {len(short) - limit} more" if len(short) > limit else ""
        return ", ".join(short[:limit]) + more


def _strip_indices(path: str) -> str:
    out, depth = [], 0
    for ch in path:
        if ch == "[":
            depth += 1
            out.append("[]")
        elif ch == "]":
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)


class _Walker:
    """Walks one serialised message and records its Layout."""

    def __init__(self, raw: bytes | memoryview, store: Typestore) -> None:
        self.raw = bytes(raw)
        self.store = store
        if len(self.raw) < HEADER or self.raw[1] not in (0, 1):
            raise LayoutError(f"not a CDR message (no CDR encapsulation header in its first {HEADER} bytes)")
        self.layout = Layout(size=len(self.raw), little_endian=self.raw[1] == 1)
        self.layout.fixed.extend([0, 1])
        self.pos = HEADER
        self.order = "<" if self.layout.little_endian else ">"

    def align(self, size: int) -> None:
        self.pos = HEADER + -(-(self.pos - HEADER) // size) * size

    def take(self, size: int, path: str) -> int:
        start = self.pos
        self.pos += size
        if self.pos > len(self.raw):
            raise LayoutError(f"field '{path}': the message ends at byte {len(self.raw)}, the field needs bytes "
                              f"{start}-{self.pos - 1}")
        return start

    def count(self, path: str) -> int:
        self.align(4)
        start = self.take(4, path)
        self.layout.fixed.extend(range(start, start + 4))
        value = int(np.frombuffer(self.raw, dtype=self.order + "u4", count=1, offset=start)[0])
        if value > len(self.raw):
            raise LayoutError(f"'{path}': length {value} exceeds the message size")
        return value

    def message(self, typename: str, prefix: str) -> None:
        try:
            fields = self.store.fielddefs[typename][1]
        except KeyError:
            raise LayoutError(f"type {typename} is not in the typestore") from None
        for name, (kind, detail) in fields:
            path = prefix + name
            if kind == Nodetype.NAME:
                self.message(detail, path + ".")
            elif kind == Nodetype.BASE:
                self.base(detail[0], path)
            elif kind == Nodetype.ARRAY:
                element, length = detail
                self.elements(element, path, length)
            elif kind == Nodetype.SEQUENCE:
                element, _bound = detail
                length = self.count(path)
                self.layout.sequences[path] = length
                self.elements(element, path, length)
            else:
                raise LayoutError(f"'{path}': unsupported field kind {kind!r}")

    def elements(self, element: tuple, path: str, length: int) -> None:
        kind, detail = element
        for k in range(length):
            if kind == Nodetype.NAME:
                self.message(detail, f"{path}[{k}].")
            else:
                self.base(detail[0], f"{path}[{k}]")

    def base(self, primitive: str, path: str) -> None:
        if primitive == "string":
            length = self.count(path)
            start = self.take(length, path)
            self.layout.fixed.extend(range(start, start + length))
            self.layout.strings[path] = self.raw[start:start + length].rstrip(b"\0").decode("utf-8", "replace")
            return
        dtype = PRIMITIVES.get(primitive)
        if dtype is None:
            raise LayoutError(f"'{path}': primitive type {primitive} is not supported by the column reader")
        size = int(dtype[1])
        self.align(size)
        self.layout.numbers[path] = (self.take(size, path), dtype)


def walk(raw: bytes | memoryview, typename: str, store: Typestore) -> Layout:
    """The Layout of one serialised ``typename`` message."""
    walker = _Walker(raw, store)
    walker.message(typename, "")
    return walker.layout


class ColumnReader:
    """Reads chosen numeric fields of many messages of one type as numpy columns.

        reader = ColumnReader(store, "nav_msgs/msg/Odometry")
        columns = reader.read(buffer, offsets, lengths, ["header.stamp.sec", "pose.pose.position.x"])

    ``fields`` are paths as ``Layout.resolve`` takes them; a path that picks by
    name is resolved per layout, so messages that order their names
    differently are read right.
    """

    def __init__(self, store: Typestore, typename: str) -> None:
        self.store = store
        self.typename = typename
        self.layouts_seen = 0

    def read(self, buffer: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, fields: list[str],
             bad: dict[int, str] | None = None) -> dict[str, np.ndarray]:
        """Columns (one value per message, in input order) keyed by the requested path.

        ``buffer``: uint8 bytes holding the messages; ``offsets``/``lengths``: where
        each one is. Numbers keep their type (stamps stay exact integers).
        A message that cannot be walked, or lacks a field, raises LayoutError
        naming the field (with the message's index); given ``bad``, it is
        recorded there instead (index -> reason, the reason without the index)
        and its columns hold zeros, so one malformed message costs only itself.
        """
        n = len(offsets)
        out: dict[str, np.ndarray] = {}
        for length in np.unique(lengths):
            same_length = np.flatnonzero(lengths == length)
            rows = buffer[offsets[same_length, None] + np.arange(int(length))]
            left = np.arange(len(same_length))
            while len(left):
                template = rows[left[0]]
                try:
                    layout = walk(template.tobytes(), self.typename, self.store)
                except LayoutError as error:
                    if bad is None:
                        raise LayoutError(f"message {int(same_length[left[0]])}: {error}") from None
                    bad[int(same_length[left[0]])] = str(error)
                    left = left[1:]  # nothing is known of its layout: it alone is dropped
                    continue
                self.layouts_seen += 1
                fixed = np.asarray(layout.fixed, dtype=np.int64)
                same = np.all(rows[np.ix_(left, fixed)] == template[fixed], axis=1)
                members = left[same]
                left = left[~same]
                try:
                    concrete = {path: layout.resolve(path) for path in fields}
                except LayoutError as error:
                    if bad is None:
                        raise LayoutError(f"message {int(same_length[members[0]])}: {error}") from None
                    bad.update((int(i), str(error)) for i in same_length[members])  # every one of this layout
                    continue
                order = "<" if layout.little_endian else ">"
                for path, resolved in concrete.items():
                    start, dtype = layout.numbers[resolved]
                    size = int(dtype[1])
                    raw = np.ascontiguousarray(rows[members, start:start + size])
                    values = raw.view(order + dtype).reshape(-1)
                    if path not in out:
                        out[path] = np.zeros(n, dtype=values.dtype.newbyteorder("="))
                    out[path][same_length[members]] = values
        return out
