"""Walk a launch file's entities in order, as upstream's launch service visits
actions, and resolve them: launch configurations, environment, ROS namespace,
includes, conditions, and finally each node's command line.

Two modes:
- run: conditions are evaluated and only taken branches are visited; every
  failure is an error (this happens entirely before any process starts);
- discovery: every branch is visited and failures are only noted, to list the
  arguments a launch declares (`--show-args`, unknown-argument checks).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import yaml

from . import frontend as fe
from .errors import LaunchArgumentError, LaunchError, LaunchFileError
from .packages import find_node_command, find_package_share
from .params import evaluate_inline_params, write_params_file
from .substitutions import (Origin, SubstitutionFailure, Template, perform, perform_parts)

OUTPUT_MODES = ("screen", "log", "both")
_NODE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAMESPACE = re.compile(r"/|(/[A-Za-z_][A-Za-z0-9_]*)+")


@dataclass
class ArgumentInfo:
    """A declared launch argument, as `--show-args` lists it."""

    name: str
    default: str | None  # as written in the file (may hold substitutions)
    description: str | None
    choices: list[str] | None
    file: str
    line: int | None


@dataclass
class NodeAction:
    """A node resolved to the process that runs it."""

    label: str                       # prefix of its output lines, unique in a launch
    package: str | None
    executable: str
    name: str | None                 # node name given in the file (None: the node's default)
    namespace: str | None            # absolute namespace, None if none given or pushed
    command: list[str]
    environment: dict[str, str]      # the full environment of the process
    environment_changes: dict[str, str]  # what set_env changed, for display
    output: str                      # screen | log | both
    respawn: bool
    respawn_delay: float
    params_files: list[str]
    source: str                      # file:line of the node tag
    shutdown_on_exit: bool = False   # on_exit: shutdown - its exit ends the launch (a respawn is not made)
    respawn_max_retries: int = -1    # respawns made at most over the launch (upstream's meaning); -1: no limit

    @property
    def full_name(self) -> str | None:
        if self.name is None or self.namespace is None:
            return None
        return prefix_namespace(self.namespace, self.name)


class LaunchContext:
    """Launch configurations, environment and the file being read, with scopes."""

    def __init__(self, configurations: Mapping[str, str], environment: Mapping[str, str]) -> None:
        self.configurations: dict[str, str] = dict(configurations)
        self.environment: dict[str, str] = dict(environment)
        self.files: list[Path] = []
        self._scopes: list[tuple[dict, dict]] = []

    @property
    def current_file(self) -> Path:
        return self.files[-1]

    def find_package_share(self, package: str) -> str:
        return find_package_share(package, self.environment)

    def push_scope(self) -> None:
        self._scopes.append((dict(self.configurations), dict(self.environment)))

    def pop_scope(self) -> None:
        self.configurations, self.environment = self._scopes.pop()


def prefix_namespace(base: str | None, namespace: str | None) -> str | None:
    """launch_ros' rule: a relative namespace goes under the pushed one."""
    if base is None and namespace is None:
        return None
    if namespace is None:
        combined = base
    elif not base or namespace.startswith("/"):
        combined = namespace
    else:
        combined = ("" if base == "/" else base) + "/" + namespace
    return combined if combined == "/" else combined.rstrip("/")


def make_absolute(namespace: str | None) -> str | None:
    if namespace is None or namespace.startswith("/"):
        return namespace
    return "/" + namespace


