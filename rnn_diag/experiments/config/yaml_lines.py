"""Loading a config file: YAML read with its line numbers kept (``yaml.compose``), so that every
problem of :func:`load_config` names its line in the file, and YAML-level problems (syntax, a
key given twice, an unreadable file) are reported in the same form as setting problems.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .errors import ConfigError, ConfigProblem
from .schema import SWEEP_ALIASES, ExperimentConfig, validate_config

__all__ = ["load_config"]


def load_config(path) -> ExperimentConfig:
    """Read a YAML config file (``yaml.safe_load``) and validate it (:func:`validate_config`).

    Args:
        path: the file (str or Path).

    Raises:
        ConfigError: the file is missing or unreadable, is not valid YAML (with line and
            column), repeats a key, is not a mapping, or any setting or sweep value is invalid
            (with the key path and its line).

    Example:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny.yaml"
        >>> _ = path.write_text("name: tiny\\ntask: {name: adding, seq_len: 20}\\n"
        ...                     "sweep: {model.cell: [rnn, gru]}\\n")
        >>> cfg = load_config(path)
        >>> cfg.name, cfg.task.seq_len, cfg.sweep
        ('tiny', 20, {'model.cell': ['rnn', 'gru']})
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, [ConfigProblem("", "file not found")]) from None
    except IsADirectoryError:
        raise ConfigError(source, [ConfigProblem("", "is a folder, not a file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, [ConfigProblem("", f"cannot be read: {exc}")]) from None
    try:
        data = yaml.safe_load(text)
        tree = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [_yaml_problem(exc)]) from None
    duplicates = _duplicate_keys(tree)
    if duplicates:
        raise ConfigError(source, duplicates)
    try:
        return validate_config(data, source)
    except ConfigError as exc:
        located = [_locate(p, tree) for p in exc.problems]
        located.sort(key=lambda p: (p.line is None, p.line or 0))  # in file order
        raise ConfigError(source, located) from None


def _yaml_problem(exc: yaml.YAMLError) -> ConfigProblem:
    mark = getattr(exc, "problem_mark", None)
    what = getattr(exc, "problem", None) or str(exc)
    context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    text = "not valid YAML" + (f" at column {mark.column + 1}" if mark else "") + f": {what}"
    if context:
        text += f", {context}" + (f" started on line {start.line + 1}" if start else "")
    if mark is None:
        return ConfigProblem("", text)
    return ConfigProblem("", text, line=mark.line + 1)


def _duplicate_keys(node, path: tuple = ()) -> list[ConfigProblem]:
    """A problem for every key given twice in one mapping (``safe_load`` keeps the last)."""
    out = []
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            name = str(key.value)
            line = key.start_mark.line + 1
            if name in first and name != "<<":
                out.append(ConfigProblem(
                    ".".join((*path, name)),
                    f"given twice (first on line {first[name]}); keep one", line=line))
            first.setdefault(name, line)
            out += _duplicate_keys(value, (*path, name))
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            out += _duplicate_keys(item, path)
    return out


def _locate(problem: ConfigProblem, tree) -> ConfigProblem:
    """``problem`` with the line of the deepest YAML node its ``loc`` reaches."""
    attempts = [problem.loc]
    if problem.loc[:1] == ("sweep",) and len(problem.loc) > 1:  # written as a short form?
        attempts += [("sweep", short, *problem.loc[2:])
                     for short, full in SWEEP_ALIASES.items() if full == problem.loc[1]]
    best = None
    for loc in attempts:
        node, depth, line = tree, 0, None
        for part in loc:
            child = _child(node, part)
            if child is None:
                break
            (line, node), depth = child, depth + 1
        if line is not None and (best is None or depth > best[0]):
            best = (depth, line)
    if best is None:
        return problem
    return ConfigProblem(problem.path, problem.message, problem.value, best[1], problem.loc)


def _child(node, part):
    """``(1-based line of the key or item, child node)`` of ``node`` at ``part``, or ``None``."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if str(key.value) == str(part):
                return key.start_mark.line + 1, value
    elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and \
            0 <= part < len(node.value):
        item = node.value[part]
        return item.start_mark.line + 1, item
    return None
