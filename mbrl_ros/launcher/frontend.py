"""The YAML front end: a launch file -> a tree of checked entities.

Accepts exactly the subset of upstream's YAML front end (`launch_yaml`, the
`parse()` methods of launch's and launch_ros's actions) that this launcher
runs. Attribute types are checked as upstream checks them (its YAML entity does
no type coercion: `default: 5` is an error there, `default: '5'` is not), so a
file accepted here is also accepted by `ros2 launch`. Everything else is an
error naming the file, line and tag, raised before any process starts.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from .errors import LaunchFileError
from .substitutions import Origin, Part, Template, parse_template, unescape
from .yaml_source import LineDict, load_yaml

# ---- the entities ------------------------------------------------------------


@dataclass(kw_only=True)
class Condition:
    kind: str  # "if" or "unless"
    expression: Template


@dataclass(kw_only=True)
class Entity:
    tag: str
    file: str
    line: int | None
    condition: Condition | None = None


@dataclass(kw_only=True)
class Arg(Entity):
    name: str
    default: Template | None
    description: str | None
    choices: list[str] | None


@dataclass(kw_only=True)
class Let(Entity):
    name: Template
    value: Template


@dataclass(kw_only=True)
class Include(Entity):
    path: Template
    args: list[tuple[Template, Template]]


@dataclass(kw_only=True)
class Group(Entity):
    scoped: bool
    children: list[Entity]


@dataclass(kw_only=True)
class PushRosNamespace(Entity):
    namespace: Template


@dataclass(kw_only=True)
class SetEnv(Entity):
    name: Template
    value: Template


ParamScalar = Union[Template, bool, int, float]


@dataclass(kw_only=True)
class ParamFile:
    path: Template


@dataclass(kw_only=True)
class InlineParam:
    name: Template
    value: ParamScalar | list[ParamScalar] | None = None
    children: list["InlineParam"] | None = None
    origin: Origin


@dataclass(kw_only=True)
class Node(Entity):
    pkg: Template | None
    exec: Template
    name: Template | None
    namespace: Template | None
    params: list[ParamFile | InlineParam] = field(default_factory=list)
    remaps: list[tuple[Template, Template]] = field(default_factory=list)
    output: Template | None = None
    respawn: Template | None = None
    respawn_delay: float | None = None
    respawn_max_retries: int | None = None  # upstream's: respawns made at most (over the launch), -1 no limit
    on_exit: str | None = None
    args: list[tuple[Part, ...]] = field(default_factory=list)
    ros_args: list[tuple[Part, ...]] | None = None


# ---- the schema ----------------------------------------------------------------

_CONDITIONS = ("if", "unless")

# tag -> attributes it accepts (besides if/unless).
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "arg": ("name", "default", "description", "choice"),
    "let": ("name", "value"),
    "include": ("file", "arg"),
    "group": ("scoped", "children"),
    "push-ros-namespace": ("namespace",),
    "set_env": ("name", "value"),
    "node": ("pkg", "exec", "name", "namespace", "param", "remap", "output", "respawn",
             "respawn_delay", "respawn_max_retries", "on_exit", "args", "ros_args"),
}
# Upstream spells this tag both ways.
ATTRIBUTES["push_ros_namespace"] = ATTRIBUTES["push-ros-namespace"]

# Tags upstream has that this launcher does not run.
_UPSTREAM_ONLY_TAGS = frozenset({
    "executable", "timer", "log", "set_parameter", "set_parameters_from_file", "set_remap",
    "for", "for_each", "lifecycle_node", "composable_node", "node_container",
    "load_composable_node", "unset_env", "append_env", "set_use_sim_time", "set_ros_log_dir",
    "shutdown", "reset", "set_launch_configuration", "declare_launch_argument",
})

# Common misspellings -> what upstream's YAML front end wants instead.
_HINTS = {
    ("arg", "choices"): "upstream spells it 'choice', a list of {value: ...}",
    ("arg", "default_value"): "use 'default'",
    ("node", "package"): "use 'pkg'",
    ("node", "executable"): "use 'exec'",
    ("node", "ns"): "use 'namespace'",
    ("node", "parameters"): "use 'param', a list of {from: FILE} or {name: N, value: V}",
    ("node", "params"): "use 'param', a list of {from: FILE} or {name: N, value: V}",
    ("node", "remappings"): "use 'remap', a list of {from: A, to: B}",
    ("node", "arguments"): "use 'args' (one string)",
    ("node", "env"): "use a 'set_env' tag before the node (in a scoped group)",
    ("group", "namespace"): "put '- push-ros-namespace: {namespace: NS}' first in the group's children",
    ("group", "ns"): "put '- push-ros-namespace: {namespace: NS}' first in the group's children",
}


class _Body:
    """The attributes of one tag; reads them with upstream's type rules."""

    def __init__(self, tag: str, body: LineDict, file: str, line: int | None,
                 allowed: tuple[str, ...]) -> None:
        self.tag, self.body, self.file, self.line = tag, body, file, line
        for key in body:
            if key not in allowed:
                hint = _HINTS.get((tag, key))
                valid = ", ".join(allowed)
                message = f"unknown attribute '{key}'" + (f" ({hint})" if hint else "")
                raise self.error(f"{message}; valid attributes: {valid}", key)

    def error(self, message: str, key: str | None = None) -> LaunchFileError:
        line = self.body.line_of(key) if key is not None and isinstance(self.body, LineDict) else self.line
        return LaunchFileError(message, file=self.file, line=line, tag=self.tag)

    def origin(self, key: str) -> Origin:
        return Origin(self.file, self.body.line_of(key), self.tag, key)

    def _get(self, key: str, required: bool):
        if key not in self.body:
            if required:
                raise self.error(f"missing required attribute '{key}'")
            return None
        return self.body[key]

    def string(self, key: str, required: bool = False) -> str | None:
        value = self._get(key, required)
        if value is not None and not isinstance(value, str):
            raise self.error(
                f"attribute '{key}' must be a string, got {type(value).__name__} {value!r} "
                f"(quote it, e.g. {key}: '{_yaml_text(value)}'; the upstream YAML front end "
                "does not convert types)", key)
        return value

    def template(self, key: str, required: bool = False) -> Template | None:
        value = self.string(key, required)
        return None if value is None else parse_template(value, self.origin(key))

    def boolean(self, key: str) -> bool | None:
        value = self._get(key, False)
        if value is not None and not isinstance(value, bool):
            raise self.error(f"attribute '{key}' must be true or false (unquoted), got {value!r}", key)
        return value

    def non_negative_float(self, key: str) -> float | None:
        value = self._get(key, False)
        if value is None:
            return None
        if not isinstance(value, float):
            raise self.error(
                f"attribute '{key}' must be a float such as 2.0, got {type(value).__name__} "
                f"{value!r} (the upstream YAML front end rejects integers here)", key)
        if value < 0:
            raise self.error(f"attribute '{key}' must not be negative, got {value}", key)
        return value

    def respawn_max_retries(self) -> int | None:
        key = "respawn_max_retries"
        value = self._get(key, False)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < -1:
            # Upstream Jazzy passes a quoted value on as a string and fails at the first respawn
            # (TypeError comparing it with the count; ros2/launch#968): only a plain integer works there.
            raise self.error(f"attribute '{key}' must be an unquoted integer >= -1 such as 10 (-1: no limit), "
                             f"got {type(value).__name__} {value!r}", key)
        return value

    def mappings(self, key: str) -> list[LineDict] | None:
        value = self._get(key, False)
        if value is None:
            return None
        if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
            raise self.error(f"attribute '{key}' must be a non-empty list of mappings", key)
        return value

    def condition(self) -> Condition | None:
        present = [k for k in _CONDITIONS if k in self.body]
        if len(present) == 2:
            raise self.error("'if' and 'unless' are mutually exclusive", "unless")
        if not present:
            return None
        return Condition(kind=present[0], expression=self.template(present[0]))

    def common(self) -> dict:
        return {"tag": self.tag, "file": self.file, "line": self.line, "condition": self.condition()}


