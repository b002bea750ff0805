"""Each bug-report case in ../shared/cases, asserted through the CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import CASES, FIXTURES, needs_shared
from tests.fakes import run_cli as run

VALID = FIXTURES / "cases"


def problems(*args: object) -> list[dict[str, object]]:
    code, out, _ = run(*args, "--format", "json")
    assert code == 1, out
    document = json.loads(out)
    assert document["ok"] is False
    return list(document["problems"])


def planned(*args: object) -> dict[tuple[str, str], str]:
    code, out, err = run("plan", *args, "--format", "json")
    assert code == 0, err + out
    document = json.loads(out)
    return {
        (deal["id"], change["property"]): change["after"]
        for batch in document["batches"]
        for deal in batch["deals"]
        for change in deal["changes"]
    }


def lines(found: list[dict[str, object]]) -> list[tuple[object, object, object]]:
    return [(p["deal"], p["property"], p["line"]) for p in found]


@needs_shared
def test_b01_date_values_need_midnight_utc_milliseconds() -> None:
    case = CASES / "B01"
    found = problems(
        "validate", case / "desired.yaml", "--properties", case / "properties.json"
    )
    assert lines(found) == [
        ("1002", "contract_start_date", 6),
        ("1003", "contract_start_date", 8),
    ]
    assert "time of day (10:00:00Z)" in str(found[0]["message"])
    assert "epoch seconds" in str(found[1]["message"])
    assert "1709251200000" in str(found[1]["message"])

    values = planned(
        VALID / "B01_valid.yaml",
        "--properties",
        case / "properties.json",
        "--snapshot",
        VALID / "B01_snapshot.json",
    )
    assert values == {
        ("1001", "contract_start_date"): "1709251200000",
        ("1004", "contract_start_date"): "1709251200000",
        ("1005", "close_time"): "1709287200000",
    }


@needs_shared
def test_b02_numbers_are_plain_decimals() -> None:
    case = CASES / "B02"
    found = problems(
        "validate", case / "desired.yaml", "--properties", case / "properties.json"
    )
    assert lines(found) == [
        ("2003", "amount", 7),
        ("2004", "amount", 9),
        ("2005", "amount", 11),
        ("2006", "amount", 13),
    ]
    assert "thousands separator" in str(found[0]["message"])
    assert "currency" in str(found[1]["message"])
    assert "exponent" in str(found[2]["message"])
    assert "not a finite number" in str(found[3]["message"])

    values = planned(
        VALID / "B02_valid.yaml",
        "--properties",
        case / "properties.json",
        "--snapshot",
        case / "snapshot.json",
    )
    assert values == {
        ("2001", "amount"): "15000000000000000",
        ("2007", "amount"): "0.1",
    }
    for value in values.values():
        assert not any(bad in value.lower() for bad in ("e", ",", "inf", "nan"))


@needs_shared
def test_b04_stages_belong_to_the_deals_pipeline() -> None:
    case = CASES / "B04"
    options = [
        "--properties",
        case / "properties.json",
        "--pipelines",
        case / "pipelines.json",
        "--snapshot",
        case / "snapshot.json",
    ]
    found = problems("validate", case / "desired.yaml", *options)
    assert lines(found) == [
        ("4001", "dealstage", 3),
        ("4002", "dealstage", 5),
        ("4004", "pipeline", 10),
        ("4005", "dealstage", 12),
    ]
    assert '"closedwon"' in str(found[0]["message"])
    assert "ambiguous" in str(found[0]["message"])
    assert '"7700100" (Renewals)' in str(found[1]["message"])
    assert '"qualifiedtobuy" is not in it' in str(found[2]["message"])
    assert 'did you mean "closedwon"' in str(found[3]["message"])

    code, out, _ = run("plan", VALID / "B04_valid.yaml", *options, "--format", "json")
    assert code == 0
    deals = json.loads(out)["batches"][0]["deals"]
    assert deals == [
        {
            "id": "4003",
            "changes": [
                {
                    "property": "dealstage",
                    "type": "enumeration",
                    "field_type": "radio",
                    "before": "qualifiedtobuy",
                    "after": "7700102",
                    "source": {
                        "file": str(VALID / "B04_valid.yaml"),
                        "line": 4,
                        "column": 16,
                    },
                },
                {
                    "property": "pipeline",
                    "type": "enumeration",
                    "field_type": "select",
                    "before": "default",
                    "after": "7700100",
                    "source": {
                        "file": str(VALID / "B04_valid.yaml"),
                        "line": 3,
                        "column": 15,
                    },
                },
            ],
        },
        {
            "id": "4006",
            "changes": [
                {
                    "property": "dealstage",
                    "type": "enumeration",
                    "field_type": "radio",
                    "before": "qualifiedtobuy",
                    "after": "closedlost",
                    "source": {
                        "file": str(VALID / "B04_valid.yaml"),
                        "line": 6,
                        "column": 16,
                    },
                }
            ],
        },
    ]


@needs_shared
def test_b06_absent_null_and_value_stay_distinct(tmp_path: Path) -> None:
    case = CASES / "B06"
    code, _, err = run(
        "plan",
        case / "desired.yaml",
        "--properties",
        case / "properties.json",
        "--snapshot",
        case / "snapshot.json",
        "-o",
        tmp_path / "plan.json",
    )
    assert code == 0, err
    from reconciler.plan import load_plan

    body = load_plan(tmp_path / "plan.json").batches[0].request_body()
    assert body == [
        {"objectId": 6001, "properties": [{"name": "hs_next_step", "value": ""}]},
        {"objectId": 6004, "properties": [{"name": "hs_next_step", "value": ""}]},
        {"objectId": 6005, "properties": [{"name": "amount", "value": "500"}]},
        {
            "objectId": 6006,
            "properties": [{"name": "contract_start_date", "value": ""}],
        },
    ]
    assert "null" not in json.dumps(body)


@needs_shared
def test_b07_unknown_and_read_only_properties() -> None:
    case = CASES / "B07"
    found = problems(
        "validate", case / "desired.yaml", "--properties", case / "properties.json"
    )
    assert lines(found) == [
        ("7001", "closedat", 3),
        ("7002", "hs_is_closed_won", 5),
        ("7003", "hs_object_id", 7),
        ("7004", "Amount", 9),
    ]
    assert 'did you mean "closedate"' in str(found[0]["message"])
    assert "read-only" in str(found[1]["message"])
    assert "read-only" in str(found[2]["message"])
    assert 'did you mean "amount"' in str(found[3]["message"])
    values = planned(
        VALID / "B07_valid.yaml",
        "--properties",
        case / "properties.json",
        "--snapshot",
        VALID / "B07_snapshot.json",
    )
    assert values == {("7005", "amount"): "100"}


@needs_shared
def test_b08_duplicate_keys_at_every_level() -> None:
    found = problems("validate", CASES / "B08" / "desired.yaml")
    assert [(p["line"], p["deal"], p["property"], p["message"]) for p in found] == [
        (
            4,
            "8001",
            "amount",
            'duplicate key "amount" in deal 8001 (first defined at line 3)',
        ),
        (
            8,
            "8001",
            None,
            'duplicate key "8001" under deals (first defined at line 2)',
        ),
    ]
    code, _, err = run("validate", CASES / "B08" / "desired.yaml")
    assert code == 1
    assert err.splitlines()[:2] == [
        f"{CASES / 'B08' / 'desired.yaml'}:4:5: deal 8001, property amount:"
        ' duplicate key "amount" in deal 8001 (first defined at line 3)',
        f"{CASES / 'B08' / 'desired.yaml'}:8:3: deal 8001:"
        ' duplicate key "8001" under deals (first defined at line 2)',
    ]


@needs_shared
def test_b10_yaml_1_1_coercions_never_reach_hubspot() -> None:
    case = CASES / "B10"
    found = problems(
        "validate", case / "desired.yaml", "--properties", case / "properties.json"
    )
    assert lines(found) == [("10001", "is_priority", 6)]
    assert "true or false" in str(found[0]["message"])

    values = planned(
        VALID / "B10_valid.yaml",
        "--properties",
        case / "properties.json",
        "--snapshot",
        VALID / "B10_snapshot.json",
    )
    assert values == {
        ("10001", "deal_region"): "no",
        ("10001", "deal_region_2"): "NO",
        ("10001", "meeting_slot"): "10:30",
        ("10001", "is_priority"): "true",
        ("10001", "seats_note"): "1_000",
        ("10001", "budget_code"): "0x1F",
    }


@needs_shared
def test_b12_unquoted_dates_and_times() -> None:
    case = CASES / "B12"
    found = problems(
        "validate", case / "desired.yaml", "--properties", case / "properties.json"
    )
    assert lines(found) == [("12002", "close_time", 5), ("12004", "close_time", 9)]
    assert all("no UTC offset" in str(p["message"]) for p in found)

    found = problems(
        "validate",
        case / "desired_bad_date.yaml",
        "--properties",
        case / "properties.json",
    )
    assert lines(found) == [("12006", "contract_start_date", 3)]
    assert "'0000-00-00' is not a valid date" in str(found[0]["message"])

    values = planned(
        VALID / "B12_valid.yaml",
        "--properties",
        case / "properties.json",
        "--snapshot",
        VALID / "B12_snapshot.json",
    )
    assert values == {
        ("12001", "contract_start_date"): "1709251200000",
        ("12003", "close_time"): "1709280000000",
        ("12005", "dealname"): "2024-03-01",
    }


@needs_shared
def test_b13_aliases_are_refused_before_anything_expands() -> None:
    started = time.perf_counter()
    found = problems("validate", CASES / "B13" / "desired.yaml")
    assert time.perf_counter() - started < 1.0
    assert [(p["line"], p["rule"]) for p in found] == [(3, "alias")]
    assert "aliases are not allowed" in str(found[0]["message"])


@needs_shared
def test_b15_merged_and_deleted_deals_are_named() -> None:
    case = CASES / "B15"
    found = problems(
        "plan", case / "desired.yaml", "--snapshot", case / "response.json"
    )
    assert lines(found) == [("15002", None, 4), ("15003", None, 6)]
    assert "merged into deal 15009" in str(found[0]["message"])
    assert "not found" in str(found[1]["message"])

    code, out, _ = run(
        "plan",
        case / "desired.yaml",
        "--snapshot",
        case / "response.json",
        "--skip-missing",
        "--format",
        "json",
    )
    assert code == 0
    changes = json.loads(out)["batches"][0]["deals"]
    assert [
        (d["id"], d["changes"][0]["before"], d["changes"][0]["after"]) for d in changes
    ] == [("15001", "10", "100")]


@pytest.mark.parametrize("case", ["B08", "B13"])
@needs_shared
def test_load_errors_stop_before_the_snapshot_is_read(case: str) -> None:
    code, _, err = run(
        "plan", CASES / case / "desired.yaml", "--snapshot", "/nonexistent.json"
    )
    assert code == 1
    assert "nonexistent" not in err


@needs_shared
def test_b04_plan_reports_every_stage_problem_at_once() -> None:
    case = CASES / "B04"
    found = problems(
        "plan",
        case / "desired.yaml",
        "--properties",
        case / "properties.json",
        "--pipelines",
        case / "pipelines.json",
        "--snapshot",
        case / "snapshot.json",
    )
    assert [p["line"] for p in found] == [3, 5, 10, 12]


@needs_shared
def test_b15_skipped_deals_are_in_the_json_plan(tmp_path: Path) -> None:
    case = CASES / "B15"
    code, out, err = run(
        "plan",
        case / "desired.yaml",
        "--snapshot",
        case / "response.json",
        "--skip-missing",
        "--format",
        "json",
        "-o",
        tmp_path / "plan.json",
    )
    assert code == 0
    skipped = json.loads(out)["skipped"]
    assert [(s["deal"], s["source"]["line"]) for s in skipped] == [
        ("15002", 4),
        ("15003", 6),
    ]
    assert "merged into deal 15009" in skipped[0]["reason"]
    assert err.count("skipped: ") == 2
    from reconciler.plan import load_plan

    assert [f.deal for f in load_plan(tmp_path / "plan.json").skipped] == [
        "15002",
        "15003",
    ]
