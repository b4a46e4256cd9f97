"""Form and query values read strictly: one spelling set for booleans everywhere (query strings, multipart
fields), and anything else refused with 422 instead of being read as true or false by accident."""

from __future__ import annotations

from .errors import ApiError

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


def flag(value, name: str, default: bool = False) -> bool:
    """'true'/'1'/'yes'/'on' -> True, 'false'/'0'/'no'/'off' -> False (any case, surrounding spaces ignored);
    absent or empty -> default; anything else -> 422 naming the accepted forms."""
    if value is None:
        return default
    if not isinstance(value, str):  # e.g. a file uploaded under a flag's name
        raise ApiError(422, f"{name} must be a boolean (true/false, 1/0, yes/no, on/off), got a {type(value).__name__}")
    v = value.strip().lower()
    if not v:
        return default
    if v in TRUE:
        return True
    if v in FALSE:
        return False
    raise ApiError(422, f"{name} must be a boolean (true/false, 1/0, yes/no, on/off), got {value[:100]!r}")
