"""Substitution syntax (upstream's grammar) and evaluation (upstream's semantics)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mbrl_ros.launcher.errors import LaunchFileError
from mbrl_ros.launcher.packages import find_package_share, repository_root
from mbrl_ros.launcher.substitutions import (Origin, Substitution, parse_template, perform,
                                             values_equal)


class Context:
    def __init__(self, configurations=None, environment=None, file="/launch/dir/x.launch.yaml"):
        self.configurations = configurations or {}
        self.environment = environment or {}
        self.current_file = Path(file)

    def find_package_share(self, package):
        return find_package_share(package, self.environment)


def evaluate(text, **context):
    return perform(parse_template(text), Context(**context))


def test_plain_text_and_escapes():
    assert parse_template("just text").parts == ("just text",)
    # A backslash escapes the next character and is removed, as upstream does.
    assert evaluate(r"cost \$(var x) is \\ 5") == r"cost $(var x) is \ 5"
    assert evaluate("price: $5") == "price: $5"


def test_nested_substitutions():
    template = parse_template("$(var $(var which))_suffix")
    assert template.parts == (Substitution("var", ((Substitution("var", (("which",),)),),)), "_suffix")
    assert evaluate("$(var $(var which))_x", configurations={"which": "a", "a": "A"}) == "A_x"
    assert evaluate("pre-$(var a)-$(env HOME_X)-post",
                    configurations={"a": "1"}, environment={"HOME_X": "h"}) == "pre-1-h-post"


def test_quoted_arguments_keep_spaces_and_nest():
    conf = {"robot": "car", "rate": "20"}
    assert evaluate("$(eval '1 + 2')") == "3"
    assert evaluate("$(eval '\"$(var robot)\" == \"car\"')", configurations=conf) == "True"
    assert evaluate('$(eval "$(var rate) * 2")', configurations=conf) == "40"
    assert evaluate("$(env NOPE 'a default')") == "a default"
    assert evaluate("$(env NOPE '')") == ""


def test_var_and_env_defaults_and_failures():
    assert evaluate("$(var missing fallback)") == "fallback"
    assert evaluate("$(env SET unused)", environment={"SET": "yes"}) == "yes"
    with pytest.raises(LaunchFileError, match="launch configuration 'missing' is not set"):
        evaluate("$(var missing)", configurations={"other": "1"})
    with pytest.raises(LaunchFileError, match="environment variable 'NOPE' is not set"):
        evaluate("$(env NOPE)")


def test_eval_has_math_and_reports_errors():
    assert evaluate("$(eval 'round(pi, 2)')") == "3.14"
    assert evaluate("$(eval 'math.floor(2.5)')") == "2"
    with pytest.raises(LaunchFileError, match="ZeroDivisionError"):
        evaluate("$(eval '1/0')")


@pytest.mark.parametrize("left,right,equal", [
    ("car", "car", True), ("car", "hand", False), ("true", "1", True), ("True", "false", False),
    ("1.0", "1", True), ("0.1", "0.10000000001", True), ("10", "1e1", True), ("", "", True),
])
def test_equals_semantics_follow_upstream(left, right, equal):
    assert values_equal(left, right) is equal
    conf = {"l": left, "r": right}
    assert evaluate("$(equals $(var l) $(var r))", configurations=conf) == str(equal).lower()
    assert evaluate("$(not-equals $(var l) $(var r))", configurations=conf) == str(not equal).lower()


def test_and_takes_two_booleans_as_upstream():
    assert evaluate("$(and $(equals car car) 1)") == "true"
    assert evaluate("$(and true $(equals car hand))") == "false"
    assert evaluate("$(and False true)") == "false"
    with pytest.raises(LaunchFileError, match="takes booleans .* got 'car'"):
        evaluate("$(and car true)")


def test_dirname_and_find_pkg_share(ament_prefix):
    assert evaluate("$(dirname)/other.yaml") == "/launch/dir/other.yaml"
    share = evaluate("$(find-pkg-share test_pkg)", environment={"AMENT_PREFIX_PATH": str(ament_prefix)})
    assert share == str(ament_prefix / "share" / "test_pkg")
    # Without an ament index entry, mbrl_ros is the repository (editable install).
    assert evaluate("$(find-pkg-share mbrl_ros)") == str(repository_root())
    assert (repository_root() / "mbrl_ros" / "launcher").is_dir()
    with pytest.raises(LaunchFileError, match="package 'nope' not found"):
        evaluate("$(find-pkg-share nope)")


@pytest.mark.parametrize("text,message", [
    ("$(anon node)", "valid upstream but not supported"),
    ("$(frobnicate x)", "unknown substitution"),
    ("$(var)", r"\$\(var\) takes 1 or 2 argument"),
    ("$(dirname x)", r"\$\(dirname\) takes 0 argument"),
    ("$(equals a)", r"takes 2 argument"),
    ("$(var x", "missing '\\)'"),
    ("$(var  x)", "empty substitution argument"),
    ("$(var x )", "empty substitution argument"),
    ("$(eval 'unterminated)", "unterminated ' quote"),
    ("$(eval '1'x)", "text after a closing"),
    ("$(var a(b))", r"unescaped '\('"),
    ("$()", "expected a substitution name"),
])
def test_syntax_errors_name_the_problem_and_origin(text, message):
    origin = Origin("robot.launch.yaml", 7, "node", "name")
    with pytest.raises(LaunchFileError, match=message) as info:
        parse_template(text, origin)
    assert str(info.value).startswith("robot.launch.yaml:7: in 'node': attribute 'name':")
