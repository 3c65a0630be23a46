"""Option types of the manifest format and checking of single values against them."""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping

from coral_server.registry.errors import FieldError

__all__ = [
    "FLOAT_TYPES",
    "INT_RANGES",
    "SCALAR_TYPES",
    "canonical_type",
    "check_value",
    "is_list_type",
    "item_type",
    "json_type_name",
]

INT_RANGES: dict[str, tuple[int, int]] = {
    "i8": (-(2**7), 2**7 - 1),
    "i16": (-(2**15), 2**15 - 1),
    "i32": (-(2**31), 2**31 - 1),
    "i64": (-(2**63), 2**63 - 1),
    "u8": (0, 2**8 - 1),
    "u16": (0, 2**16 - 1),
    "u32": (0, 2**32 - 1),
    "u64": (0, 2**64 - 1),
}
FLOAT_TYPES = ("f32", "f64")
SCALAR_TYPES: tuple[str, ...] = ("string", "bool", "blob", *INT_RANGES, *FLOAT_TYPES)
F32_MAX = 3.4028234663852886e38

# Legacy spellings: name -> (canonical type, implies secret)
_ALIASES: dict[str, tuple[str, bool]] = {"number": ("f64", False), "secret": ("string", True)}


def _canonical_scalar(raw: str) -> tuple[str, bool] | None:
    raw = raw.strip()
    if raw in SCALAR_TYPES:
        return raw, False
    return _ALIASES.get(raw)


def canonical_type(raw: str) -> tuple[str, bool] | None:
    """Map a declared type to ``(canonical type, implies secret)``; ``None`` if unknown.

    ``number`` is ``f64``, ``secret`` is a ``string`` flagged secret, ``list[x]`` lists any scalar.
    """
    text = raw.strip()
    if text.startswith("list[") and text.endswith("]"):
        inner = _canonical_scalar(text[5:-1])
        if inner is None:
            return None
        return f"list[{inner[0]}]", inner[1]
    return _canonical_scalar(text)


def is_list_type(type_: str) -> bool:
    return type_.startswith("list[")


def item_type(type_: str) -> str:
    """The scalar type of a list type's items, or the type itself for scalars."""
    return type_[5:-1] if is_list_type(type_) else type_


def json_type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes):
        return "bytes"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _show(value: object, secret: bool) -> str:
    """How a value may appear in an error message: never for secrets."""
    if secret:
        return "the value"
    if isinstance(value, bytes):
        return f"{len(value)} bytes"
    return repr(value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_value(
    type_: str,
    value: object,
    path: str,
    *,
    secret: bool = False,
    validation: Mapping[str, object] | None = None,
) -> tuple[object, list[FieldError]]:
    """Check a JSON/TOML value against a canonical type and validation rules.

    Returns the typed value (``bytes`` for blobs, ``float`` for f32/f64, lists for list types)
    and the problems found; the value is meaningless when problems are returned.
    """
    if not is_list_type(type_):
        return _check_scalar(type_, value, path, secret, validation)
    if not isinstance(value, list | tuple):
        return None, [
            FieldError(path, f"expected an array of {item_type(type_)}, got {json_type_name(value)}")
        ]
    items: list[object] = []
    errors: list[FieldError] = []
    for index, raw in enumerate(value):
        typed, problems = _check_scalar(item_type(type_), raw, f"{path}[{index}]", secret, validation)
        items.append(typed)
        errors.extend(problems)
    return items, errors


def _check_scalar(
    type_: str, value: object, path: str, secret: bool, validation: Mapping[str, object] | None
) -> tuple[object, list[FieldError]]:
    def fail(message: str) -> tuple[object, list[FieldError]]:
        return None, [FieldError(path, message)]

    typed: object
    if type_ == "string":
        if not isinstance(value, str):
            return fail(f"expected a string, got {json_type_name(value)}")
        typed = value
    elif type_ == "bool":
        if not isinstance(value, bool):
            return fail(f"expected a boolean, got {json_type_name(value)}")
        typed = value
    elif type_ in INT_RANGES:
        if not isinstance(value, int) or isinstance(value, bool):
            return fail(f"expected an integer ({type_}), got {json_type_name(value)}")
        low, high = INT_RANGES[type_]
        if not low <= value <= high:
            return fail(f"{_show(value, secret)} is out of range for {type_} ({low}..{high})")
        typed = value
    elif type_ in FLOAT_TYPES:
        if not _is_number(value):
            return fail(f"expected a number ({type_}), got {json_type_name(value)}")
        assert isinstance(value, int | float)
        try:
            number = float(value)
        except OverflowError:
            return fail(f"{_show(value, secret)} is out of range for {type_}")
        if not math.isfinite(number):
            return fail(f"expected a finite number ({type_})")
        if type_ == "f32" and abs(number) > F32_MAX:
            return fail(f"{_show(value, secret)} is out of range for f32")
        typed = number
    elif type_ == "blob":
        if isinstance(value, bytes):
            typed = value
        elif isinstance(value, str):
            try:
                typed = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                return fail("expected standard base64 data for a blob")
        else:
            return fail(f"expected a base64 string for a blob, got {json_type_name(value)}")
    else:
        return fail(f"unsupported option type {type_!r}")
    errors = _check_rules(type_, typed, path, secret, validation) if validation else []
    return typed, errors


def _check_rules(
    type_: str, value: object, path: str, secret: bool, rules: Mapping[str, object]
) -> list[FieldError]:
    errors: list[FieldError] = []
    shown = _show(value, secret)
    if isinstance(value, int | float) and not isinstance(value, bool):
        low, high = rules.get("min"), rules.get("max")
        if _is_number(low) and value < low:  # type: ignore[operator]
            errors.append(FieldError(path, f"{shown} is below the minimum {low}"))
        if _is_number(high) and value > high:  # type: ignore[operator]
            errors.append(FieldError(path, f"{shown} is above the maximum {high}"))
    if isinstance(value, str):
        min_length, max_length = rules.get("min_length"), rules.get("max_length")
        if isinstance(min_length, int) and len(value) < min_length:
            errors.append(FieldError(path, f"must be at least {min_length} characters long"))
        if isinstance(max_length, int) and len(value) > max_length:
            errors.append(FieldError(path, f"must be at most {max_length} characters long"))
        pattern = rules.get("regex")
        if isinstance(pattern, str):
            try:
                matched = re.fullmatch(pattern, value) is not None
            except re.error:
                matched = False
            if not matched:
                errors.append(FieldError(path, f"{shown} does not match the pattern {pattern!r}"))
    if isinstance(value, bytes):
        min_size, max_size = rules.get("min_size"), rules.get("max_size")
        if isinstance(min_size, int) and len(value) < min_size:
            errors.append(FieldError(path, f"blob must be at least {min_size} bytes"))
        if isinstance(max_size, int) and len(value) > max_size:
            errors.append(FieldError(path, f"blob must be at most {max_size} bytes"))
    variants = rules.get("variants")
    if isinstance(variants, list | tuple):
        allowed = list(variants)
        if type_ == "blob":
            allowed = [_maybe_b64(v) for v in allowed]
        if not any(v == value and isinstance(v, bool) == isinstance(value, bool) for v in allowed):
            listed = "" if secret else f": {', '.join(repr(v) for v in variants)}"
            errors.append(FieldError(path, f"{shown} is not one of the allowed values{listed}"))
    return errors


def _maybe_b64(value: object) -> object:
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return value
    return value
