"""Snapshots from every accepted file form, and from a live read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reconciler.errors import InvalidInputError
from reconciler.snapshot import (
    Snapshot,
    add_response,
    load_snapshot,
    read_snapshot,
    render_snapshot,
)
from tests.conftest import CASES, REAL_DATA, needs_shared

REAL = REAL_DATA / "real"
OPPORTUNITIES = REAL_DATA / "crm-opportunities"


@needs_shared
def test_real_v1_paged_deal() -> None:
    snapshot = load_snapshot(
        [REAL / "v1_deals_paged_current_values__demo_portal_2020-01-31.json"]
    )
    assert list(snapshot.deals) == ["931633510"]
    deal = snapshot.deals["931633510"]
    assert deal["dealname"] == "Example deal"
    assert deal["amount"] == "100"
    assert deal["closedate"] == "1564783118291"
    assert deal["hs_all_accessible_team_ids"] == ""


@needs_shared
def test_real_v1_paged_deal_with_history_reads_current_values() -> None:
    snapshot = load_snapshot(
        [REAL / "v1_deals_paged_with_history__demo_portal_2020-01-31.json"]
    )
    assert snapshot.deals["931633510"]["dealstage"] == "presentationscheduled"


@needs_shared
def test_v3_list_page_keeps_nulls_as_empty() -> None:
    snapshot = load_snapshot([REAL / "v3_deals_list_page__dlt-hub_mock_2023-02.json"])
    assert sorted(snapshot.deals) == ["6744192456", "6744457152"]
    assert snapshot.deals["6744192456"]["closedate"] is None
    assert snapshot.deals["6744457152"]["amount"] == "3233"


@needs_shared
def test_folder_of_pages_is_one_snapshot() -> None:
    snapshot = load_snapshot([OPPORTUNITIES / "v3_deals_list"])
    assert len(snapshot.deals) == 8800
    assert snapshot.deals["15000000000"]["dealstage"] == "closedwon"
    v1 = load_snapshot([OPPORTUNITIES / "v1_deals_paged"])
    assert len(v1.deals) == 500
    assert v1.deals["15000000000"]["closedate"] == "1488326400000"


@needs_shared
def test_batch_read_with_errors_records_missing_ids() -> None:
    snapshot = load_snapshot([CASES / "B15" / "response.json"])
    assert sorted(snapshot.deals) == ["15001", "15009"]
    assert snapshot.missing == {
        "15003": "Could not get some DEAL objects, they may be deleted or not exist."
        " Check that ids are valid."
    }
    assert snapshot.merged_into("15002") == "15009"
    assert snapshot.merged_into("15001") is None


def test_own_format_round_trips(tmp_path: Path) -> None:
    original = Snapshot(
        deals={"10": {"b": "2", "a": None}, "9": {"amount": "1"}},
        missing={"11": "gone"},
    )
    path = tmp_path / "snapshot.json"
    path.write_text(render_snapshot(original))
    document = json.loads(path.read_text())
    assert list(document["deals"]) == ["9", "10"]
    assert list(document["deals"]["10"]) == ["a", "b"]
    again = load_snapshot([path])
    assert again.deals == original.deals
    assert again.missing == {"11": "gone"}


def test_own_format_is_checked_against_its_schema(tmp_path: Path) -> None:
    path = tmp_path / "snapshot.json"
    path.write_text(
        json.dumps({"format": "reconciler-snapshot", "version": 1, "deals": {"x": {}}})
    )
    with pytest.raises(InvalidInputError) as raised:
        load_snapshot([path])
    assert [f.rule for f in raised.value.findings] == ["schema"]
    assert "'x' does not match" in raised.value.findings[0].message


def test_unknown_shapes_and_bad_json_are_findings(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('{"hello": 1}')
    (tmp_path / "b.json").write_text('{"results": [1, ')
    with pytest.raises(InvalidInputError) as raised:
        load_snapshot([tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"])
    found = [
        (f.location.file if f.location else "", f.rule) for f in raised.value.findings
    ]
    assert found == [
        (str(tmp_path / "a.json"), "format"),
        (str(tmp_path / "b.json"), "json"),
        (str(tmp_path / "c.json"), "io"),
    ]


def test_archived_and_deleted_records_are_not_current() -> None:
    snapshot = Snapshot()
    add_response(
        snapshot, {"results": [{"id": "1", "archived": True, "properties": {}}]}, "t"
    )
    add_response(snapshot, {"dealId": 2, "isDeleted": True, "properties": {}}, "t")
    assert snapshot.deals == {}


class FakeReader:
    def __init__(self) -> None:
        self.calls: list[tuple[list[str], list[str]]] = []

    def read_deals(
        self, ids: Any, properties: Any
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        self.calls.append((list(ids), list(properties)))
        results = [{"id": "1", "properties": {"amount": "5", "hs_object_id": "1"}}]
        errors = [
            {
                "category": "OBJECT_NOT_FOUND",
                "message": "gone",
                "context": {"ids": ["2"]},
            }
        ]
        return results, errors


def test_live_read_asks_for_managed_properties_and_reports_missing() -> None:
    reader = FakeReader()
    snapshot = read_snapshot(reader, ["1", "2", "3"], ["amount"])
    assert reader.calls == [(["1", "2", "3"], ["amount", "hs_merged_object_ids"])]
    assert snapshot.deals == {"1": {"amount": "5", "hs_object_id": "1"}}
    assert snapshot.missing == {"2": "gone", "3": "not returned by HubSpot"}


def test_values_must_be_scalars_and_folders_must_hold_pages(tmp_path: Path) -> None:
    page = tmp_path / "page.json"
    page.write_text(
        json.dumps({"results": [{"id": "1", "properties": {"amount": {"value": "1"}}}]})
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidInputError) as raised:
        load_snapshot([page, empty])
    assert [f.message for f in raised.value.findings] == [
        "folder holds no .json files",
        "deal 1 property amount: a value must be text, not {'value': '1'}",
    ]
    snapshot = Snapshot()
    add_response(
        snapshot, {"results": [{"id": "2", "properties": {"a": True, "b": 5}}]}, "t"
    )
    assert snapshot.deals == {"2": {"a": "true", "b": "5"}}


def test_files_that_disagree_about_a_deal_are_refused(tmp_path: Path) -> None:
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(
        json.dumps({"results": [{"id": "7", "properties": {"amount": "1"}}]})
    )
    second.write_text(
        json.dumps({"results": [{"id": "7", "properties": {"amount": "2"}}]})
    )
    with pytest.raises(InvalidInputError) as raised:
        load_snapshot([first, second])
    assert [str(f) for f in raised.value.findings] == [
        f"{second}:1:1: deal 7 property amount is '2' here but '1' in {first};"
        " use one snapshot"
    ]
    same = load_snapshot([first, first])
    assert same.deals == {"7": {"amount": "1"}}