@dataclass
class Visitor:
    context: LaunchContext
    discovery: bool = False
    params_directory: Callable[[], Path] | None = None  # made on first use
    arguments: dict[str, ArgumentInfo] = field(default_factory=dict)
    nodes: list[NodeAction] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    base_environment: dict[str, str] = field(default_factory=dict)
    _labels: dict[str, int] = field(default_factory=dict)

    # ---- helpers ----

    def resolve(self, template: Template) -> str | None:
        """Evaluate; in discovery mode a failure is noted and gives None."""
        try:
            return perform(template, self.context)
        except LaunchError as err:
            if not self.discovery:
                raise
            self.notes.append(str(err))
            return None

    def condition_holds(self, entity: fe.Entity) -> bool:
        if entity.condition is None or self.discovery:
            return True
        value = perform(entity.condition.expression, self.context).strip().lower()
        if value not in ("true", "1", "false", "0"):
            raise LaunchFileError(
                f"'{entity.condition.kind}' must evaluate to true, false, 1 or 0, got '{value}' "
                f"(from {entity.condition.expression.text!r})",
                file=entity.file, line=entity.line, tag=entity.tag)
        truth = value in ("true", "1")
        return truth if entity.condition.kind == "if" else not truth

    # ---- visiting ----

    def visit_file(self, path: Path) -> None:
        entities = fe.parse_launch_file(path)
        self.context.files.append(path)
        try:
            self.visit_all(entities)
        finally:
            self.context.files.pop()

    def visit_all(self, entities: list[fe.Entity]) -> None:
        for entity in entities:
            if self.condition_holds(entity):
                getattr(self, "_visit_" + type(entity).__name__.lower())(entity)

    def _visit_arg(self, arg: fe.Arg) -> None:
        self.arguments.setdefault(arg.name, ArgumentInfo(
            arg.name, None if arg.default is None else arg.default.text, arg.description,
            arg.choices, arg.file, arg.line))
        conf = self.context.configurations
        if arg.name not in conf:
            if arg.default is None:
                if self.discovery:
                    return
                raise LaunchArgumentError(
                    f"{arg.file}:{arg.line}: required argument '{arg.name}' was not given; "
                    f"pass {arg.name}:=VALUE" + _describe_choices(arg.choices))
            value = self.resolve(arg.default)
            if value is None:
                return
            conf[arg.name] = value
        if arg.choices is not None and conf[arg.name] not in arg.choices and not self.discovery:
            raise LaunchArgumentError(
                f"{arg.file}:{arg.line}: argument '{arg.name}' is '{conf[arg.name]}', "
                f"which is not one of its choices: {', '.join(arg.choices)}")

    def _visit_let(self, let: fe.Let) -> None:
        name, value = self.resolve(let.name), self.resolve(let.value)
        if name is not None and value is not None:
            self.context.configurations[name] = value

    def _visit_setenv(self, set_env: fe.SetEnv) -> None:
        name, value = self.resolve(set_env.name), self.resolve(set_env.value)
        if name is not None and value is not None:
            self.context.environment[name] = value

    def _visit_pushrosnamespace(self, push: fe.PushRosNamespace) -> None:
        pushed = self.resolve(push.namespace)
        if pushed is None:
            return
        previous = self.context.configurations.get("ros_namespace")
        namespace = make_absolute(prefix_namespace(previous, pushed))
        if not _NAMESPACE.fullmatch(namespace):
            self._fail(push, f"namespace '{namespace}' (pushed '{pushed}' onto "
                       f"'{previous or '/'}') is not a valid ROS namespace")
            return
        # Stored where upstream keeps it, so `$(var ros_namespace)` works the same.
        self.context.configurations["ros_namespace"] = namespace

    def _visit_group(self, group: fe.Group) -> None:
        if not group.scoped:
            self.visit_all(group.children)
            return
        self.context.push_scope()
        try:
            self.visit_all(group.children)
        finally:
            self.context.pop_scope()

    def _visit_include(self, include: fe.Include) -> None:
        text = self.resolve(include.path)
        if text is None:
            return
        path = Path(os.path.abspath(text))  # relative to the working directory, as upstream
        problem = None
        if not path.name.endswith((".yaml", ".yml")):
            problem = f"'{text}': only YAML launch files can be included by mbrl-ros launch"
        elif not path.is_file():
            problem = f"included launch file '{path}' does not exist"
        elif path in self.context.files:
            problem = f"'{path}' includes itself (include cycle)"
        if problem:
            self._fail(include, problem)
            return
        passed = []
        # Upstream sets the passed arguments as launch configurations of the
        # current scope (an include is not a scope), one after the other.
        for name_template, value_template in include.args:
            name, value = self.resolve(name_template), self.resolve(value_template)
            if name is None or value is None:
                continue
            self.context.configurations[name] = value
            passed.append(name)
        if not self.discovery:
            self._check_required_arguments(path, passed, include)
        self.visit_file(path)

    def _check_required_arguments(self, path: Path, passed: list[str], include: fe.Include) -> None:
        # Upstream's best-effort check: unconditional args without default must be passed.
        for entity in fe.parse_launch_file(path):
            if isinstance(entity, fe.Arg) and entity.condition is None \
                    and entity.default is None and entity.name not in passed:
                raise LaunchFileError(
                    f"included file {path} needs argument '{entity.name}'"
                    f"{' (' + entity.description + ')' if entity.description else ''}; "
                    f"pass it with arg: [{{name: {entity.name}, value: ...}}]",
                    file=include.file, line=include.line, tag="include")

    def _visit_node(self, node: fe.Node) -> None:
        if self.discovery:
            return
        self.nodes.append(self._resolve_node(node))

    def _fail(self, entity: fe.Entity, message: str) -> None:
        error = LaunchFileError(message, file=entity.file, line=entity.line, tag=entity.tag)
        if not self.discovery:
            raise error
        self.notes.append(str(error))

    # ---- nodes ----

    def _resolve_node(self, node: fe.Node) -> NodeAction:
        ctx = self.context
        package = None if node.pkg is None else perform(node.pkg, ctx)
        executable = perform(node.exec, ctx)
        try:
            command = find_node_command(package, executable, ctx.environment)
        except SubstitutionFailure as err:
            raise LaunchFileError(str(err), file=node.file, line=node.line, tag="node") from None
        origin = Origin(node.file, node.line, "node")
        arguments = [perform_parts(a, ctx, origin) for a in node.args]
        name = None if node.name is None else perform(node.name, ctx)
        if name is not None and not _NODE_NAME.fullmatch(name):
            self._fail(node, f"'{name}' is not a valid node name (letters, digits, '_'; "
                       "not starting with a digit)")
        given_namespace = None if node.namespace is None else perform(node.namespace, ctx)
        namespace = make_absolute(prefix_namespace(ctx.configurations.get("ros_namespace"),
                                                   given_namespace))
        if namespace is not None and not _NAMESPACE.fullmatch(namespace):
            self._fail(node, f"'{namespace}' is not a valid ROS namespace")

        # The command, in launch_ros' order: executable, args, [--ros-args ros_args],
        # --ros-args, node name, namespace, parameters, remappings.
        cmd = [*command, *arguments]
        if node.ros_args is not None:
            cmd += ["--ros-args", *(perform_parts(a, ctx, origin) for a in node.ros_args)]
        cmd.append("--ros-args")
        if name is not None:
            cmd += ["-r", f"__node:={name}"]
        if namespace is not None:
            cmd += ["-r", f"__ns:={namespace}"]
        full_name = prefix_namespace(namespace, name) if name and namespace else None
        params_files = self._params_files(node, full_name or "/**")
        for path in params_files:
            cmd += ["--params-file", path]
        for source, target in node.remaps:
            cmd += ["-r", f"{perform(source, ctx)}:={perform(target, ctx)}"]

        output = "log" if node.output is None else perform(node.output, ctx)
        if output not in OUTPUT_MODES:
            self._fail(node, f"output '{output}' is not one of {', '.join(OUTPUT_MODES)}")
        environment = dict(ctx.environment)
        # Python nodes write to a pipe here: unbuffered, lines arrive as printed.
        environment.setdefault("PYTHONUNBUFFERED", "1")
        return NodeAction(
            label=self._unique_label(name or Path(executable).name),
            package=package, executable=executable, name=name, namespace=namespace,
            command=cmd, environment=environment,
            environment_changes={k: v for k, v in ctx.environment.items()
                                 if self.base_environment.get(k) != v},
            output=output, respawn=self._respawn(node), respawn_delay=node.respawn_delay or 0.0,
            params_files=params_files, source=f"{node.file}:{node.line}",
            shutdown_on_exit=node.on_exit == "shutdown",
            respawn_max_retries=-1 if node.respawn_max_retries is None else node.respawn_max_retries)

    def _params_files(self, node: fe.Node, node_key: str) -> list[str]:
        files: list[str] = []
        pending_inline: list[fe.InlineParam] = []

        def flush() -> None:
            # Consecutive inline params share one file; order against `from` files
            # is kept, so later definitions still override earlier ones.
            if pending_inline:
                values = evaluate_inline_params(pending_inline, self.context)
                files.append(write_params_file(self.params_directory(), node_key, values))
                pending_inline.clear()

        for param in node.params:
            if isinstance(param, fe.InlineParam):
                pending_inline.append(param)
                continue
            flush()
            path = os.path.abspath(perform(param.path, self.context))
            if not os.path.isfile(path):
                o = param.path.origin
                raise LaunchFileError(f"parameter file '{path}' does not exist",
                                      file=o.file, line=o.line, tag="param")
            files.append(path)
        flush()
        return files

    def _respawn(self, node: fe.Node) -> bool:
        if node.respawn is None:
            return False
        text = perform(node.respawn, self.context)
        value = yaml.safe_load(text) if text else None
        if not isinstance(value, bool):
            raise LaunchFileError(f"respawn must be 'true' or 'false', got '{text}'",
                                  file=node.file, line=node.line, tag="node")
        return value

    def _unique_label(self, label: str) -> str:
        count = self._labels.get(label, 0) + 1
        self._labels[label] = count
        return label if count == 1 else f"{label}-{count}"


def _describe_choices(choices: list[str] | None) -> str:
    return f" (one of: {', '.join(choices)})" if choices else ""
