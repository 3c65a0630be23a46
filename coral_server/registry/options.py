"""Validation of requested option values against a manifest, and their env/file encoding."""

from __future__ import annotations

import base64
import os
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from coral_server.registry.errors import FieldError, OptionsInvalid
from coral_server.registry.manifest import AgentManifest, OptionSpec
from coral_server.registry.values import FLOAT_TYPES, INT_RANGES, canonical_type, check_value, json_type_name

__all__ = [
    "FILE_SUFFIX",
    "SECRET_MASK",
    "OptionEnvironment",
    "ResolvedOption",
    "encode_env_value",
    "encode_file_value",
    "materialize",
    "public_value",
    "public_values",
    "resolve_options",
]

SECRET_MASK = "***"
FILE_SUFFIX = ".car"
_STRUCT_FORMATS = {
    "i8": ">b",
    "i16": ">h",
    "i32": ">i",
    "i64": ">q",
    "u8": ">B",
    "u16": ">H",
    "u32": ">I",
    "u64": ">Q",
    "f32": ">f",
    "f64": ">d",
}


@dataclass(frozen=True, slots=True)
class ResolvedOption:
    """An option's final value: typed (int/float/bool/str/bytes, or a list of those)."""

    name: str
    spec: OptionSpec
    value: object

    def __repr__(self) -> str:
        shown = SECRET_MASK if self.spec.secret else repr(self.value)
        return f"ResolvedOption(name={self.name!r}, type={self.spec.type!r}, value={shown})"


@dataclass(slots=True)
class OptionEnvironment:
    """What an agent process receives: env variables, the option files written, secrets to redact."""

    env: dict[str, str] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    secret_values: set[str] = field(default_factory=set)

    def __repr__(self) -> str:
        return (
            f"OptionEnvironment(env={sorted(self.env)!r}, files={len(self.files)}, "
            f"secret_values={len(self.secret_values)})"
        )


def resolve_options(
    manifest: AgentManifest, requested: Mapping[str, object], path_prefix: str = "options"
) -> list[ResolvedOption]:
    """Validate ``requested`` (``{NAME: {"type": t, "value": v}}`` or ``{NAME: v}``) against the manifest.

    Returns the resolved options in manifest order (request value, else default; list options
    without either resolve to ``[]``; others without either are left out). Raises one
    ``OptionsInvalid`` carrying every problem found.
    """
    if not isinstance(requested, Mapping):
        raise OptionsInvalid(
            [FieldError(path_prefix, f"expected an object, got {json_type_name(requested)}")]
        )
    errors: list[FieldError] = []
    for key in requested:
        if key not in manifest.options:
            errors.append(
                FieldError(
                    f"{path_prefix}.{key}",
                    f"unknown option: agent {manifest.identifier} has no option {key!r}",
                )
            )

    resolved: list[ResolvedOption] = []
    for name, spec in manifest.options.items():
        base = f"{path_prefix}.{name}"
        value: object = None
        if name in requested:
            value, ok = _unwrap(requested[name], spec, base, errors)
            if not ok:
                continue
        if value is None:
            if spec.default is not None:
                default = list(spec.default) if isinstance(spec.default, list) else spec.default
                resolved.append(ResolvedOption(name, spec, default))
            elif spec.required:
                errors.append(FieldError(f"{base}.value", "missing value for required option"))
            elif spec.is_list:
                resolved.append(ResolvedOption(name, spec, []))
            continue
        typed, problems = check_value(
            spec.type, value, f"{base}.value", secret=spec.secret, validation=spec.validation
        )
        problems = problems or _untransportable(spec, typed, f"{base}.value")
        if problems:
            errors.extend(problems)
        else:
            resolved.append(ResolvedOption(name, spec, typed))
    if errors:
        raise OptionsInvalid(errors)
    return resolved


def _untransportable(spec: OptionSpec, value: object, path: str) -> list[FieldError]:
    """Text an environment variable cannot carry: a NUL byte (the C environment ends strings there)."""
    if spec.transport != "env" or spec.item_type != "string" or spec.base64:
        return []
    if isinstance(value, list):
        items = [(f"{path}[{i}]", item) for i, item in enumerate(value)]
    else:
        items = [(path, value)]
    return [
        FieldError(
            where, "must not contain a NUL character (the option is passed in an environment variable)"
        )
        for where, item in items
        if isinstance(item, str) and "\0" in item
    ]


