"""Property definitions, pipelines, and the wire formats HubSpot expects.

Values travel to HubSpot as strings: numbers as plain decimals, ``date`` as
epoch milliseconds at midnight UTC, ``datetime`` as epoch milliseconds,
multi-select as ``a;b`` and bool as ``true``/``false``.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

from reconciler.errors import Finding, InvalidInputError, Location

MS_PER_DAY = 86_400_000
MAX_OFFSET = timedelta(hours=14)
# Significant digits that always round-trip through a binary double.
FLOAT_DIGITS = 17
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MIN_MILLIS = (datetime(1, 1, 1, tzinfo=timezone.utc) - EPOCH) // timedelta(
    milliseconds=1
)
MAX_MILLIS = (datetime.max.replace(tzinfo=timezone.utc) - EPOCH) // timedelta(
    milliseconds=1
)
PLAIN_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?")
# Unquoted numbers: YAML 1.2 decimal integers, and floats with a decimal point.
# An exponent without a point (1e-14) stays text, as YAML 1.1 tools read it,
# and is refused for number properties rather than guessed at.
YAML_INT = re.compile(r"[-+]?[0-9]+")
YAML_FLOAT = re.compile(r"[-+]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")
ISO_TIMESTAMP = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{1,2})-(?P<day>[0-9]{1,2})"
    r"(?:(?:[Tt]|[ \t]+)(?P<hour>[0-9]{1,2}):(?P<minute>[0-9]{2})"
    r"(?::(?P<second>[0-9]{2})(?:[.,](?P<fraction>[0-9]+))?)?"
    r"[ \t]*(?P<offset>[Zz]|[-+][0-9]{1,2}(?::?[0-9]{2})?)?)?"
)
CHECKBOX = "checkbox"


@dataclass(frozen=True)
class Option:
    value: str
    label: str


@dataclass(frozen=True)
class PropertyDefinition:
    """What HubSpot says about one deal property."""

    name: str
    type: str
    field_type: str
    label: str = ""
    options: tuple[Option, ...] = ()
    read_only: bool = False
    calculated: bool = False
    external_options: bool = False

    @property
    def multi_select(self) -> bool:
        return self.type == "enumeration" and self.field_type == CHECKBOX

    def option_values(self) -> set[str]:
        return {option.value for option in self.options}


@dataclass(frozen=True)
class Stage:
    id: str
    label: str


@dataclass(frozen=True)
class Pipeline:
    id: str
    label: str
    stages: tuple[Stage, ...]

    def stage_ids(self) -> set[str]:
        return {stage.id for stage in self.stages}


@dataclass(frozen=True)
class Definitions:
    """Property definitions and deal pipelines, from one source each."""

    properties: Mapping[str, PropertyDefinition]
    pipelines: Mapping[str, Pipeline]
    properties_source: str = "the standard deal properties"
    pipelines_source: str = "the default pipeline"


# --- loading ---------------------------------------------------------------


def parse_definitions(data: Any, source: str) -> dict[str, PropertyDefinition]:
    """Read a v1 bare array or a v3 ``{"results": [...]}`` of definitions."""
    items = data.get("results") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise _bad_file(source, "expected a JSON array or an object with 'results'")
    definitions: dict[str, PropertyDefinition] = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise _bad_file(source, "every property definition needs a 'name'")
        definition = _definition_from_json(item)
        definitions[definition.name] = definition
    return definitions


def _definition_from_json(item: dict[str, Any]) -> PropertyDefinition:
    metadata = item.get("modificationMetadata") or {}
    read_only = bool(item.get("readOnlyValue") or metadata.get("readOnlyValue"))
    options = tuple(
        Option(str(option.get("value", "")), str(option.get("label", "")))
        for option in item.get("options") or []
        if isinstance(option, dict) and not option.get("hidden", False)
    )
    return PropertyDefinition(
        name=item["name"],
        type=str(item.get("type") or ""),
        field_type=str(item.get("fieldType") or "text"),
        label=str(item.get("label") or ""),
        options=options,
        read_only=read_only,
        calculated=bool(item.get("calculated")),
        external_options=bool(item.get("externalOptions")),
    )


def parse_pipelines(data: Any, source: str) -> dict[str, Pipeline]:
    """Read v3 (``id``/``stages[].id``) or v1 (``pipelineId``/``stageId``)."""
    items = data.get("results") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise _bad_file(source, "expected an object with 'results' (pipelines)")
    pipelines: dict[str, Pipeline] = {}
    for item in items:
        if not isinstance(item, dict) or item.get("archived") is True:
            continue
        pipeline_id = str(item.get("id") or item.get("pipelineId") or "")
        stages = tuple(
            Stage(str(stage.get("id") or stage.get("stageId")), str(stage["label"]))
            for stage in item.get("stages") or []
            if isinstance(stage, dict)
            and stage.get("archived") is not True
            and stage.get("active") is not False
        )
        pipelines[pipeline_id] = Pipeline(pipeline_id, str(item.get("label")), stages)
    return pipelines


def load_json_file(path: Path) -> Any:
    """Read a JSON file, turning OS and syntax errors into findings."""
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except OSError as error:
        raise _bad_file(str(path), f"cannot read: {error.strerror}") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        line = getattr(error, "lineno", 1)
        column = getattr(error, "colno", 1)
        finding = Finding(
            Location(str(path), line, column), f"not valid JSON: {error}", "json"
        )
        raise InvalidInputError([finding]) from error


def load_definitions(path: Path | None) -> dict[str, PropertyDefinition]:
    """Definitions from a file, or the standard deal properties when ``None``."""
    if path is None:
        return parse_definitions(_packaged("deal_properties.json"), "package")
    return parse_definitions(load_json_file(path), str(path))


def load_pipelines(path: Path | None) -> dict[str, Pipeline]:
    """Pipelines from a file, or HubSpot's default sales pipeline when ``None``."""
    if path is None:
        return parse_pipelines(_packaged("deal_pipelines.json"), "package")
    return parse_pipelines(load_json_file(path), str(path))


