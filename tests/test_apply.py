"""Applying a plan: stale check, batches, splitting, limits, verify, journal."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.apply import (
    DAILY_LIMIT_REASON,
    ApplyReport,
    apply_plan,
    check_stale,
    rebatch_plan,
)
from reconciler.errors import ExitCode, Finding, Location, StalePlanError, UsageError
from reconciler.hubspot import HubSpotClient
from reconciler.journal import Journal
from reconciler.plan import Batch, Change, Plan, build_plan
from reconciler.render import render_apply_report
from tests.fakes import (
    READ_PATH,
    TOKEN,
    UPDATE_PATH,
    FakeTime,
    fixture_response,
    mock_client,
)

Override = Callable[[int, list[dict[str, Any]]], "httpx.Response | None"]


class FakeHubSpot:
    """Deals in memory behind the batch-read and batch-update endpoints.

    Updates are all-or-nothing like HubSpot's: ``reject`` may refuse a whole
    body. Accepted values stay hidden for ``hidden_reads`` reads, imitating
    asynchronous processing. ``override`` scripts answers by update number.
    """

    def __init__(self, deals: dict[str, dict[str, str]]) -> None:
        self.deals = deals
        self.updates: list[bytes] = []
        self.reads: list[dict[str, Any]] = []
        self.hidden_reads = 0
        self.queued: list[list[dict[str, Any]]] = []
        self.override: Override = lambda number, body: None
        self.reject: Callable[[list[dict[str, Any]]], bool] = lambda body: False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == READ_PATH:
            return self._read(json.loads(request.content))
        assert request.url.path == UPDATE_PATH
        self.updates.append(request.content)
        body = json.loads(request.content)
        scripted = self.override(len(self.updates), body)
        if scripted is not None:
            return scripted
        if self.reject(body):
            return fixture_response("update_rejected_invalid_option_400.json")
        self.queued.append(body)
        return fixture_response("update_accepted_202.json")

    def _read(self, body: dict[str, Any]) -> httpx.Response:
        self.reads.append(body)
        if self.hidden_reads > 0 and self.queued:
            self.hidden_reads -= 1
        else:
            self._process_queue()
        results = [
            {"id": item["id"], "properties": dict(self.deals[item["id"]])}
            for item in body["inputs"]
            if item["id"] in self.deals
        ]
        return httpx.Response(200, json={"status": "COMPLETE", "results": results})

    def _process_queue(self) -> None:
        for body in self.queued:
            for entry in body:
                values = self.deals[str(entry["objectId"])]
                for pair in entry["properties"]:
                    values[pair["name"]] = pair["value"]
        self.queued = []

    def sent_deals(self) -> list[list[int]]:
        return [[e["objectId"] for e in json.loads(body)] for body in self.updates]


def connect(
    fake: FakeHubSpot, time: FakeTime | None = None
) -> tuple[HubSpotClient, FakeTime]:
    time = time or FakeTime()
    return mock_client(fake, time), time


def change(
    deal: str,
    prop: str,
    before: str | None,
    after: str,
    line: int = 1,
    kind: tuple[str, str] = ("enumeration", "select"),
) -> Change:
    return Change(
        deal=deal,
        property=prop,
        type=kind[0],
        field_type=kind[1],
        before=before,
        after=after,
        location=Location("desired.yaml", line, 5),
    )


def b16() -> tuple[FakeHubSpot, Plan]:
    number = ("number", "number")
    changes = [
        change(str(16000 + n), "amount", "0", str(n), line=2 + n, kind=number)
        for n in (1, 2, 3)
    ]
    deals = {str(16000 + n): {"amount": "0"} for n in (1, 2, 3)}
    return FakeHubSpot(deals), build_plan(changes, batch_size=1)


def b20() -> tuple[FakeHubSpot, Plan]:
    afters = {"20001": "gold", "20002": "gold", "20003": "gold", "20004": "platinum"}
    afters["20005"] = "gold"
    changes = [
        change(deal, "deal_tier", "silver", after, line=3 + n)
        for n, (deal, after) in enumerate(afters.items())
    ]
    fake = FakeHubSpot({deal: {"deal_tier": "silver"} for deal in afters})
    fake.reject = lambda body: any(
        pair["value"] == "platinum" for entry in body for pair in entry["properties"]
    )
    return fake, build_plan(changes, batch_size=2)


def b18() -> tuple[FakeHubSpot, Plan]:
    plan = build_plan([change("18001", "dealstage", "qualifiedtobuy", "closedwon")])
    fake = FakeHubSpot(
        {"18001": {"dealstage": "qualifiedtobuy", "pipeline": "default"}}
    )
    return fake, plan


def states(report: ApplyReport) -> list[str]:
    return [outcome.state for outcome in report.batches]


def text(report: ApplyReport, fmt: str = "text") -> str:
    return render_apply_report(report.to_dict(), fmt)


def interrupt_update(number: int) -> Override:
    """An override that is cut off by Ctrl-C while update ``number`` is out."""

    def answer(sent: int, body: list[dict[str, Any]]) -> httpx.Response | None:
        if sent == number:
            raise KeyboardInterrupt
        return None

    return answer


# --- B16: rate limits ------------------------------------------------------


def test_burst_limit_on_batch_2_is_waited_out_and_retried() -> None:
    fake, plan = b16()
    fake.override = lambda number, body: (
        fixture_response("rate_limit_burst_429.json") if number == 2 else None
    )
    client, time = connect(fake)

    report = apply_plan(plan, client, sleep=time.sleep, clock=time.clock)

    assert states(report) == ["applied", "applied", "applied"]
    assert report.rate_limit_retries == 1
    assert report.requests == 5
    assert fake.updates[1] == fake.updates[2]
    assert fake.sent_deals() == [[16001], [16002], [16002], [16003]]
    assert time.sleeps == [10.0]
    assert report.exit_code == ExitCode.OK
    assert report.stop_reason is None


def test_burst_limit_every_time_stops_after_bounded_retries() -> None:
    fake, plan = b16()
    fake.override = lambda number, body: (
        fixture_response("rate_limit_burst_429.json") if number >= 2 else None
    )
    client, time = connect(fake)

    report = apply_plan(plan, client, sleep=time.sleep, clock=time.clock)

    assert states(report) == ["applied", "failed", "not attempted"]
    assert len(fake.updates) == 6
    assert report.rate_limit_retries == 4
    assert report.exit_code == ExitCode.ERROR
    assert report.stop_reason is not None
    assert report.stop_reason.startswith("batch 2 failed: HubSpot answered 429")
    assert fake.deals["16002"] == {"amount": "0"}


def test_daily_limit_stops_at_once_without_retrying() -> None:
    fake, plan = b16()
    fake.override = lambda number, body: (
        fixture_response("rate_limit_daily_429.json") if number == 2 else None
    )
    client, time = connect(fake)

    report = apply_plan(plan, client, wait=True, sleep=time.sleep, clock=time.clock)

    assert states(report) == ["applied", "refused: daily limit", "not attempted"]
    assert report.batches[1].reason == DAILY_LIMIT_REASON
    assert report.batches[2].reason is None
    assert fake.sent_deals() == [[16001], [16002]]
    assert report.rate_limit_retries == 0
    assert time.sleeps == []
    assert report.stop_reason == DAILY_LIMIT_REASON
    assert report.stop_reason == (
        "daily API limit reached (resets at midnight, account time zone)"
    )
    assert report.verify == "not checked"
    assert report.exit_code == ExitCode.DAILY_LIMIT


# --- B18: 202 means accepted; --wait reads back ----------------------------


def test_wait_reads_back_until_the_value_shows() -> None:
    fake, plan = b18()
    fake.hidden_reads = 1
    client, time = connect(fake)

    report = apply_plan(plan, client, wait=True, sleep=time.sleep, clock=time.clock)

    assert states(report) == ["applied"]
    assert report.verify == "verified"
    assert time.sleeps == [1.0, 2.0]
    assert len(fake.reads) == 3
    assert fake.reads[1]["properties"] == ["dealstage"]
    assert report.exit_code == ExitCode.OK


def test_wait_timeout_is_accepted_not_yet_visible_not_failed() -> None:
    fake, plan = b18()
    fake.hidden_reads = 1000
    client, time = connect(fake)

    report = apply_plan(
        plan, client, wait=True, timeout=10.0, sleep=time.sleep, clock=time.clock
    )

    assert states(report) == ["applied"]
    assert report.verify == "accepted, not yet visible"
    assert time.sleeps == [1.0, 2.0, 4.0, 3.0]
    assert time.now == 10.0
    assert report.exit_code == ExitCode.WAIT_TIMEOUT
    unseen = report.to_dict()["not_visible"]
    assert [(u["deal"], u["after"], u["current"]) for u in unseen] == [
        ("18001", "closedwon", "qualifiedtobuy")
    ]


def test_wait_backoff_is_capped_at_30_s() -> None:
    fake, plan = b18()
    fake.hidden_reads = 1000
    client, time = connect(fake)

    apply_plan(
        plan, client, wait=True, timeout=120.0, sleep=time.sleep, clock=time.clock
    )

    assert time.sleeps == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 29.0]


def test_without_wait_nothing_is_read_back() -> None:
    fake, plan = b18()
    client, time = connect(fake)

    report = apply_plan(plan, client, sleep=time.sleep, clock=time.clock)

    assert report.verify == "not checked"
    assert len(fake.reads) == 1
    assert report.requests == 2


# --- B20: a rejected batch is split to find the deal at fault --------------


def test_rejected_batch_is_split_and_the_rest_applied() -> None:
    fake, plan = b20()
    client, time = connect(fake)

    report = apply_plan(plan, client, sleep=time.sleep, clock=time.clock)

    assert fake.sent_deals() == [
        [20001, 20002],
        [20003, 20004],
        [20003],
        [20004],
        [20005],
    ]
    assert states(report) == ["applied", "partly applied", "applied"]
    assert [deal.deal for deal in report.rejected] == ["20004"]
    rejected = report.rejected[0]
    assert rejected.reason == "platinum was not one of the allowed options: [...]"
    assert rejected.correlation_id == "00000000-0000-0000-0000-000000000020"
    assert rejected.changes[0].location == Location("desired.yaml", 6, 5)
    assert rejected.status == 400
    assert report.exit_code == ExitCode.PARTIAL_APPLY
    assert time.sleeps == []


def test_split_report_as_dict() -> None:
    fake, plan = b20()
    client, time = connect(fake)

    data = apply_plan(plan, client, sleep=time.sleep, clock=time.clock).to_dict()

    assert data["exit_code"] == 3
    assert data["batches"][1] == {
        "index": 2,
        "state": "partly applied",
        "deals": ["20003", "20004"],
        "applied": ["20003"],
        "rejected": ["20004"],
        "not_applied": ["20004"],
        "unanswered": [],
        "requests": 3,
        "reason": "platinum was not one of the allowed options: [...]",
        "correlation_id": "00000000-0000-0000-0000-000000000020",
    }
    assert data["rejected"] == [
        {
            "deal": "20004",
            "batch": 2,
            "status": 400,
            "reason": "platinum was not one of the allowed options: [...]",
            "correlation_id": "00000000-0000-0000-0000-000000000020",
            "changes": [
                {
                    "deal": "20004",
                    "property": "deal_tier",
                    "type": "enumeration",
                    "field_type": "select",
                    "before": "silver",
                    "after": "platinum",
                    "source": {"file": "desired.yaml", "line": 6, "column": 5},
                }
            ],
            "errors": [
                {
                    "property": "deal_tier",
                    "code": "INVALID_OPTION",
                    "message": "platinum was not one of the allowed options: [...]",
                }
            ],
        }
    ]
    assert data["counts"] == {
        "batches": 3,
        "batches_applied": 2,
        "batches_not_attempted": 0,
        "deals": 5,
        "deals_applied": 4,
        "deals_rejected": 1,
        "deals_rejected_with_batch": 0,
        "deals_failed": 0,
        "deals_refused_daily_limit": 0,
        "deals_unanswered": 0,
        "deals_not_attempted": 0,
        "changes_applied": 4,
        "requests": 6,
        "rate_limit_retries": 0,
        "server_error_retries": 0,
    }
    assert (data["verify"], data["stop_reason"], data["not_visible"]) == (
        "not checked",
        None,
        [],
    )
    assert json.loads(json.dumps(data)) == data


def test_fail_fast_stops_after_the_first_rejected_batch_without_splitting() -> None:
    fake, plan = b20()
    client, time = connect(fake)

    report = apply_plan(
        plan, client, fail_fast=True, sleep=time.sleep, clock=time.clock
    )

    assert fake.sent_deals() == [[20001, 20002], [20003, 20004]]
    assert states(report) == ["applied", "rejected", "not attempted"]
    assert report.rejected == []
    assert report.batches[1].reason == (
        "platinum was not one of the allowed options: [...]"
    )
    assert report.stop_reason == "stopped after batch 2 was rejected (fail fast)"
    assert report.exit_code == ExitCode.PARTIAL_APPLY
    assert report.to_dict()["batches"][2]["not_applied"] == ["20005"]


def test_split_with_wait_verifies_only_the_applied_deals() -> None:
    fake, plan = b20()
    client, time = connect(fake)

    report = apply_plan(plan, client, wait=True, sleep=time.sleep, clock=time.clock)

    assert report.verify == "verified"
    verify_read = fake.reads[-1]
    assert [item["id"] for item in verify_read["inputs"]] == [
        "20001",
        "20002",
        "20003",
        "20005",
    ]
    assert report.exit_code == ExitCode.PARTIAL_APPLY


def test_server_error_on_a_batch_fails_it_and_stops() -> None:
    fake, plan = b20()
    fake.override = lambda number, body: (
        httpx.Response(500, json={"message": "oops"}) if number >= 2 else None
    )
    client, time = connect(fake)

    report = apply_plan(plan, client, sleep=time.sleep, clock=time.clock)

    assert states(report) == ["applied", "failed", "not attempted"]
    assert report.server_error_retries == 4
    assert report.batches[1].reason == (
        "HubSpot answered 500: gave up after 5 attempts: oops"
    )
    assert report.exit_code == ExitCode.ERROR


def test_daily_limit_while_splitting_leaves_the_batch_partly_applied() -> None:
    fake, plan = b20()
    fake.override = lambda number, body: (
        fixture_response("rate_limit_daily_429.json") if number == 4 else None
    )
    client, time = connect(fake)

    report = apply_plan(plan, client, sleep=time.sleep, clock=time.clock)

    assert states(report) == ["applied", "partly applied", "not attempted"]
    assert report.batches[1].applied == ["20003"]
    assert report.exit_code == ExitCode.DAILY_LIMIT


def test_a_batch_refused_whole_whose_halves_are_accepted_is_applied() -> None:
    afters = {str(30001 + n): "gold" for n in range(4)}
    plan = build_plan([change(deal, "deal_tier", "silver", "gold") for deal in afters])
    fake = FakeHubSpot({deal: {"deal_tier": "silver"} for deal in afters})
    conflict = {"message": "Conflicting update in progress", "correlationId": "c-9"}
    fake.override = lambda number, body: (
        httpx.Response(409, json=conflict) if number == 1 else None
    )
    client, time = connect(fake)
    messages: list[str] = []

    report = apply_plan(
        plan, client, progress=messages.append, sleep=time.sleep, clock=time.clock
    )

    assert fake.sent_deals() == [
        [30001, 30002, 30003, 30004],
        [30001, 30002],
        [30003, 30004],
    ]
    assert states(report) == ["applied"]
    assert messages == ["batch 1/1 applied"]
    assert report.batches[0].reason == "Conflicting update in progress"
    assert report.exit_code == ExitCode.OK
    counts = report.to_dict()["counts"]
    assert (counts["batches_applied"], counts["deals_applied"]) == (1, 4)
    assert text(report).splitlines()[0] == (
        "batch 1: applied (4 deals: 30001, 30002, 30003, 30004)"
    )


def test_an_error_while_splitting_keeps_the_deals_already_applied() -> None:
    fake, plan = b20()
    fake.override = lambda number, body: (
        httpx.Response(500, json={"message": "oops"}) if number >= 4 else None
    )
    client, time = connect(fake)
    messages: list[str] = []

    report = apply_plan(
        plan, client, progress=messages.append, sleep=time.sleep, clock=time.clock
    )

    assert (
        fake.sent_deals() == [[20001, 20002], [20003, 20004], [20003]] + [[20004]] * 5
    )
    assert states(report) == ["applied", "partly applied", "not attempted"]
    assert messages == ["batch 1/3 applied", "batch 2/3 partly applied (1 of 2 deals)"]
    outcome = report.to_dict()["batches"][1]
    assert (outcome["applied"], outcome["rejected"], outcome["not_applied"]) == (
        ["20003"],
        [],
        ["20004"],
    )
    assert outcome["reason"] == "HubSpot answered 500: gave up after 5 attempts: oops"
    assert report.stop_reason == (
        "batch 2 failed: HubSpot answered 500: gave up after 5 attempts: oops"
    )
    assert report.exit_code == ExitCode.ERROR
    assert text(report).splitlines()[-1] == (
        "Apply: 3 deals applied, 1 failed, 1 not attempted in 3 batches;"
        " 9 requests, 4 retries."
    )


def test_an_error_on_the_first_half_fails_the_batch() -> None:
    fake, plan = b20()
    fake.override = lambda number, body: (
        httpx.Response(500, json={"message": "oops"}) if number >= 3 else None
    )
    client, time = connect(fake)

    report = apply_plan(plan, client, sleep=time.sleep, clock=time.clock)

    assert states(report) == ["applied", "failed", "not attempted"]
    assert report.batches[1].fates == {
        "20003": "failed",
        "20004": "rejected with batch",
    }


def test_a_404_that_names_no_deal_fails_the_batch_without_splitting() -> None:
    deals = [str(40001 + n) for n in range(50)]
    plan = build_plan([change(deal, "deal_tier", "silver", "gold") for deal in deals])
    fake = FakeHubSpot({deal: {"deal_tier": "silver"} for deal in deals})
    fake.override = lambda number, body: httpx.Response(404)
    client, time = connect(fake)

    report = apply_plan(plan, client, sleep=time.sleep, clock=time.clock)

    assert len(fake.updates) == 1
    assert states(report) == ["failed"]
    assert report.stop_reason == (
        "batch 1 failed: HubSpot answered 404: Not Found"
        " (POST https://api.hubapi.test/deals/v1/batch-async/update);"
        " check HUBSPOT_BASE_URL"
    )
    assert report.exit_code == ExitCode.ERROR


def test_a_404_that_names_the_deals_not_found_is_split() -> None:
    fake, plan = b20()
    fake.reject = lambda body: False
    missing = {
        "status": "error",
        "message": "Could not update some deals, they may be deleted or not exist.",
        "category": "OBJECT_NOT_FOUND",
        "context": {"ids": ["20004"]},
    }
    fake.override = lambda number, body: (
        httpx.Response(404, json=missing)
        if any(entry["objectId"] == 20004 for entry in body)
        else None
    )
    client, time = connect(fake)

    report = apply_plan(plan, client, sleep=time.sleep, clock=time.clock)

    assert states(report) == ["applied", "partly applied", "applied"]
    assert [(d.deal, d.status) for d in report.rejected] == [("20004", 404)]
    assert report.exit_code == ExitCode.PARTIAL_APPLY


# --- the stale check -------------------------------------------------------


def test_stale_plan_names_deal_property_and_both_values_and_sends_nothing() -> None:
    fake, plan = b20()
    fake.deals["20003"]["deal_tier"] = "bronze"
    del fake.deals["20005"]
    client, time = connect(fake)

    with pytest.raises(StalePlanError) as caught:
        apply_plan(plan, client, sleep=time.sleep, clock=time.clock)

    assert caught.value.drifts == [
        'desired.yaml:5:5: deal 20003 deal_tier: planned against "silver",'
        ' now "bronze"',
        'desired.yaml:7:5: deal 20005 deal_tier: planned against "silver",'
        " now the deal is not in HubSpot (deleted or merged)",
    ]
    assert fake.updates == []
    assert caught.value.exit_code == ExitCode.STALE_PLAN


def test_stale_check_compares_by_meaning() -> None:
    plan = build_plan(
        [
            change("1", "amount", "1500", "2000", kind=("number", "number")),
            change("1", "closedate", "1735689600000", "1", kind=("date", "date")),
            change("1", "hs_next_step", None, "call"),
        ]
    )
    fake = FakeHubSpot({"1": {"amount": "1500.00", "closedate": "2025-01-01"}})
    client, _ = connect(fake)

    check_stale(plan, client)

    assert fake.reads[0]["properties"] == ["amount", "closedate", "hs_next_step"]
    assert fake.updates == []


def test_empty_plan_sends_nothing() -> None:
    fake = FakeHubSpot({})
    client, time = connect(fake)

    report = apply_plan(build_plan([]), client, sleep=time.sleep, clock=time.clock)

    assert (report.requests, report.exit_code, report.batches) == (0, ExitCode.OK, [])


# --- progress and the journal ----------------------------------------------


def test_progress_reports_each_batch() -> None:
    fake, plan = b20()
    client, time = connect(fake)
    messages: list[str] = []

    apply_plan(
        plan,
        client,
        wait=True,
        progress=messages.append,
        sleep=time.sleep,
        clock=time.clock,
    )

    assert messages == [
        "batch 1/3 applied",
        "batch 2/3 partly applied (1 of 2 deals)",
        "batch 3/3 applied",
        "verified: HubSpot shows every applied value",
    ]


def test_apply_records_accepted_changes_in_the_journal(tmp_path: Path) -> None:
    fake, plan = b20()
    client, time = connect(fake)
    journal = Journal(tmp_path / ".reconciler" / "journal.jsonl", clock=lambda: 500.0)

    apply_plan(plan, client, journal=journal, sleep=time.sleep, clock=time.clock)

    assert journal.was_applied(plan.fingerprint()) == 500.0
    assert journal.pending("20003", "deal_tier", "gold") == 500.0
    assert journal.pending("20004", "deal_tier", "platinum") is None
    lines = journal.path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    assert json.loads(lines[1]) == {
        "fingerprint": plan.fingerprint(),
        "at": 500.0,
        "changes": [{"deal": "20003", "property": "deal_tier", "after": "gold"}],
    }


def test_a_verified_apply_is_recorded_so_the_plan_may_be_sent_again(
    tmp_path: Path,
) -> None:
    fake, plan = b18()
    client, time = connect(fake)
    journal = Journal(tmp_path / "journal.jsonl", clock=lambda: 500.0)

    report = apply_plan(
        plan, client, wait=True, journal=journal, sleep=time.sleep, clock=time.clock
    )

    assert report.verify == "verified"
    assert json.loads(journal.path.read_text(encoding="utf-8").splitlines()[-1]) == {
        "fingerprint": plan.fingerprint(),
        "at": 500.0,
        "verified": True,
    }
    assert journal.blocking_apply(plan.fingerprint(), now=501.0) is None
    with pytest.raises(StalePlanError):
        apply_plan(plan, client, journal=journal, sleep=time.sleep, clock=time.clock)
    fake.deals["18001"]["dealstage"] = "qualifiedtobuy"  # someone changed it back
    again = apply_plan(
        plan, client, journal=journal, sleep=time.sleep, clock=time.clock
    )
    assert (states(again), len(fake.updates)) == (["applied"], 2)


@pytest.mark.parametrize(("wait", "hidden_reads"), [(False, 0), (True, 1000)])
def test_an_apply_not_verified_keeps_the_plan_blocked(
    tmp_path: Path, wait: bool, hidden_reads: int
) -> None:
    fake, plan = b18()
    fake.hidden_reads = hidden_reads
    client, time = connect(fake)
    journal = Journal(tmp_path / "journal.jsonl", clock=lambda: 500.0)

    report = apply_plan(
        plan,
        client,
        wait=wait,
        timeout=5.0,
        journal=journal,
        sleep=time.sleep,
        clock=time.clock,
    )

    assert report.verify != "verified"
    assert len(journal.path.read_text(encoding="utf-8").splitlines()) == 1
    assert journal.blocking_apply(plan.fingerprint(), now=501.0) == 500.0


# --- what the report counts and says ---------------------------------------


def test_fail_fast_counts_the_deals_of_the_rejected_batch_as_not_applied() -> None:
    fake, plan = b20()
    client, time = connect(fake)

    report = apply_plan(
        plan, client, fail_fast=True, sleep=time.sleep, clock=time.clock
    )

    counts = report.to_dict()["counts"]
    assert (counts["deals"], counts["deals_applied"], counts["deals_rejected"]) == (
        5,
        2,
        0,
    )
    assert counts["deals_rejected_with_batch"] == 2
    assert counts["deals_not_attempted"] == 1
    assert text(report).splitlines()[-1] == (
        "Apply: 2 deals applied, 2 not applied (rejected batch), 1 not attempted"
        " in 3 batches; 3 requests."
    )


def test_split_summary_counts_the_deal_rejected_alone() -> None:
    fake, plan = b20()
    client, time = connect(fake)

    report = apply_plan(plan, client, sleep=time.sleep, clock=time.clock)

    assert text(report).splitlines()[-1] == (
        "Apply: 4 deals applied, 1 rejected in 3 batches; 6 requests."
    )


def test_failed_batch_counts_its_deals_as_failed() -> None:
    fake, plan = b20()
    fake.override = lambda number, body: (
        httpx.Response(500, json={"message": "oops"}) if number >= 2 else None
    )
    client, time = connect(fake)

    report = apply_plan(plan, client, sleep=time.sleep, clock=time.clock)

    assert text(report).splitlines()[-1] == (
        "Apply: 2 deals applied, 2 failed, 1 not attempted in 3 batches;"
        " 7 requests, 4 retries."
    )


def test_daily_limit_summary_names_the_refused_batch() -> None:
    fake, plan = b16()
    fake.override = lambda number, body: (
        fixture_response("rate_limit_daily_429.json") if number == 2 else None
    )
    client, time = connect(fake)

    report = apply_plan(plan, client, sleep=time.sleep, clock=time.clock)

    assert text(report).splitlines() == [
        "batch 1: applied (1 deal: 16001)",
        "batch 2: refused: daily limit (1 deal: 16002)",
        "batch 3: not attempted (1 deal: 16003)",
        "stopped: daily API limit reached (resets at midnight, account time zone)",
        "verify: not checked",
        "Apply: 1 deal applied, 1 refused (daily limit), 1 not attempted"
        " in 3 batches; 3 requests.",
    ]


def test_daily_limit_known_before_sending_leaves_the_batch_not_attempted() -> None:
    fake, plan = b16()
    spent = {"X-HubSpot-RateLimit-Daily-Remaining": "0"}
    fake.override = lambda number, body: (
        fixture_response("update_accepted_202.json", spent) if number == 1 else None
    )
    client, time = connect(fake)

    report = apply_plan(plan, client, sleep=time.sleep, clock=time.clock)

    assert states(report) == ["applied", "not attempted", "not attempted"]
    assert fake.sent_deals() == [[16001]]
    assert [outcome.requests for outcome in report.batches] == [1, 1, 0]
    assert report.exit_code == ExitCode.DAILY_LIMIT


def test_wait_timeout_shows_values_as_the_plan_does() -> None:
    plan = build_plan(
        [
            change("18001", "dealstage", "qualifiedtobuy", "closedwon"),
            change("18001", "hs_next_step", None, "call", line=2),
            change("18001", "closedate", None, "1735689600000", kind=("date", "date")),
        ]
    )
    fake = FakeHubSpot({"18001": {"dealstage": "qualifiedtobuy"}})
    fake.hidden_reads = 1000
    client, time = connect(fake)

    report = apply_plan(
        plan, client, wait=True, timeout=10.0, sleep=time.sleep, clock=time.clock
    )

    assert text(report).splitlines()[1:5] == [
        "verify: accepted, not yet visible",
        "  deal 18001 closedate: sent 2025-01-01 (1735689600000),"
        " HubSpot still shows (empty)",
        '  deal 18001 dealstage: sent "closedwon",'
        ' HubSpot still shows "qualifiedtobuy"',
        '  deal 18001 hs_next_step: sent "call", HubSpot still shows (empty)',
    ]


def test_markdown_report_escapes_what_hubspot_and_users_wrote() -> None:
    fake, plan = b20()
    message = "<img src=x> is *not* `allowed` | use _gold_ [here](http://x)"
    rejection = {
        "message": "Property values were not valid",
        "correlationId": "c-<1>",
        "validationResults": [{"name": "deal_tier", "message": message}],
    }
    fake.reject = lambda body: False
    fake.override = lambda number, body: (
        httpx.Response(400, json=rejection)
        if any(e["objectId"] == 20004 for e in body)
        else None
    )
    client, time = connect(fake)

    report = apply_plan(plan, client, sleep=time.sleep, clock=time.clock)

    lines = text(report, "markdown").splitlines()
    assert lines[:2] == ["### reconciler apply", ""]
    assert lines[3] == (
        "- batch 2: partly applied (2 deals: 20003, 20004); rejected 20004"
    )
    assert lines[5] == (
        "- rejected: deal 20004 deal\\_tier=platinum:"
        " \\<img src=x\\> is \\*not\\* \\`allowed\\` \\| use \\_gold\\_"
        " \\[here\\](http://x) (desired.yaml:6)"
        " [HubSpot 400, correlationId c-\\<1\\>]"
    )
    assert (
        lines[-1] == "**Apply: 4 deals applied, 1 rejected in 3 batches; 6 requests.**"
    )


# --- interruptions (Ctrl-C) ------------------------------------------------


def test_interrupt_while_a_batch_is_out_stops_and_reports_it_unanswered(
    tmp_path: Path,
) -> None:
    fake, plan = b16()
    fake.override = interrupt_update(2)
    client, time = connect(fake)
    journal = Journal(tmp_path / "journal.jsonl", clock=lambda: 500.0)

    report = apply_plan(
        plan, client, wait=True, journal=journal, sleep=time.sleep, clock=time.clock
    )

    assert fake.sent_deals() == [[16001], [16002]]
    assert states(report) == ["applied", "interrupted", "not attempted"]
    assert report.batches[1].unanswered == ["16002"]
    assert report.exit_code == ExitCode.INTERRUPTED
    assert report.verify == "not checked"
    assert journal.pending("16001", "amount", "1") == 500.0
    # Sent but unanswered: HubSpot may have taken it, so it counts as submitted.
    assert journal.pending("16002", "amount", "2") == 500.0
    assert text(report).splitlines() == [
        "batch 1: applied (1 deal: 16001)",
        "batch 2: interrupted (1 deal: 16002): interrupted before HubSpot"
        " answered; HubSpot may still apply it",
        "batch 3: not attempted (1 deal: 16003)",
        "stopped: interrupted; make a new plan to send the deals not applied",
        "verify: not checked",
        "Apply: 1 deal applied, 1 unanswered (interrupted), 1 not attempted"
        " in 3 batches; 3 requests.",
    ]
    assert report.to_dict()["exit_code"] == 130


def test_interrupt_while_splitting_keeps_what_was_learnt() -> None:
    fake, plan = b20()
    fake.override = interrupt_update(4)
    client, time = connect(fake)

    report = apply_plan(plan, client, sleep=time.sleep, clock=time.clock)

    assert fake.sent_deals() == [[20001, 20002], [20003, 20004], [20003], [20004]]
    assert states(report) == ["applied", "partly applied", "not attempted"]
    outcome = report.batches[1].to_dict()
    assert (outcome["applied"], outcome["unanswered"], outcome["requests"]) == (
        ["20003"],
        ["20004"],
        3,
    )
    assert report.rejected == []
    assert text(report).splitlines()[1] == (
        "batch 2: partly applied (2 deals: 20003, 20004); unanswered 20004"
    )
    assert text(report).splitlines()[-1] == (
        "Apply: 3 deals applied, 1 unanswered (interrupted), 1 not attempted"
        " in 3 batches; 5 requests."
    )


def test_interrupt_while_pacing_marks_the_unsent_batch_not_attempted() -> None:
    fake, plan = b16()
    time = FakeTime()

    def sleep(seconds: float) -> None:
        raise KeyboardInterrupt

    http = httpx.Client(transport=httpx.MockTransport(fake))
    client = HubSpotClient(http, TOKEN, rate_limit=2, sleep=sleep, clock=time.clock)

    report = apply_plan(plan, client, sleep=sleep, clock=time.clock)

    assert fake.sent_deals() == [[16001]]
    assert states(report) == ["applied", "not attempted", "not attempted"]
    assert [outcome.requests for outcome in report.batches] == [1, 0, 0]
    assert report.stop_reason == (
        "interrupted; make a new plan to send the deals not applied"
    )
    assert report.exit_code == ExitCode.INTERRUPTED


def test_interrupt_during_the_stale_check_sends_nothing() -> None:
    _, plan = b20()

    def handler(request: httpx.Request) -> httpx.Response:
        raise KeyboardInterrupt

    http = httpx.Client(transport=httpx.MockTransport(handler))
    client = HubSpotClient(http, TOKEN)

    report = apply_plan(plan, client)

    assert states(report) == ["not attempted"] * 3
    assert report.stop_reason == "interrupted before anything was sent"
    assert text(report).splitlines()[-1] == (
        "Apply: 0 deals applied, 5 not attempted in 3 batches; 1 request."
    )
    assert report.exit_code == ExitCode.INTERRUPTED


def test_interrupt_while_waiting_reports_what_the_last_read_showed() -> None:
    fake, plan = b18()
    fake.hidden_reads = 1000
    time = FakeTime()

    def sleep(seconds: float) -> None:
        if len(time.sleeps) == 2:
            raise KeyboardInterrupt
        time.sleep(seconds)

    client, _ = connect(fake, time)

    report = apply_plan(plan, client, wait=True, sleep=sleep, clock=time.clock)

    assert states(report) == ["applied"]
    assert len(fake.reads) == 3
    assert report.verify == "accepted, not yet visible"
    assert [(u.change.deal, u.current) for u in report.unseen] == [
        ("18001", "qualifiedtobuy")
    ]
    assert report.stop_reason == (
        "interrupted while waiting for HubSpot to show the values"
    )
    assert report.exit_code == ExitCode.INTERRUPTED


# --- re-batching a saved plan ----------------------------------------------


def test_rebatch_keeps_changes_checks_and_fingerprint() -> None:
    check = change("16002", "dealstage", "closedwon", "closedwon")
    plan = build_plan(b16()[1].changes, 100, 4, [check])
    gone = Finding(None, "not found in HubSpot", "missing-deal", deal="16009")
    plan.skipped.append(gone)

    rebatched = rebatch_plan(plan, 2)

    assert [batch.deals for batch in rebatched.batches] == [
        ["16001", "16002"],
        ["16003"],
    ]
    assert rebatched.batches[0].checks == (check,)
    assert rebatched.changes == plan.changes
    assert (rebatched.batch_size, rebatched.unchanged_deals) == (2, 4)
    assert rebatched.skipped == [gone]
    assert rebatched.fingerprint() == plan.fingerprint()


def test_rebatch_refuses_a_plan_it_would_change() -> None:
    first, second = b16()[1].changes[:2]
    plan = Plan([Batch(1, (second, first))])

    with pytest.raises(UsageError) as caught:
        rebatch_plan(plan, 1)

    assert str(caught.value) == (
        "--batch-size cannot re-batch this plan without changing it;"
        " make a new plan with --batch-size instead"
    )
