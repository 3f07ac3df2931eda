"""Typed configuration files: shared plumbing for the gateway's and the operator's models.

Both `server.config` and `client.config` describe their TOML files as strict pydantic models
(unknown keys forbidden, every number with a range). This package turns a pydantic validation
failure into one `ConfigError` line per bad key that names the key, the value as written and
what is allowed (with a "did you mean" for a misspelled key), and renders a model as a Markdown
settings table for the README, so that the documentation is generated from the same model that
checks the file.

It sits beside `server` and `client`, below both and above the protocol package: `hotline`
(the protocol, which other implementations read as the specification) does not depend on
pydantic; this package uses only `hotline.errors` from it (`tests/test_layers.py`).
"""

from __future__ import annotations

import difflib
import math
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path

import annotated_types
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from hotline.errors import ConfigError

__all__ = [
    "allowed",
    "config_error",
    "did_you_mean",
    "markdown_table",
    "replace_between",
    "toml_value",
]


def toml_value(value: object) -> str:
    """A value as it would be written in TOML (so the message quotes what the file says)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Path):
        return toml_value(str(value))
    return repr(value)


def _number(value: object) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return f"{int(value):,}".replace(",", "_") if abs(value) >= 100_000 else str(int(value))
    if isinstance(value, int) and abs(value) >= 100_000:
        return f"{value:_}"
    return str(value)


def _kind(annotation: object) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(toml_value(v) for v in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _kind(args[0]) if len(args) == 1 else " or ".join(_kind(a) for a in args)
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "a whole number"
    if annotation is float:
        return "a number"
    if annotation is Path:
        return "a path (a string)"
    if annotation is str:
        return "a string"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "a table"
    return "a value"


def allowed(info: FieldInfo) -> str:
    """What a field accepts, in words: its type and range (`extra['allowed']` adds to it)."""
    text = _kind(info.annotation)
    low = high = ""
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            low = f"at least {_number(item.ge)}"
        elif isinstance(item, annotated_types.Gt):
            low = f"more than {_number(item.gt)}"
        elif isinstance(item, annotated_types.Le):
            high = f"at most {_number(item.le)}"
        elif isinstance(item, annotated_types.Lt):
            high = f"less than {_number(item.lt)}"
    if low.startswith("at least") and high.startswith("at most"):
        text += f" from {low.removeprefix('at least ')} to {high.removeprefix('at most ')}"
    elif low or high:
        text += " " + " and ".join(b for b in (low, high) if b)
    extra = info.json_schema_extra
    if isinstance(extra, dict) and extra.get("allowed"):
        # a string's (or a path's) own rule says it all; for anything else it adds to the range
        own = text in ("a string", "a path (a string)")
        return str(extra["allowed"]) if own else f"{text} ({extra['allowed']})"
    return text


def did_you_mean(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def config_error(
    model: type[BaseModel], error: ValidationError, source: str, *, prefix: str = ""
) -> ConfigError:
    """One line per bad key: `source: key = value: must be <allowed>`."""
    lines = []
    fields = model.model_fields
    for item in error.errors(include_url=False):
        loc = [str(part) for part in item["loc"]]
        key = loc[0] if loc else ""
        name = prefix + ".".join(loc)
        value = item.get("input")
        if item["type"] == "extra_forbidden":
            hint = did_you_mean(key, fields) or f" (known: {', '.join(fields)})"
            lines.append(f"unknown setting {name}{hint}")
        elif item["type"] == "missing":
            lines.append(f"missing required setting {name}: {allowed(fields[key])}")
        elif key in fields and len(loc) == 1:
            if item["type"] == "value_error":  # a field's own rule, which says what it wants
                why = item["msg"].removeprefix("Value error, ")
            else:
                why = f"must be {allowed(fields[key])}"
            lines.append(f"{name} = {toml_value(value)}: {why}")
        else:
            lines.append(f"{name} = {toml_value(value)}: {item['msg']}")
    return ConfigError(f"{source}: " + "; ".join(lines))


def markdown_table(model: type[BaseModel], *, skip: Iterable[str] = ()) -> str:
    """The model's settings as a Markdown table: name, default, allowed values, meaning."""
    rows = ["| setting | default | allowed | meaning |", "|---|---|---|---|"]
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        default = (
            "(required)"
            if info.is_required()
            else toml_value(info.get_default(call_default_factory=True))
        )
        if default == "None":
            default = "(not set)"
        elif default == '""':
            default = '`""`'
        elif not default.startswith("("):
            default = f"`{default}`"
        meaning = (info.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{name}` | {default} | {allowed(info)} | {meaning} |")
    return "\n".join(rows) + "\n"


def replace_between(text: str, begin: str, end: str, content: str) -> str:
    """`text` with what lies between the lines `begin` and `end` replaced by `content`."""
    head, found, rest = text.partition(begin)
    _, found_end, tail = rest.partition(end)
    if not found or not found_end:
        raise ValueError(f"markers {begin!r} ... {end!r} not found")
    return f"{head}{begin}\n{content}{end}{tail}"
