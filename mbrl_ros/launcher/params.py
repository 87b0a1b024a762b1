"""Node parameters: typing rules and the parameter files handed to nodes.

Inline `param` name/value pairs go into a generated parameter file passed with
`--params-file`, exactly as launch_ros does (rather than `-p name:=value`):
YAML keeps the types that rcl reads back (a string '5' stays a string, lists
stay lists) and nested names need no flattening. Values follow launch_ros'
rules: YAML scalars keep their type; a plain string stays a string; a string
with a substitution is evaluated and then read as YAML ('$(var rate)' with
rate=20 gives the integer 20).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import yaml

from .errors import LaunchFileError
from .frontend import InlineParam, ParamScalar
from .substitutions import SubstitutionContext, Template, perform

_SCALARS = (bool, int, float, str)


def evaluate_inline_params(params: list[InlineParam], context: SubstitutionContext) -> dict:
    result: dict = {}
    for param in params:
        name = perform(param.name, context)
        if param.children is not None:
            result[name] = evaluate_inline_params(param.children, context)
        else:
            result[name] = _evaluate_value(param.value, name, param, context)
    return result


def _evaluate_value(value, name: str, param: InlineParam, context: SubstitutionContext):
    if isinstance(value, list):
        items = [_evaluate_scalar(v, name, param, context, allow_list=False) for v in value]
        _check_uniform(items, name, param)
        return items
    return _evaluate_scalar(value, name, param, context, allow_list=True)


def _evaluate_scalar(value: ParamScalar, name: str, param: InlineParam,
                     context: SubstitutionContext, allow_list: bool):
    if not isinstance(value, Template):
        return value
    if value.is_literal:
        return value.literal
    text = perform(value, context) or "''"  # YAML reads '' as null; upstream keeps ''
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError:
        raise _error(param, f"parameter '{name}': {text!r} is not valid YAML") from None
    if type(loaded) in _SCALARS:
        return loaded
    if allow_list and isinstance(loaded, list) and loaded and all(type(v) in _SCALARS for v in loaded):
        _check_uniform(loaded, name, param)
        return loaded
    raise _error(param, f"parameter '{name}': {text!r} gives {type(loaded).__name__}; "
                 "allowed are bool, int, float, str and non-empty uniform lists of them")


def _check_uniform(items: list, name: str, param: InlineParam) -> None:
    if len({type(v) for v in items}) > 1:
        raise _error(param, f"parameter '{name}': list items must all have one type, got {items!r}")


def _error(param: InlineParam, message: str) -> LaunchFileError:
    o = param.origin
    return LaunchFileError(message, file=o.file, line=o.line, tag=o.tag)


def write_params_file(directory: Path, node_key: str, params: dict) -> str:
    """Write `{node_key: {ros__parameters: params}}`; node_key is the node's full
    name when both name and namespace are known, else the wildcard '/**' (as upstream)."""
    fd, path = tempfile.mkstemp(prefix="launch_params_", suffix=".yaml", dir=directory)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump({node_key: {"ros__parameters": params}}, handle,
                       default_flow_style=False, sort_keys=False)
    return path
