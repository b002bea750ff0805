"""The JSON Schemas shipped with the package, and checks against them."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator

SCHEMA_FILES = {
    "deals": "deals.schema.json",
    "snapshot": "snapshot.schema.json",
    "plan": "plan.schema.json",
}


@cache
def load_schema(kind: str) -> dict[str, Any]:
    """Read one of the shipped schemas from the installed package."""
    path = resources.files("reconciler").joinpath("schemas", SCHEMA_FILES[kind])
    document: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return document


@cache
def _validator(kind: str) -> Draft202012Validator:
    return Draft202012Validator(load_schema(kind))


def iter_problems(kind: str, data: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """Every schema violation as (path to the value, message), in path order."""
    errors = _validator(kind).iter_errors(data)
    found = [(tuple(error.absolute_path), error.message) for error in errors]
    return sorted(found, key=lambda item: [str(part) for part in item[0]])


def validate_document(kind: str, data: Any) -> list[str]:
    """Schema violations as readable strings, each led by its JSON path."""
    return [
        f"{_json_path(path)}: {message}" for path, message in iter_problems(kind, data)
    ]


def _json_path(path: tuple[str | int, ...]) -> str:
    text = "$"
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text
