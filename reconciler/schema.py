"""The JSON Schemas shipped with the package, and checks against them."""

from __future__ import annotations

import copy
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
    if kind == "deals-document":
        # The file's own structure; each deal is checked by the "deal" part.
        schema = copy.deepcopy(load_schema("deals"))
        schema["properties"]["deals"]["additionalProperties"] = True
        return Draft202012Validator(schema)
    if kind == "deal":
        schema = load_schema("deals")
        return Draft202012Validator(
            {**schema["$defs"]["deal"], "$defs": schema["$defs"]}
        )
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


def iter_desired_problems(data: Any) -> list[SchemaProblem]:
    """The deals schema, checking each distinct deal shape only once.

    A deal's problems depend on its property names and the types of its
    values, never on the values themselves, so deals that share a shape share
    their problems. On 100,000 deals this turns minutes into a fraction of a
    second while the shipped schema stays the one source of the rules.
    """
    found = iter_problems("deals-document", data)
    deals = data.get("deals") if isinstance(data, dict) else None
    if not isinstance(deals, dict):
        return found
    known: dict[Any, list[SchemaProblem]] = {}
    for deal_id, deal in deals.items():
        shape = _shape(deal)
        if shape not in known:
            known[shape] = iter_problems("deal", deal)
        for problem in known[shape]:
            path = ("deals", deal_id, *problem.path)
            found.append(
                SchemaProblem(path, problem.message, problem.rule, problem.key)
            )
    return found


def _shape(value: Any) -> Any:
    if isinstance(value, dict):
        return ("dict", tuple((key, _shape(item)) for key, item in value.items()))
    if isinstance(value, list):
        return ("list", tuple(_shape(item) for item in value))
    return type(value).__name__


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
