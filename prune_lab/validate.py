"""One way to check a setting's type: `check_fields` reads a dataclass's annotations and refuses what does not fit.

YAML and the command line happily give `true` where a number was meant; Python then takes True as 1.
Every numeric setting here refuses booleans, every boolean refuses anything but a boolean, and the
message names the key and an example of what to write.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Union

from prune_lab.errors import UserError

_EXAMPLES = {int: "a whole number, e.g. 10", float: "a number, e.g. 0.01", bool: "true or false", str: "a word"}


def _kinds(annotation: Any) -> tuple[type, ...] | None:
    """The plain types a field may hold (None inside if it may be null), or None when not a plain type."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        parts = [_kinds(a) for a in typing.get_args(annotation)]
        if any(p is None for p in parts):
            return None
        return tuple(k for p in parts for k in p)  # type: ignore[union-attr]
    if annotation is type(None):
        return (type(None),)
    if annotation in (int, float, bool, str):
        return (annotation,)
    return None


def check_value(value: Any, kinds: tuple[type, ...], key: str) -> Any:
    """`value` if it is one of `kinds` (an int counts as a float, a bool as nothing but a bool), else UserError."""
    if value is None and type(None) in kinds:
        return value
    if isinstance(value, bool):
        ok = bool in kinds
    elif isinstance(value, int):
        ok = int in kinds or float in kinds
    elif isinstance(value, float):
        ok = float in kinds and math.isfinite(value)
    else:
        ok = any(isinstance(value, k) for k in kinds if k is not type(None))
    if not ok:
        wanted = " or ".join(_EXAMPLES.get(k, k.__name__) for k in kinds if k is not type(None))
        if type(None) in kinds:
            wanted += " (or null)"
        raise UserError(f"{key}={value!r} must be {wanted}")
    return float(value) if float in kinds and int not in kinds and isinstance(value, int) else value


def check_fields(obj: Any, prefix: str) -> None:
    """Check every plain-typed field of dataclass `obj` against its annotation (`prefix.field` in messages).

    Fields typed int/float/bool/str (or unions of them with None) are checked; other fields (callables,
    nested objects, containers) are left to their own checks. A float field given an int becomes a float.
    """
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        kinds = _kinds(hints.get(f.name))
        if kinds is None:
            continue
        value = check_value(getattr(obj, f.name), kinds, f"{prefix}.{f.name}" if prefix else f.name)
        object.__setattr__(obj, f.name, value)


def check_range(value: float, key: str, low: float | None = None, high: float | None = None,
                example: str = "") -> None:
    """`low <= value <= high`, else one line that names the key and the range."""
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise UserError(f"{key}={value!r} must be in {bounds}{', e.g. ' + example if example else ''}")
