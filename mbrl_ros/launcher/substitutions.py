"""Substitutions: the `$(name arg ...)` strings of the ROS 2 launch front ends.

Parsing follows the grammar of upstream `launch/frontend/grammar.lark`:
- outside a substitution, text runs up to the next `$(`; a backslash escapes the
  next character (`\\$(` is literal text) and is removed;
- `$(NAME)` or `$(NAME ARG ARG ...)`, arguments separated by exactly one space;
- an argument is unquoted (no space, quote or parenthesis, may contain nested
  substitutions) or quoted with '...' or "..." (spaces allowed, nested
  substitutions allowed; inside them, the nested arguments stay unquoted).

Only the substitutions this launcher implements are accepted, so a launch file
that runs here also parses under `ros2 launch`.
"""

from __future__ import annotations

import importlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Protocol, Union

from .errors import LaunchFileError

# name -> (fewest, most) arguments, as upstream's parse() methods check them.
SUPPORTED: dict[str, tuple[int, int]] = {
    "var": (1, 2),             # launch configuration [default]
    "env": (1, 2),             # environment variable [default]
    "find-pkg-share": (1, 1),  # package share directory
    "eval": (1, 2),            # python expression [comma-separated modules]
    "equals": (2, 2),
    "not-equals": (2, 2),
    "and": (2, 2),             # both booleans true
    "dirname": (0, 0),         # directory of the launch file being read
}

# Valid upstream, but not implemented here: named in the error so the user knows why.
UPSTREAM_ONLY = frozenset({
    "anon", "command", "exec-in-pkg", "file-content", "filename", "find-exec",
    "find-pkg-prefix", "for-var", "if", "index", "is-empty", "launch-log-dir", "not",
    "or", "any", "all", "path-join", "string-join", "strip", "not-empty", "optenv",
})

_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class Substitution:
    name: str
    args: tuple[tuple["Part", ...], ...]

    def __str__(self) -> str:
        rendered = ["".join(str(p) for p in arg) for arg in self.args]
        return "$(" + " ".join([self.name, *rendered]) + ")"


Part = Union[str, Substitution]


@dataclass(frozen=True)
class Origin:
    """Where a string came from, for error messages."""

    file: str
    line: int | None = None
    tag: str | None = None
    attribute: str | None = None


@dataclass(frozen=True)
class Template:
    """A parsed attribute value: literal text and substitutions, in order."""

    parts: tuple[Part, ...]
    text: str
    origin: Origin | None = None

    @property
    def is_literal(self) -> bool:
        return all(isinstance(p, str) for p in self.parts)

    @property
    def literal(self) -> str:
        return "".join(p for p in self.parts if isinstance(p, str))


