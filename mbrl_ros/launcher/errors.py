"""Errors of the launcher. Every message names the file, line and tag at fault."""

from __future__ import annotations


class LaunchError(Exception):
    """Something that stops a launch before (or while) any process starts."""


class LaunchFileError(LaunchError):
    """A launch file is invalid, or one of its values cannot be resolved."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 tag: str | None = None) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.tag = tag
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file or "<launch file>"
        if self.line is not None:
            where += f":{self.line}"
        if self.tag:
            where += f": in '{self.tag}'"
        return f"{where}: {self.message}"


class LaunchArgumentError(LaunchError):
    """A `name:=value` argument is unknown, malformed, or not one of its choices."""
