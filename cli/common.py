"""Helpers shared by the commands: clean errors (no tracebacks) and the install hint for a missing extra."""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from typing import Any, NoReturn, Union

import typer

EXTRAS = {
    "training": 'pip install -e ".[training]" (CPU torch: pip install torch --index-url '
                "https://download.pytorch.org/whl/cpu)",
    "serving": 'pip install -e ".[serving]"',
}


def fail(msg: str, code: int = 2) -> NoReturn:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def need(extra: str, e: ImportError) -> NoReturn:
    """A command whose extra is not installed: say which module is missing and how to install it."""
    fail(f"this command needs the {extra!r} extra ({e.name or e} is not installed): {EXTRAS[extra]}")


def parse_value(v: str):
    """A --set value: JSON when it parses (numbers, booleans, lists), else the string itself."""
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


_TYPE_NAMES = {float: "a number (float)", int: "an integer", bool: "true or false", str: "a string"}


def _type_name(tp) -> str:
    return _TYPE_NAMES.get(tp) or str(tp).replace("typing.", "").replace("NoneType", "null")


def _matches(v: Any, tp) -> bool:
    """Whether a JSON-decoded value fits a dataclass field's annotation (int for float is fine; bool is not
    a number here)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True
    if tp is type(None):
        return v is None
    if origin in (Union, types.UnionType):
        return any(_matches(v, a) for a in args)
    if origin is list:
        return isinstance(v, list) and all(_matches(e, args[0]) for e in v) if args else isinstance(v, list)
    if tp is bool:
        return isinstance(v, bool)
    if tp is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if tp is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    return isinstance(v, tp) if isinstance(tp, type) else True


def check_fields(cls: type, values: dict, ignore: frozenset[str] = frozenset()) -> None:
    """Fail with one line per problem before anything runs: an unknown key (with the closest known ones) or
    a value of the wrong type for a dataclass field (naming the key and the type expected)."""
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    for k, v in values.items():
        if k in ignore:
            continue
        if k not in hints:
            close = difflib.get_close_matches(k, known, n=3, cutoff=0.6)
            fail(f"unknown option {k!r}" + (f"; did you mean {' or '.join(map(repr, close))}?" if close else
                                            " (see training/config.py TrainConfig for every option)"))
        if not _matches(v, hints[k]):
            fail(f"{k}={json.dumps(v)}: {k} expects {_type_name(hints[k])}, got {type(v).__name__}")