class SubstitutionSyntaxError(ValueError):
    def __init__(self, message: str, text: str, column: int) -> None:
        super().__init__(f"{message} (at column {column + 1} of {text!r})")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, message: str) -> None:
        raise SubstitutionSyntaxError(message, self.text, self.pos)

    def at(self, s: str) -> bool:
        return self.text.startswith(s, self.pos)

    def template(self) -> tuple[Part, ...]:
        return self.parts_until("")

    def parts_until(self, stop: str, quote: str | None = None, in_argument: bool = False) -> tuple[Part, ...]:
        """Text and substitutions up to the end or a character in ``stop`` (left unread)."""
        parts: list[Part] = []
        text: list[str] = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == "\\" and self.pos + 1 < len(self.text):
                text.append(self.text[self.pos + 1])
                self.pos += 2
            elif self.at("$("):
                _flush(text, parts)
                parts.append(self.substitution(quote))
            elif ch in stop:
                break
            elif in_argument and ch == "(":
                self.fail("unescaped '(' in a substitution argument: quote the argument or write '\\('")
            elif in_argument and ch in "'\"":
                self.fail("a quote may only open an argument: quote the whole argument")
            else:
                text.append(ch)
                self.pos += 1
        _flush(text, parts)
        return tuple(parts)

    def substitution(self, quote: str | None) -> Substitution:
        start = self.pos
        self.pos += 2
        match = _IDENTIFIER.match(self.text, self.pos)
        if not match:
            self.fail("expected a substitution name after '$('")
        name = match.group()
        self.pos = match.end()
        args: list[tuple[Part, ...]] = []
        if self.at(")"):
            self.pos += 1
            return Substitution(name, ())
        if not self.at(" "):
            if self.pos >= len(self.text):
                self.pos = start
                self.fail(f"unterminated '$({name}': missing ')'")
            self.fail(f"expected ' ' or ')' after '$({name}'")
        self.pos += 1
        while True:
            args.append(self.argument(quote))
            if self.at(")"):
                self.pos += 1
                return Substitution(name, tuple(args))
            if self.at(" "):
                self.pos += 1
                continue
            if self.pos >= len(self.text):
                self.pos = start
                self.fail(f"unterminated '$({name} ...': missing ')'")
            self.fail(f"unexpected {self.text[self.pos]!r} in the arguments of '$({name} ...)'")

    def argument(self, quote: str | None) -> tuple[Part, ...]:
        if quote is None and self.pos < len(self.text) and self.text[self.pos] in "'\"":
            return self.quoted(self.text[self.pos])
        parts = self.parts_until(" )" + (quote or ""), quote, in_argument=True)
        if not parts:
            self.fail("empty substitution argument (arguments are separated by exactly one space)")
        return parts

    def quoted(self, quote: str) -> tuple[Part, ...]:
        opening = self.pos
        self.pos += 1
        parts = self.parts_until(quote, quote)
        if self.pos >= len(self.text):
            self.pos = opening
            self.fail(f"unterminated {quote} quote")
        self.pos += 1  # the closing quote
        if self.pos < len(self.text) and self.text[self.pos] not in " )":
            self.fail(f"text after a closing {quote} quote: quote the whole argument")
        return parts


def _flush(text: list[str], parts: list[Part]) -> None:
    if text:
        parts.append("".join(text))
        text.clear()


def _check_supported(parts: tuple[Part, ...], text: str) -> None:
    for part in parts:
        if isinstance(part, str):
            continue
        if part.name not in SUPPORTED:
            supported = ", ".join(f"$({n})" for n in SUPPORTED)
            why = ("valid upstream but not supported by mbrl-ros launch"
                   if part.name in UPSTREAM_ONLY else "unknown substitution")
            raise SubstitutionSyntaxError(f"$({part.name} ...): {why}; supported: {supported}",
                                          text, text.find("$(" + part.name))
        fewest, most = SUPPORTED[part.name]
        if not fewest <= len(part.args) <= most:
            wanted = str(fewest) if fewest == most else f"{fewest} or {most}"
            raise SubstitutionSyntaxError(
                f"$({part.name}) takes {wanted} argument(s), got {len(part.args)}",
                text, text.find("$(" + part.name))
        for arg in part.args:
            _check_supported(arg, text)


def parse_template(text: str, origin: Origin | None = None) -> Template:
    """Parse a launch-file string into a Template; raises LaunchFileError on bad syntax."""
    try:
        parts = _Parser(text).template() if text else ("",)
        _check_supported(parts, text)
    except SubstitutionSyntaxError as err:
        raise _error(str(err), origin) from None
    return Template(parts, text, origin)


def unescape(text: str) -> str:
    """Plain-text attributes (arg name, description): upstream only strips escapes."""
    return re.sub(r"\\(.)", r"\1", text)


# --- evaluation --------------------------------------------------------------


class SubstitutionContext(Protocol):
    configurations: Mapping[str, str]
    environment: Mapping[str, str]

    @property
    def current_file(self) -> Path: ...

    def find_package_share(self, package: str) -> str: ...


class SubstitutionFailure(Exception):
    pass