def _yaml_text(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


# ---- per-tag parsers -----------------------------------------------------------


def _parse_arg(b: _Body) -> Arg:
    name = b.string("name", required=True)
    description = b.string("description")
    choices = None
    for choice in b.mappings("choice") or []:
        entry = _Body("choice", choice, b.file, choice.line, ("value",))
        choices = (choices or []) + [unescape(entry.string("value", required=True))]
    default = b.template("default")
    if choices is not None and default is not None and default.is_literal \
            and default.literal not in choices:
        raise b.error(f"default '{default.literal}' is not one of the choices {choices}", "default")
    return Arg(**b.common(), name=unescape(name), default=default,
               description=None if description is None else unescape(description),
               choices=choices)


def _parse_let(b: _Body) -> Let:
    return Let(**b.common(), name=b.template("name", True), value=b.template("value", True))


def _parse_set_env(b: _Body) -> SetEnv:
    return SetEnv(**b.common(), name=b.template("name", True), value=b.template("value", True))


def _parse_push_ros_namespace(b: _Body) -> PushRosNamespace:
    return PushRosNamespace(**b.common(), namespace=b.template("namespace", True))


def _parse_include(b: _Body) -> Include:
    args = []
    for arg in b.mappings("arg") or []:
        entry = _Body("include arg", arg, b.file, arg.line, ("name", "value"))
        args.append((entry.template("name", True), entry.template("value", True)))
    return Include(**b.common(), path=b.template("file", True), args=args)


def _parse_group(b: _Body) -> Group:
    if "children" not in b.body:
        raise b.error("a group written as a mapping needs a 'children' list")
    scoped = b.boolean("scoped")
    children = parse_entities(b.body["children"], b.file, "group children")
    return Group(**b.common(), scoped=True if scoped is None else scoped, children=children)


def _parse_node(b: _Body) -> Node:
    respawn = b.template("respawn")
    params = [_parse_param(p, b.file, nested=False) for p in b.mappings("param") or []]
    remaps = []
    for remap in b.mappings("remap") or []:
        entry = _Body("remap", remap, b.file, remap.line, ("from", "to"))
        remaps.append((entry.template("from", True), entry.template("to", True)))
    args = b.template("args")
    ros_args = b.template("ros_args")
    on_exit = b.string("on_exit")
    if on_exit not in (None, "shutdown"):
        raise b.error(f"attribute 'on_exit' must be 'shutdown' (end the launch when the node exits), "
                      f"got {on_exit!r}", "on_exit")
    return Node(
        **b.common(), pkg=b.template("pkg"), exec=b.template("exec", True),
        name=b.template("name"), namespace=b.template("namespace"), params=params,
        remaps=remaps, output=b.template("output"), respawn=respawn,
        respawn_delay=b.non_negative_float("respawn_delay"), respawn_max_retries=b.respawn_max_retries(),
        on_exit=on_exit,
        args=[] if args is None else split_command_line(args, b),
        ros_args=None if ros_args is None else split_command_line(ros_args, b))


def _parse_param(d: LineDict, file: str, nested: bool) -> ParamFile | InlineParam:
    allowed = ("name", "value", "param") if nested else ("from", "name", "value", "param")
    b = _Body("param", d, file, d.line, allowed)
    if "from" in d:
        if len(d) > 1:
            raise b.error("'from' is exclusive: a param is either {from: FILE} or {name: ..., value: ...}")
        return ParamFile(path=b.template("from", True))
    if "name" not in d:
        raise b.error("a param needs 'name' with 'value' (or nested 'param'), or 'from: FILE'")
    name = b.template("name", True)
    if ("value" in d) == ("param" in d):
        raise b.error(f"param '{name.text}' needs exactly one of 'value' or nested 'param'")
    if "param" in d:
        nested_params = b.mappings("param")
        return InlineParam(name=name, children=[_parse_param(p, file, True) for p in nested_params],
                           origin=b.origin("name"))
    return InlineParam(name=name, value=_parse_param_value(d["value"], b),
                       origin=b.origin("value"))


def _parse_param_value(raw, b: _Body):
    def scalar(item):
        if isinstance(item, str):
            return parse_template(item, b.origin("value"))
        if isinstance(item, (bool, int, float)):
            return item
        raise b.error(f"param value must be a scalar or a list of scalars, got {item!r}"
                      " (for nested parameters use a nested 'param' list)", "value")

    if isinstance(raw, list):
        if not raw:
            raise b.error("param value must not be an empty list (ROS cannot infer its type)", "value")
        return [scalar(item) for item in raw]
    return scalar(raw)


def split_command_line(template: Template, b: _Body) -> list[tuple[Part, ...]]:
    """Split `args`/`ros_args` into arguments as upstream's `_parse_cmdline` does:
    literal text is split shell-like; a substitution sticks to the text around it
    unless whitespace separates them."""
    result: list[tuple[Part, ...]] = []
    current: list[Part] = []

    def close() -> None:
        if current:
            result.append(tuple(current))
            current.clear()

    for part in template.parts:
        if not isinstance(part, str):
            current.append(part)
            continue
        try:
            tokens = shlex.split(part)
        except ValueError as err:
            raise b.error(f"{template.text!r}: {err}", template.origin.attribute) from None
        if not tokens:
            close()
            continue
        if part[0].isspace():
            close()
        current.append(tokens[0])
        for token in tokens[1:]:
            close()
            current.append(token)
        if part[-1].isspace():
            close()
    close()
    return result


_TAG_PARSERS = {
    "arg": _parse_arg,
    "let": _parse_let,
    "include": _parse_include,
    "group": _parse_group,
    "push-ros-namespace": _parse_push_ros_namespace,
    "push_ros_namespace": _parse_push_ros_namespace,
    "set_env": _parse_set_env,
    "node": _parse_node,
}


def parse_entities(items, file: str, where: str) -> list[Entity]:
    if not isinstance(items, list):
        line = getattr(items, "line", None)
        raise LaunchFileError(f"{where} must be a list of tags ('- node: ...')", file=file, line=line)
    entities = []
    for item in items:
        line = getattr(item, "line", None)
        if not isinstance(item, dict) or len(item) != 1:
            raise LaunchFileError(
                f"each entry of {where} must be a mapping with exactly one key, its tag "
                f"(e.g. '- node: {{pkg: ..., exec: ...}}'), got {item!r}", file=file, line=line)
        tag, body = next(iter(item.items()))
        line = item.line_of(tag) if isinstance(item, LineDict) else line
        if tag not in _TAG_PARSERS:
            supported = ", ".join(t for t in _TAG_PARSERS if t != "push_ros_namespace")
            why = ("is valid upstream but not supported by mbrl-ros launch"
                   if tag in _UPSTREAM_ONLY_TAGS else "is not a launch tag")
            raise LaunchFileError(f"tag '{tag}' {why}; supported tags: {supported}",
                                  file=file, line=line, tag=str(tag))
        if tag == "group" and isinstance(body, list):
            # Upstream also takes a group written as its list of children.
            body = LineDict(children=body)
            body.line, body.key_lines = line, {}
        if not isinstance(body, dict):
            raise LaunchFileError(f"'{tag}' needs a mapping of attributes, got {body!r}",
                                  file=file, line=line, tag=tag)
        allowed = ATTRIBUTES[tag] + _CONDITIONS
        entities.append(_TAG_PARSERS[tag](_Body(tag, body, file, line, allowed)))
    return entities


def parse_launch_file(path: Path) -> list[Entity]:
    """Load and check a YAML launch file: `launch:` holding a list of tags."""
    file = str(path)
    data = load_yaml(path)
    if not isinstance(data, dict) or list(data) != ["launch"]:
        raise LaunchFileError("a YAML launch file must have exactly one top-level key, 'launch'",
                              file=file, line=1)
    return parse_entities(data["launch"], file, "'launch'")