def _packaged(name: str) -> Any:
    text = (
        resources.files("reconciler").joinpath("data").joinpath(name).read_text("utf-8")
    )
    return json.loads(text)


def _bad_file(source: str, message: str) -> InvalidInputError:
    return InvalidInputError([Finding(Location(source, 1, 1), message, "format")])


# --- desired values to wire values ----------------------------------------


class Scalar(NamedTuple):
    """A scalar as written in YAML: its text and whether it was quoted."""

    text: str
    plain: bool
    location: Location

    def is_null(self) -> bool:
        return self.plain and self.text in ("", "~", "null", "Null", "NULL")


class ValueProblem(Exception):
    """A desired value that cannot be sent for its property."""


def known_type(definition: PropertyDefinition) -> bool:
    """Whether values of this property's type can be checked and converted."""
    return definition.type in _CONVERTERS


def to_wire(definition: PropertyDefinition, value: Scalar | list[Scalar]) -> str:
    """The string HubSpot should receive, or raise ValueProblem saying why not.

    An empty string means "clear the value"; HubSpot clears on ``""``.
    """
    if isinstance(value, Scalar) and (value.is_null() or value.text == ""):
        return ""
    if definition.multi_select:
        return _multi_select_wire(definition, value)
    if isinstance(value, list):
        raise ValueProblem(
            f"{definition.name} ({definition.type}) takes one value, not a list"
            " (only multi-select checkbox properties take lists)"
        )
    return _CONVERTERS[definition.type](definition, value)


def _string_wire(definition: PropertyDefinition, value: Scalar) -> str:
    # Control characters (other than tab and line breaks) and lone surrogates
    # cannot be stored; every other character, spaces of any kind included, is
    # text a person could mean.
    bad = [
        char
        for char in value.text
        if unicodedata.category(char) in ("Cc", "Cs") and char not in "\t\n\r"
    ]
    if bad:
        raise ValueProblem(f"contains the control character {bad[0]!r}")
    return value.text


def _number_wire(definition: PropertyDefinition, value: Scalar) -> str:
    text = value.text.strip()
    number = _plain_number(text) if value.plain else None
    if number is None and PLAIN_DECIMAL.fullmatch(text):
        number = Decimal(text)
    if number is None:
        raise ValueProblem(_number_complaint(text))
    wire = format(number, "f")
    return wire[1:] if wire.startswith("-") and number.is_zero() else wire