def perform(template: Template, context: SubstitutionContext) -> str:
    """Evaluate a template to a string; errors name the file, line and tag."""
    try:
        return _perform_parts(template.parts, context)
    except SubstitutionFailure as err:
        raise _error(f"{template.text!r}: {err}", template.origin) from None


def perform_parts(parts: tuple[Part, ...], context: SubstitutionContext,
                  origin: Origin | None = None) -> str:
    try:
        return _perform_parts(parts, context)
    except SubstitutionFailure as err:
        raise _error(str(err), origin) from None


def _perform_parts(parts: tuple[Part, ...], context: SubstitutionContext) -> str:
    return "".join(p if isinstance(p, str) else _perform_one(p, context) for p in parts)


def _perform_one(sub: Substitution, context: SubstitutionContext) -> str:
    args = [_perform_parts(a, context) for a in sub.args]
    if sub.name == "var":
        if args[0] in context.configurations:
            return context.configurations[args[0]]
        if len(args) == 2:
            return args[1]
        known = ", ".join(sorted(context.configurations)) or "none"
        raise SubstitutionFailure(f"launch configuration '{args[0]}' is not set (set: {known})")
    if sub.name == "env":
        if args[0] in context.environment:
            return context.environment[args[0]]
        if len(args) == 2:
            return args[1]
        raise SubstitutionFailure(
            f"environment variable '{args[0]}' is not set (give a default: $(env {args[0]} VALUE))")
    if sub.name == "find-pkg-share":
        return context.find_package_share(args[0])
    if sub.name == "dirname":
        return str(context.current_file.parent)
    if sub.name == "eval":
        return _python_expression(args[0], args[1] if len(args) == 2 else "math")
    if sub.name in ("equals", "not-equals"):
        same = values_equal(args[0], args[1])
        return str(same if sub.name == "equals" else not same).lower()
    if sub.name == "and":
        return str(_boolean(args[0], "and") and _boolean(args[1], "and")).lower()
    raise SubstitutionFailure(f"$({sub.name}) is not implemented")  # parse rejects these


def _python_expression(expression: str, modules: str) -> str:
    # As upstream: math's names are usable bare (`pi`), every module by its name.
    names: dict[str, object] = {}
    for module_name in (m.strip() for m in modules.split(",") if m.strip()):
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise SubstitutionFailure(f"$(eval): cannot import module '{module_name}': {err}")
        if module is math:
            names.update(vars(math))
        names[module_name] = module
    try:
        return str(eval(expression, {}, names))  # noqa: S307 - the launch file is trusted code
    except Exception as err:  # any error of the user's expression
        raise SubstitutionFailure(f"$(eval {expression!r}) failed: {type(err).__name__}: {err}")


def values_equal(left: str, right: str) -> bool:
    """Upstream's equals: booleans compare as booleans, numbers with float closeness."""
    bools = ("true", "false", "1", "0")
    if left.lower() in bools and right.lower() in bools:
        return (left.lower() in ("true", "1")) == (right.lower() in ("true", "1"))
    try:
        return math.isclose(float(left), float(right))
    except ValueError:
        return left == right


# Upstream's typed booleans (launch.utilities.type_utils): 0/1 and YAML's boolean words.
_BOOLEANS = {**dict.fromkeys(("1", "true", "yes", "on"), True), **dict.fromkeys(("0", "false", "no", "off"), False)}


def _boolean(value: str, name: str) -> bool:
    if value.lower() not in _BOOLEANS:
        raise SubstitutionFailure(f"$({name}) takes booleans (true, false, 1, 0), got '{value}'")
    return _BOOLEANS[value.lower()]


def _error(message: str, origin: Origin | None) -> LaunchFileError:
    if origin is None:
        return LaunchFileError(message)
    if origin.attribute:
        message = f"attribute '{origin.attribute}': {message}"
    return LaunchFileError(message, file=origin.file, line=origin.line, tag=origin.tag)
