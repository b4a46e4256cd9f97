"""Helpers shared by the commands: clean errors (no tracebacks) and the install hint for a missing extra."""

from __future__ import annotations

import json
from typing import NoReturn

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