def _plain_number(text: str) -> Decimal | None:
    # An unquoted YAML int or float with a decimal point is read exactly,
    # never through a binary float, so money keeps every digit.
    if not (YAML_INT.fullmatch(text) or YAML_FLOAT.fullmatch(text)):
        return None
    if re.match(r"[-+]?0[0-9]", text):
        # YAML 1.1 tools read 010 as octal 8, YAML 1.2 as 10: refuse to guess.
        raise ValueProblem(
            f"{text} has a leading zero, which YAML 1.1 reads as octal; write"
            f" {format(Decimal(text), 'f')} (or quote it if it is a code)"
        )
    return Decimal(text)


def _number_complaint(text: str) -> str:
    lowered = text.lower()
    if lowered.lstrip("+-.") in ("nan", "inf", "infinity"):
        return f"{text!r} is not a finite number; HubSpot accepts plain decimals only"
    if re.search(r"[$€£¥]|[A-Z]{3}", text):
        return f"{text!r} has a currency sign or code; write only the number"
    if "," in text:
        return (
            f"{text!r} has a thousands separator or decimal comma;"
            " write a plain decimal such as 1000.50"
        )
    if re.fullmatch(r"[-+]?[0-9.]+[eE][-+]?[0-9]+", text):
        return (
            f"{text!r} is in exponent notation, which HubSpot rejects;"
            f" write it as the plain decimal {format(Decimal(text), 'f')}"
        )
    return f"{text!r} is not a number; write a plain decimal such as 1500 or 0.25"


def _bool_wire(definition: PropertyDefinition, value: Scalar) -> str:
    lowered = value.text.strip().lower()
    if lowered in ("true", "false"):
        return lowered
    hint = ""
    if lowered in ("yes", "no", "on", "off", "y", "n"):
        hint = f" ({value.text!r} is a string in YAML 1.2)"
    raise ValueProblem(f"bool property takes true or false, not {value.text!r}{hint}")


def _date_wire(definition: PropertyDefinition, value: Scalar) -> str:
    text = value.text.strip()
    if text.isdigit() or (text.startswith("-") and text[1:].isdigit()):
        millis = _epoch_millis(text, "date")
        if millis % MS_PER_DAY:
            raise ValueProblem(
                f"{text} is at {_time_of_day(millis)} UTC, not midnight; a date is"
                " epoch milliseconds at midnight UTC or YYYY-MM-DD"
            )
        return str(millis)
    match = ISO_TIMESTAMP.fullmatch(text)
    if match is None:
        raise ValueProblem(f"{text!r} is not a date; write YYYY-MM-DD")
    if match["hour"] is not None:
        clock = text[match.start("hour") :]
        raise ValueProblem(
            f"date property given a time of day ({clock.strip()}); only a calendar"
            " date (YYYY-MM-DD) or a midnight-UTC epoch-ms value is allowed"
        )
    return str(_date_millis(match, text))


def _datetime_wire(definition: PropertyDefinition, value: Scalar) -> str:
    text = value.text.strip()
    if text.isdigit() or (text.startswith("-") and text[1:].isdigit()):
        return str(_epoch_millis(text, "datetime"))
    match = ISO_TIMESTAMP.fullmatch(text)
    if match is None:
        raise ValueProblem(
            f"{text!r} is not a date-time; write ISO 8601 with an offset,"
            " such as 2027-03-31T09:30:00Z, or epoch milliseconds"
        )
    if match["hour"] is None:
        return str(_date_millis(match, text))
    if match["offset"] is None:
        raise ValueProblem(
            f"{text!r} has no UTC offset, so its instant depends on the machine's"
            " time zone; add Z or an offset such as +02:00"
        )
    return str(_timestamp_millis(match, text))


