"""Writes (or checks) `schemas/`: the JSON Schema of every request and response body."""

from __future__ import annotations

from pathlib import Path

import orjson
from pydantic import TypeAdapter

from coral_server.api.models import REQUEST_MODELS, RESPONSE_MODELS
from coral_server.api.openapi import build_openapi

SCHEMA_DIR = Path(__file__).resolve().parent.parent.parent / "schemas"


def render() -> dict[str, bytes]:
    """File name -> exact bytes of every generated schema file."""
    files: dict[str, bytes] = {}
    for name, model in {**REQUEST_MODELS, **RESPONSE_MODELS}.items():
        schema = TypeAdapter(model).json_schema()
        files[f"{name}.json"] = (
            orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        )
    files["openapi.json"] = (
        orjson.dumps(build_openapi(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    )
    return files


def stale(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of files that are missing, different, or no longer generated."""
    wanted = render()
    problems = [
        n
        for n, data in wanted.items()
        if not (directory / n).exists() or (directory / n).read_bytes() != data
    ]
    problems += [p.name for p in directory.glob("*.json") if p.name not in wanted]
    return sorted(problems)


def write(directory: Path = SCHEMA_DIR) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    wanted = render()
    for old in directory.glob("*.json"):
        if old.name not in wanted:
            old.unlink()
    for name, data in wanted.items():
        (directory / name).write_bytes(data)
