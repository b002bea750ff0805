"""The JSON Schemas shipped with the package, and checks against them."""

from __future__ import annotations

import json
from dataclasses import dataclass
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
    path = (
        resources.files("reconciler").joinpath("schemas").joinpath(SCHEMA_FILES[kind])
    )
    document: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return document


@cache
def _validator(kind: str) -> Draft202012Validator:
    return Draft202012Validator(load_schema(kind))


@dataclass(frozen=True)
class SchemaProblem:
    """One violation: where (the JSON path, and the key at fault if any) and why."""

    path: tuple[str | int, ...]
    message: str
    rule: str
    key: str | None = None


def iter_problems(kind: str, data: Any) -> list[SchemaProblem]:
    """Every schema violation, one per offending key, in path order."""
    found: list[SchemaProblem] = []
    for error in _validator(kind).iter_errors(data):
        path = tuple(error.absolute_path)
        rule = str(error.validator)
        if "propertyNames" in error.relative_schema_path:
            rule = "propertyNames"
        if rule == "additionalProperties" and isinstance(error.instance, dict):
            allowed = error.schema.get("properties", {})
            for key in error.instance:
                if key not in allowed:
                    found.append(
                        SchemaProblem(path, f"unexpected key {key!r}", rule, key)
                    )
        elif rule == "propertyNames":
            found.append(SchemaProblem(path, error.message, rule, str(error.instance)))
        else:
            found.append(SchemaProblem(path, error.message, rule))
    return sorted(found, key=lambda p: ([str(part) for part in p.path], p.key or ""))


def validate_document(kind: str, data: Any) -> list[str]:
    """Schema violations as readable strings, each led by its JSON path."""
    return [
        f"{_json_path(problem.path)}: {problem.message}"
        for problem in iter_problems(kind, data)
    ]


def _json_path(path: tuple[str | int, ...]) -> str:
    text = "$"
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text