def _epoch_millis(text: str, kind: str) -> int:
    millis, digits = int(text), len(text.lstrip("-"))
    compact = re.fullmatch(r"([0-9]{4})([0-9]{2})([0-9]{2})", text)
    if compact:
        raise ValueProblem(
            f"{text} looks like a date without dashes; write"
            f" {compact[1]}-{compact[2]}-{compact[3]}"
        )
    if 9 <= digits <= 10:
        raise ValueProblem(
            f"{digits}-digit number {text} looks like epoch seconds; {kind} values"
            f" are epoch milliseconds (for example {millis * 1000}) or written as"
            " YYYY-MM-DD"
        )
    if digits < 9:
        raise ValueProblem(
            f"{text} is not a {kind}; write YYYY-MM-DD or epoch milliseconds"
        )
    if not MIN_MILLIS <= millis <= MAX_MILLIS:
        raise ValueProblem(f"{text} is outside the years 1 to 9999")
    return millis


def _time_of_day(millis: int) -> str:
    moment = EPOCH + timedelta(milliseconds=millis)
    return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def _date_millis(match: re.Match[str], text: str) -> int:
    try:
        day = date(int(match["year"]), int(match["month"]), int(match["day"]))
    except ValueError as error:
        raise ValueProblem(f"{text!r} is not a valid date ({error})") from error
    return (day - EPOCH.date()).days * MS_PER_DAY


def _timestamp_millis(match: re.Match[str], text: str) -> int:
    fraction = (match["fraction"] or "0")[:6].ljust(6, "0")
    try:
        moment = datetime(
            int(match["year"]),
            int(match["month"]),
            int(match["day"]),
            int(match["hour"]),
            int(match["minute"]),
            int(match["second"] or 0),
            int(fraction),
            tzinfo=_offset(match["offset"]),
        )
    except ValueError as error:
        raise ValueProblem(f"{text!r} is not a valid date-time ({error})") from error
    return (moment - EPOCH) // timedelta(milliseconds=1)


def _offset(text: str) -> timezone:
    if text in ("Z", "z"):
        return timezone.utc
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2] if len(digits) > 2 else digits), 0
    if len(digits) > 2:
        minutes = int(digits[2:])
    offset = timedelta(hours=hours, minutes=minutes)
    # Time zones in use run from UTC-12:00 to UTC+14:00.
    if minutes >= 60 or offset > MAX_OFFSET:
        raise ValueProblem(f"{text} is not a UTC offset (they run to ±14:00)")
    return timezone(sign * offset)


def _enumeration_wire(definition: PropertyDefinition, value: Scalar) -> str:
    _check_option(definition, value.text)
    return value.text


def _multi_select_wire(
    definition: PropertyDefinition, value: Scalar | list[Scalar]
) -> str:
    if isinstance(value, list):
        items = [item.text.strip() for item in value if not item.is_null()]
    else:
        items = [item.strip() for item in value.text.split(";")]
    chosen: list[str] = []
    for item in items:
        if item and item not in chosen:
            _check_option(definition, item)
            chosen.append(item)
    return ";".join(chosen)


def _check_option(definition: PropertyDefinition, text: str) -> None:
    if not definition.options and definition.external_options:
        return
    if text in definition.option_values():
        return
    raise ValueProblem(_option_complaint(definition, text))


def _option_complaint(definition: PropertyDefinition, text: str) -> str:
    for option in definition.options:
        if option.label == text:
            return f"{text!r} is an option label; use its value {option.value!r}"
    for option in definition.options:
        if text.lower() in (option.value.lower(), option.label.lower()):
            return (
                f"{text!r} is not an option (values are case-sensitive);"
                f" did you mean {option.value!r}?"
            )
    allowed = ", ".join(repr(value) for value in sorted(definition.option_values()))
    return f"{text!r} is not one of the allowed options: {allowed or 'none'}"


# The property types of HubSpot's definitions API, each with its wire format.
_CONVERTERS = {
    "string": _string_wire,
    "phone_number": _string_wire,
    "number": _number_wire,
    "bool": _bool_wire,
    "date": _date_wire,
    "datetime": _datetime_wire,
    "enumeration": _enumeration_wire,
}


# --- comparing values by meaning -----------------------------------------


