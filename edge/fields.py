"""Typed settings: a dataclass field with its description and bounds, and the check of one value.

Shared by :mod:`edge.config` and :mod:`edge.events.settings` (which :mod:`edge.config` imports), so
that every section validates alike: the message quotes the bad value and says what was expected.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import field
from typing import Any

from edge import bounded
from edge.errors import ConfigError

# Integers without a stated maximum still fit the C types they end in (cv2 properties, sizes).
INT_LIMIT = 2 ** 62


def setting(default: Any, help: str, *, choices: tuple | None = None, minimum: float | None = None,
            maximum: float | None = None) -> Any:
    """A configuration field with its description and constraints."""
    meta = {"help": help, "choices": choices, "minimum": minimum, "maximum": maximum}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def check_value(section: str, f: dataclasses.Field, hint: Any, value: Any) -> Any:
    where = f"{section}.{f.name}"
    origin = typing.get_origin(hint) or hint
    if origin is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} = {value!r} is not a boolean", "use true or false")
    elif origin is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} = {bounded.show(value)} is not an integer")
        if abs(value) > INT_LIMIT:
            raise ConfigError(f"{where} = {bounded.show(value)} is out of range (at most {INT_LIMIT})")
    elif origin is float:
        value = finite(where, value)
    elif origin is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} = {bounded.show(value)} is not a string")
        if "\0" in value:
            raise ConfigError(f"{where} = {bounded.show(value)} contains a NUL character")
    elif origin is tuple:
        value = numbers(where, value)
    elif origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} = {value!r} is not a list of strings")
    meta = f.metadata
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"{where} = {value!r} is not one of {', '.join(meta['choices'])}")
    if meta.get("minimum") is not None and value < meta["minimum"]:
        raise ConfigError(f"{where} = {value!r} is below the minimum {meta['minimum']}")
    if meta.get("maximum") is not None and value > meta["maximum"]:
        raise ConfigError(f"{where} = {value!r} is above the maximum {meta['maximum']}")
    return value


def finite(where: str, value: Any) -> float:
    """A finite float: NaN compares false with every bound and would pass them silently."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where} = {bounded.show(value)} is not a number")
    try:
        value = float(value)
    except OverflowError:           # an integer beyond the float range
        raise ConfigError(f"{where} = {bounded.show(value)} is out of range") from None
    if not math.isfinite(value):
        raise ConfigError(f"{where} = {value!r} is not a finite number", "give a number, not nan or inf")
    return value


def numbers(where: str, value: Any) -> tuple[float, ...]:
    """One number or three (per channel): from TOML a number or a list, from a flag "127.5" or "1,2,3"."""
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else [value]
    try:
        numbers = tuple(float(v) for v in items if not isinstance(v, bool))
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{where} = {bounded.show(value)} is not a number or a list of 3 numbers") from None
    if len(numbers) != len(items) or len(numbers) not in (0, 1, 3) or not all(math.isfinite(v) for v in numbers):
        raise ConfigError(f"{where} = {bounded.show(value)} is not one finite number or three (R, G, B)")
    return numbers
