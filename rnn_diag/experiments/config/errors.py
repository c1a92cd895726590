"""Config errors in plain English: :class:`ConfigError` and its :class:`ConfigProblem` lines,
and the translation of pydantic's ``ValidationError`` into them (key path, what was expected,
the value given; :mod:`.yaml_lines` adds the line in the file).

This module knows nothing of the schema: the keys a mapping accepts (for "unknown key" hints)
come from the caller, so the schema can build its own errors with :func:`line_error`,
:func:`show_value` and :func:`did_you_mean`.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticCustomError

__all__ = [
    "ConfigError",
    "ConfigProblem",
    "did_you_mean",
    "line_error",
    "pydantic_problems",
    "show_value",
]

_MAX_LISTED = 30  # problems listed in one ConfigError; the rest are counted
_NOTE = "config_note"  # a custom error whose message is complete (no ", got ..." added)


@dataclass(frozen=True)
class ConfigProblem:
    """One problem of a config.

    Attributes:
        path: the dotted key path, e.g. ``"train.lr"`` or ``"sweep.model.cell"``; ``""`` for
            the file as a whole.
        message: what was expected and the value given, in words.
        value: the value given (``None`` when missing or not one value).
        line: the 1-based line in the file, or ``None``.
        loc: where in the parsed mapping (keys and list indices), to find the line.
    """

    path: str
    message: str
    value: Any = None
    line: int | None = None
    loc: tuple = ()

    def render(self) -> str:
        """``path (line N): message``, the form used in :class:`ConfigError`.

        Example:
            >>> ConfigProblem("train.lr", "expected a number greater than 0, got -1", -1,
            ...               line=7).render()
            'train.lr (line 7): expected a number greater than 0, got -1'
        """
        line = f"line {self.line}" if self.line is not None else ""
        if self.path and line:
            return f"{self.path} ({line}): {self.message}"
        where = self.path or line
        return f"{where}: {self.message}" if where else self.message


class ConfigError(Exception):
    """An invalid experiment config. ``str(error)`` is a ready-to-print message: a first line
    naming the file, then one line per problem: the key path, (the line in the file,) what was
    expected and the value given.

    Attributes:
        source: the file (or the ``source`` given to
            :func:`~rnn_diag.experiments.config.validate_config`).
        problems: the :class:`ConfigProblem` list.

    Example:
        >>> from rnn_diag.experiments.config import validate_config
        >>> try:
        ...     validate_config({"name": "x", "task": {"name": "adding", "seq_len": 0},
        ...                      "model": {"cell": "lsmt"}}, source="x.yaml")
        ... except ConfigError as e:
        ...     print(e)
        Invalid experiment config x.yaml:
          task.seq_len: expected a number greater than 0, got 0
          model.cell: expected one of rnn, gru, lstm, lru, mingru, ssm, got "lsmt"; did you mean "lstm"?
    """  # noqa: E501

    def __init__(self, source: str, problems: list[ConfigProblem]):
        self.source = str(source)
        self.problems = list(problems)
        super().__init__(self.source, self.problems)

    def __str__(self) -> str:
        lines: list[str] = []
        for p in self.problems:
            text = f"  {p.render()}"
            if text not in lines:
                lines.append(text)
        extra = len(lines) - _MAX_LISTED
        if extra > 0:
            lines = [*lines[:_MAX_LISTED], f"  ... and {extra} more"]
        return "\n".join([f"Invalid experiment config {self.source}:", *lines])

    def __reduce__(self):
        return (type(self), (self.source, self.problems))


def line_error(loc: tuple, text: str, value: Any, note: bool = True) -> dict:
    """An error for ``ValidationError.from_exception_data``, which :func:`pydantic_problems`
    turns back into a :class:`ConfigProblem` at ``loc``.

    Args:
        loc: where in the mapping validated (keys and list indices).
        text: the message; with ``note`` it is the whole message, otherwise
            ``", got <value>"`` is added to it.
        value: the value given.
        note: see ``text``.

    Example:
        >>> line_error(("train", "lr"), "expected a small number", 5)["loc"]
        ('train', 'lr')
    """
    kind = _NOTE if note else "config_value"
    return {"type": PydanticCustomError(kind, text), "loc": loc, "input": value}


def show_value(value: Any) -> str:
    """A value as a YAML/JSON user writes it: "text", 1.5, null, true, ["a", 2] (80
    characters at most).

    Example:
        >>> show_value("lsmt"), show_value(None), show_value([True, 0.5])
        ('"lsmt"', 'null', '[true, 0.5]')
    """
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def did_you_mean(value: Any, choices) -> str:
    """'did you mean "x"?' for the choice closest to ``value``, or "".

    Example:
        >>> did_you_mean("lsmt", ["rnn", "gru", "lstm"]), did_you_mean("xyz", ["rnn"])
        ('did you mean "lstm"?', '')
    """
    if not isinstance(value, str):
        return ""
    lowered = {str(c).lower(): str(c) for c in choices}
    close = difflib.get_close_matches(value.lower(), list(lowered), n=1, cutoff=0.6)
    return f'did you mean "{lowered[close[0]]}"?' if close else ""


_MAPPING = "expected a mapping (indented key: value lines, or {key: value})"
_EXPECTED = {
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "finite_number": "expected a finite number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected text",
    "list_type": "expected a list, e.g. [a, b]",
    "dict_type": _MAPPING,
    "model_type": _MAPPING,
    "model_attributes_type": _MAPPING,
    "none_required": "expected null",
}
_BOUNDS = {"greater_than": ("gt", "greater than"), "greater_than_equal": ("ge", "at least"),
           "less_than": ("lt", "less than"), "less_than_equal": ("le", "at most")}


#: Lists whose entries are mappings: an entry's index is part of the path (``[1]``), since the
#: entries' keys repeat (``train.regularizer[1].k``).
_INDEXED_LISTS = ("regularizer",)


def _path_text(loc: tuple, key_error: bool) -> str:
    """``loc`` as a dotted path; list indices are left out (the line says where), except the
    entries of :data:`_INDEXED_LISTS` and an unknown key that is itself an index."""
    parts: list[str] = []
    for i, x in enumerate(loc):
        if not isinstance(x, int):
            parts.append(str(x))
        elif parts and loc[i - 1] in _INDEXED_LISTS:
            parts[-1] += f"[{x}]"
        elif key_error and i == len(loc) - 1:
            parts.append(str(x))
    return ".".join(parts)


def _item_kind(data: Any, loc: tuple) -> Any:
    """The ``kind`` of the list item at ``loc`` in the raw mapping ``data`` (None if none)."""
    node = data
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node.get("kind") if isinstance(node, dict) else None


def pydantic_problems(exc: ValidationError, data: Any,
                      valid_keys: Callable[[tuple, Any], list[str]]) -> list[ConfigProblem]:
    """pydantic's errors in words, one :class:`ConfigProblem` each (no lines yet).

    Args:
        exc: the error of validating ``data``.
        data: the raw mapping validated.
        valid_keys: ``valid_keys(loc, data)``: the keys the mapping at ``loc`` accepts, listed
            after an unknown key (``[]``: none listed).

    Example:
        >>> from pydantic import BaseModel
        >>> class Lr(BaseModel):
        ...     lr: float
        >>> try:
        ...     Lr.model_validate({"lr": "fast"})
        ... except ValidationError as exc:
        ...     print(pydantic_problems(exc, {"lr": "fast"}, lambda loc, data: [])[0].render())
        lr: expected a number, got "fast"
    """
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        if loc[:2] == ("task", "options"):
            loc = ("task", *loc[2:])  # the options sit flat in the file
        if loc[:1] == ("axes",):
            loc = ("sweep", *loc[1:])  # named axes are written in the sweep
        if len(loc) > 3 and isinstance(loc[2], int) and isinstance(loc[3], str) \
                and _item_kind(data, loc[:3]) == loc[3]:
            loc = (*loc[:3], *loc[4:])  # a tagged union's tag (an item's ``kind``) is no key
        bad_key = "[key]" in loc
        loc = tuple(x for x in loc if x != "[key]")
        kind, value = err["type"], err.get("input")
        key_error = kind == "extra_forbidden" or bad_key
        path = _path_text(loc, key_error)
        ctx = err.get("ctx") or {}
        hint = ctx.get("hint", "")
        got = kind not in (_NOTE, "missing")
        if kind == _NOTE:
            text = err["msg"]
        elif bad_key:
            text, value = "expected a key made of text", loc[-1]
        elif kind == "missing":
            text, value = "required, but missing", None
        elif kind == "extra_forbidden":
            valid = valid_keys(loc[:-1], data)
            text, got = f"unknown key (its value: {show_value(value)})", False
            hint = did_you_mean(str(loc[-1]), valid)
            if valid:
                hint += (" " if hint else "") + f"valid keys here: {', '.join(valid)}"
        elif kind in _BOUNDS:
            bound_key, words = _BOUNDS[kind]
            text = f"expected a number {words} {ctx.get(bound_key)}"
        elif kind == "literal_error":
            choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
            text = f"expected one of {', '.join(choices)}"
            hint = did_you_mean(value, choices)
        elif kind == "union_tag_invalid":
            tags = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", "")))
            text = f"expected {ctx.get('discriminator', 'kind')}: one of {', '.join(tags)}"
            hint = did_you_mean(ctx.get("tag"), tags)
        elif kind == "union_tag_not_found":
            text = f"missing the key {ctx.get('discriminator', 'kind')}"
        elif kind == "too_short" and isinstance(value, (list, tuple)):
            text = "expected a non-empty list of values"
        elif kind in _EXPECTED:
            text = _EXPECTED[kind]
        elif kind in ("value_error", "assertion_error"):
            text = re.sub(r"^(Value|Assertion) error, ", "", err["msg"])
            got = not isinstance(value, dict)  # a whole section: its message says what is wrong
        else:
            text = err["msg"][:1].lower() + err["msg"][1:]
        if got:
            text += f", got {show_value(value)}"
        if hint:
            text += f"; {hint}"
        out.append(ConfigProblem(path, text, value, None, loc))
    return out