def same_value(
    definition: PropertyDefinition | None, current: str | None, wire: str
) -> bool:
    """Whether HubSpot's ``current`` value already means the desired ``wire``.

    ``None``, ``""`` and an absent value are all empty; numbers compare as
    decimals; dates as epoch milliseconds; multi-select ignores order.
    """
    kind = definition.type if definition else "string"
    if kind != "string":
        current = current.strip() if current is not None else None
    if not current or not wire:
        return not current and not wire
    if kind == "number":
        return _same_number(current, wire)
    if kind in ("date", "datetime"):
        return _as_millis(current) == _as_millis(wire)
    if definition is not None and definition.multi_select:
        return _choices(current) == _choices(wire)
    if kind == "bool":
        return current.lower() == wire.lower()
    return current == wire


def _same_number(current: str, wire: str) -> bool:
    try:
        have, want = Decimal(current), Decimal(wire)
    except InvalidOperation:
        return current == wire
    if have == want:
        return True
    # HubSpot may echo a number as the exact expansion of the binary float it
    # stored ("0.59999999999999997779553950749686919152736663818359375" for
    # 0.6). Only such long expansions are matched this way, so two distinct
    # integers that one float cannot tell apart still differ.
    if len(have.as_tuple().digits) <= FLOAT_DIGITS:
        return False
    try:
        return Decimal(float(want)) == have
    except (OverflowError, ValueError):
        return False


def _as_millis(text: str) -> int | str:
    if text.lstrip("-").isdigit():
        return int(text)
    match = ISO_TIMESTAMP.fullmatch(text)
    if match is None:
        return text
    try:
        if match["hour"] is None:
            return _date_millis(match, text)
        if match["offset"] is None:
            match = ISO_TIMESTAMP.fullmatch(text + "Z") or match
        return _timestamp_millis(match, text)
    except ValueProblem:
        return text


def _choices(text: str) -> frozenset[str]:
    return frozenset(item.strip() for item in text.split(";") if item.strip())


def display_value(definition: PropertyDefinition | None, wire: str | None) -> str:
    """A wire value as a person reads it: dates as ISO, empty as (empty)."""
    if wire is None or wire == "":
        return "(empty)"
    kind = definition.type if definition else "string"
    digits = wire.lstrip("-").isdigit()
    if (
        kind in ("date", "datetime")
        and digits
        and MIN_MILLIS <= int(wire) <= MAX_MILLIS
    ):
        moment = EPOCH + timedelta(milliseconds=int(wire))
        if kind == "date" or int(wire) % MS_PER_DAY == 0:
            return f"{moment.date().isoformat()} ({wire})"
        iso = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return f"{iso} ({wire})"
    return json.dumps(wire, ensure_ascii=False)


# --- checking wire values the way HubSpot does -----------------------------


def check_wire_value(definition: PropertyDefinition, wire: str) -> str | None:
    """HubSpot's own objection to a wire value, or None if it would accept it.

    Used by the sandbox to answer like HubSpot; messages imitate HubSpot's.
    """
    if wire == "":
        return None
    kind = definition.type
    if kind == "number" and not re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", wire.strip()):
        return f"{wire} was not a valid number."
    if kind == "date":
        if not wire.lstrip("-").isdigit() or not MIN_MILLIS <= int(wire) <= MAX_MILLIS:
            return f"{wire} is not a valid date."
        if int(wire) % MS_PER_DAY:
            return f"{wire} is at {_time_of_day(int(wire))} UTC, not midnight!"
    is_instant = wire.lstrip("-").isdigit() or ISO_TIMESTAMP.fullmatch(wire)
    if kind == "datetime" and not is_instant:
        return f"{wire} is not a valid datetime."
    if kind == "bool" and wire not in ("true", "false"):
        return f"{wire} is not a valid boolean."
    if kind == "enumeration" and definition.options:
        values = definition.option_values()
        picked = _choices(wire) if definition.multi_select else {wire}
        if not picked <= values:
            return f"{wire} was not one of the allowed options: {sorted(values)}"
    return None


def suggest(name: str, candidates: Iterable[str]) -> str | None:
    """The closest known name to ``name``, for "did you mean" hints."""
    import difflib

    pool = list(candidates)
    lowered = {candidate.lower(): candidate for candidate in pool}
    if name.lower() in lowered:
        return lowered[name.lower()]
    close = difflib.get_close_matches(name, pool, n=1, cutoff=0.75)
    return close[0] if close else None
