"""Read a YAML launch file keeping line numbers, so errors can point at a line."""

from __future__ import annotations

from pathlib import Path

import yaml

from .errors import LaunchFileError


class LineDict(dict):
    """A YAML mapping that remembers its own line and the line of each key."""

    line: int | None = None
    key_lines: dict

    def line_of(self, key) -> int | None:
        return self.key_lines.get(key, self.line)


class _LineLoader(yaml.SafeLoader):
    """The safe loader (as upstream's launch_yaml uses), recording lines of mappings."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode):
    data = LineDict()
    data.line = node.start_mark.line + 1
    data.key_lines = {}
    yield data
    loader.flatten_mapping(node)
    seen: set = set()
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode):
            key = loader.construct_object(key_node)
            if key in seen:
                # PyYAML would silently keep the last one; a duplicate is always a mistake.
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
            data.key_lines[key] = key_node.start_mark.line + 1
    data.update(loader.construct_mapping(node))


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: Path):
    """Parse `path`; YAML syntax errors become LaunchFileError with file and line."""
    try:
        text = path.read_text()
    except OSError as err:
        raise LaunchFileError(f"cannot read launch file: {err.strerror}", file=str(path)) from None
    try:
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a safe loader subclass
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else None
        raise LaunchFileError(f"invalid YAML: {err.problem or err}", file=str(path),
                              line=line) from None
    except yaml.YAMLError as err:
        raise LaunchFileError(f"invalid YAML: {err}", file=str(path)) from None