def _unwrap(entry: object, spec: OptionSpec, base: str, errors: list[FieldError]) -> tuple[object, bool]:
    """Extract the raw value from a request entry; ``(value, False)`` if the entry is unusable."""
    if not (isinstance(entry, Mapping) and ("value" in entry or "type" in entry)):
        return entry, True
    declared = entry.get("type")
    if declared is not None:
        canonical = canonical_type(declared) if isinstance(declared, str) else None
        if canonical is None or canonical[0] != spec.type:
            errors.append(
                FieldError(
                    f"{base}.type", f"declared type {declared!r} does not match the option type {spec.type!r}"
                )
            )
            return None, False
    return entry.get("value"), True


# -- encoding --------------------------------------------------------------------------------------


def encode_env_value(type_: str, value: object, base64_text: bool = False) -> str:
    """The environment-variable text of one scalar value of canonical type ``type_``."""
    if type_ == "bool":
        return "1" if value else "0"
    if type_ in INT_RANGES:
        assert isinstance(value, int)
        return str(value)
    if type_ in FLOAT_TYPES:
        assert isinstance(value, int | float)
        return repr(float(value))
    if type_ == "blob":
        assert isinstance(value, bytes)
        return base64.b64encode(value).decode("ascii")
    assert isinstance(value, str)
    return base64.b64encode(value.encode("utf-8")).decode("ascii") if base64_text else value


def encode_file_value(type_: str, value: object) -> bytes:
    """The ``.car`` file contents of one scalar value: UTF-8, one byte, big-endian binary or raw bytes."""
    if type_ == "bool":
        return b"\x01" if value else b"\x00"
    if type_ in _STRUCT_FORMATS:
        return struct.pack(_STRUCT_FORMATS[type_], value)
    if type_ == "blob":
        assert isinstance(value, bytes)
        return bytes(value)
    assert isinstance(value, str)
    return value.encode("utf-8")


def _items(opt: ResolvedOption) -> list[object]:
    if opt.spec.is_list:
        assert isinstance(opt.value, list)
        return list(opt.value)
    return [opt.value]


def _write_file(file_dir: Path, name: str, data: bytes) -> Path:
    fd, raw_path = tempfile.mkstemp(prefix=f"{name}-", suffix=FILE_SUFFIX, dir=file_dir)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    except BaseException:
        Path(raw_path).unlink(missing_ok=True)
        raise
    return Path(raw_path)


def materialize(options: list[ResolvedOption], file_dir: Path) -> OptionEnvironment:
    """Encode resolved options: env transport into variables, fs transport into 0600 files in ``file_dir``."""
    out = OptionEnvironment()
    try:
        for opt in options:
            item_type = opt.spec.item_type
            items = _items(opt)
            env_texts = [encode_env_value(item_type, item, opt.spec.base64) for item in items]
            if opt.spec.transport == "fs":
                paths: list[Path] = []
                for item in items:
                    file_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                    path = _write_file(file_dir, opt.name, encode_file_value(item_type, item))
                    out.files.append(path)
                    paths.append(path)
                out.env[opt.name] = ":".join(str(p) for p in paths)
            else:
                out.env[opt.name] = ",".join(env_texts)
            if opt.spec.secret:
                for item, text in zip(items, env_texts, strict=True):
                    out.secret_values.add(text)
                    if isinstance(item, str):
                        out.secret_values.add(item)
                if opt.spec.transport == "env":
                    out.secret_values.add(out.env[opt.name])
    except BaseException:
        for path in out.files:
            path.unlink(missing_ok=True)
        raise
    out.secret_values.discard("")
    return out


def _public(value: object) -> object:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, list):
        return [_public(v) for v in value]
    return value


def public_value(opt: ResolvedOption) -> object:
    """What may be shown in session state: ``"***"`` for secrets, else the value (blobs as base64)."""
    if opt.spec.secret:
        return SECRET_MASK
    return _public(opt.value)


def public_values(options: list[ResolvedOption]) -> dict[str, object]:
    """``{name: public_value}`` for a list of resolved options."""
    return {opt.name: public_value(opt) for opt in options}
