"""Diffing and planning: least requests, deterministic order, saved plans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.desired import load_desired
from reconciler.diff import diff_values
from reconciler.errors import InvalidInputError
from reconciler.plan import Change, build_plan, load_plan, render_plan_file
from reconciler.properties import Definitions, load_definitions, load_pipelines
from reconciler.snapshot import load_snapshot
from reconciler.validate import validate_state
from tests.conftest import REAL_DATA, needs_shared

OPPORTUNITIES = REAL_DATA / "crm-opportunities"


def change(deal: str, name: str, after: str = "1") -> Change:
    return Change(deal, name, "number", "number", None, after)


def test_batches_hold_at_most_the_batch_size_in_id_order() -> None:
    changes = [change(str(n), p) for n in (30, 4, 1000, 25, 7) for p in ("b", "a")]
    plan = build_plan(changes, batch_size=2)
    assert [batch.deals for batch in plan.batches] == [
        ["4", "7"],
        ["25", "30"],
        ["1000"],
    ]
    assert [(c.deal, c.property) for c in plan.batches[0].changes] == [
        ("4", "a"),
        ("4", "b"),
        ("7", "a"),
        ("7", "b"),
    ]
    assert plan.deal_count == 5
    assert len(plan.changes) == 10


def test_request_body_is_the_v1_batch_shape() -> None:
    plan = build_plan(
        [change("20", "b", ""), change("3", "a", "2.5"), change("20", "a")]
    )
    assert plan.batches[0].request_body() == [
        {"objectId": 3, "properties": [{"name": "a", "value": "2.5"}]},
        {
            "objectId": 20,
            "properties": [{"name": "a", "value": "1"}, {"name": "b", "value": ""}],
        },
    ]


def test_batch_size_is_bounded() -> None:
    with pytest.raises(ValueError, match="1 to 100"):
        build_plan([], batch_size=101)


def test_saved_plan_round_trips_and_refuses_edits(tmp_path: Path) -> None:
    plan = build_plan([change("5", "amount", "10"), change("6", "amount", "")], 1)
    path = tmp_path / "plan.json"
    path.write_text(render_plan_file(plan))
    again = load_plan(path)
    assert again.changes == plan.changes
    assert again.fingerprint() == plan.fingerprint()

    document = json.loads(path.read_text())
    document["batches"][0]["deals"][0]["changes"][0]["after"] = "999999"
    path.write_text(json.dumps(document))
    with pytest.raises(InvalidInputError) as raised:
        load_plan(path)
    assert raised.value.findings[0].message == (
        "the plan was edited: its changes do not match its fingerprint"
    )

    path.write_text('{"format": "reconciler-plan"}')
    with pytest.raises(InvalidInputError, match="not a valid saved plan"):
        load_plan(path)


def test_plan_file_is_byte_identical_across_runs() -> None:
    changes = [change(str(n), "amount", str(n)) for n in range(250)]
    first = render_plan_file(build_plan(list(reversed(changes))))
    second = render_plan_file(build_plan(changes))
    assert first == second


@needs_shared
def test_8800_real_deals_plan_exactly_the_changes(tmp_path: Path) -> None:
    snapshot = load_snapshot([OPPORTUNITIES / "v3_deals_list"])
    ids = sorted(snapshot.deals, key=int)
    lines = ["deals:"]
    expected = {}
    for n, deal in enumerate(ids):
        amount = snapshot.deals[deal]["amount"]
        if n % 25 == 0:  # 352 deals change amount
            lines.append(f'  "{deal}":\n    amount: {int(amount or 0) + 1}')
            expected[(deal, "amount")] = str(int(amount or 0) + 1)
        elif n % 40 == 1:  # 220 deals keep their values, written another way
            lines.append(f'  "{deal}":\n    amount: "{amount}.00"')
    path = tmp_path / "deals.yaml"
    path.write_text("\n".join(lines) + "\n")

    state = load_desired([path])
    definitions = Definitions(
        load_definitions(OPPORTUNITIES / "properties.json"),
        load_pipelines(OPPORTUNITIES / "pipelines.json"),
    )
    values = validate_state(state, definitions, snapshot)
    diff = diff_values(state, values, snapshot)
    plan = build_plan(diff.changes, unchanged=diff.unchanged_deals)

    assert {(c.deal, c.property): c.after for c in plan.changes} == expected
    assert len(expected) == 352
    assert plan.unchanged_deals == 220
    assert [len(batch.deals) for batch in plan.batches] == [100, 100, 100, 52]


def test_saved_plan_refuses_edits_outside_the_changes(tmp_path: Path) -> None:
    plan = build_plan([change(str(n), "amount", "1") for n in (1, 2, 3)], 2)
    path = tmp_path / "plan.json"
    document = json.loads(render_plan_file(plan))
    document["batch_size"] = 1
    document["summary"]["deals"] = 0
    document["batches"][0]["index"] = 2
    path.write_text(json.dumps(document))
    with pytest.raises(InvalidInputError) as raised:
        load_plan(path)
    assert [f.message for f in raised.value.findings] == [
        "the plan was edited: a batch holds more than its batch size (1)",
        "the plan was edited: its batches are not numbered 1, 2, 3, ... in order",
        "the plan was edited: its summary does not count what its batches hold",
    ]
