"""The real CLI against the sandbox server on 127.0.0.1."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.properties import load_definitions, load_pipelines
from reconciler.sandbox import Sandbox
from reconciler.snapshot import Snapshot, load_snapshot
from tests.conftest import CASES, FIXTURES, ROOT, needs_shared
from tests.fakes import run_cli as run

TOKEN = "pat-na1-e2e-secret-token"
E2E = FIXTURES / "e2e"


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[type[Sandbox]]:
    """Start sandboxes on loopback with the token and base URL in the env."""
    started: list[Sandbox] = []

    def start(
        snapshot: Snapshot, properties: Path | None = None, **options: object
    ) -> Sandbox:
        sandbox = Sandbox(
            snapshot,
            load_definitions(properties),
            load_pipelines(None),
            TOKEN,
            log_path=tmp_path / "requests.jsonl",
            **options,
        )
        sandbox.start()
        started.append(sandbox)
        monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", TOKEN)
        monkeypatch.setenv("HUBSPOT_BASE_URL", sandbox.url)
        return sandbox

    yield start  # type: ignore[misc]
    for sandbox in started:
        sandbox.stop()


def change_in_hubspot(sandbox: Sandbox, deal: int, name: str, value: str) -> None:
    """Someone else changes a value in HubSpot (here, the sandbox)."""
    body = [{"objectId": deal, "properties": [{"name": name, "value": value}]}]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    url = f"{sandbox.url}/deals/v1/batch-async/update"
    assert httpx.post(url, json=body, headers=headers).status_code == 202


def update_requests(tmp_path: Path) -> list[dict[str, Any]]:
    lines = (tmp_path / "requests.jsonl").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    return [e for e in entries if e["path"] == "/deals/v1/batch-async/update"]


def write_deals(folder: Path, count: int) -> Path:
    """deals.yaml in ``folder``: deals 9000.. to amount 1000.., stage contractsent."""
    path = folder / "deals.yaml"
    lines = ["deals:"]
    for n in range(count):
        lines.append(
            f'  "{9000 + n}":\n    amount: {n + 1000}\n    dealstage: contractsent'
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def seed(count: int) -> Snapshot:
    deals = {
        str(9000 + n): {
            "amount": str(n),
            "dealstage": "qualifiedtobuy",
            "pipeline": "default",
        }
        for n in range(count)
    }
    deals["9001"]["amount"] = "1001.00"  # already right, written differently
    deals["9001"]["dealstage"] = "contractsent"
    return Snapshot(deals=deals)


def test_plan_apply_wait_then_plan_is_empty(
    serve: type[Sandbox], tmp_path: Path
) -> None:
    serve(seed(250))
    desired = write_deals(tmp_path, 250)

    code, out, err = run(
        "plan", desired, "-o", tmp_path / "plan.json", "--detailed-exitcode"
    )
    assert code == 2, err
    assert "Plan: 249 deals to update, 498 properties to change in 3 batches;" in out

    code, out, err = run("apply", tmp_path / "plan.json", "--wait", "--timeout", "30")
    assert code == 0, out + err
    assert "verify: verified" in out
    assert "Apply: 249 deals applied, 0 rejected in 3 batches;" in out

    code, out, _ = run("plan", desired, "--detailed-exitcode")
    assert code == 0
    assert out.startswith("No changes.")
    sent = update_requests(tmp_path)
    assert len(sent) == 3  # ceil(249 changed deals / 100)
    assert [len(entry["body"]) for entry in sent] == [100, 100, 49]
    assert sent[0]["body"][0] == {
        "objectId": 9000,
        "properties": [
            {"name": "amount", "value": "1000"},
            {"name": "dealstage", "value": "contractsent"},
        ],
    }


def test_stale_plan_sends_nothing(serve: type[Sandbox], tmp_path: Path) -> None:
    sandbox = serve(seed(3))
    desired = write_deals(tmp_path, 3)
    assert run("plan", desired, "-o", tmp_path / "plan.json")[0] == 0

    change_in_hubspot(sandbox, 9002, "amount", "77")

    code, _, err = run("apply", tmp_path / "plan.json")
    assert code == 4
    assert 'deal 9002 amount: planned against "2", now "77"' in err
    assert "nothing was sent" in err
    assert len(update_requests(tmp_path)) == 1  # only the change made above


def plan_b20_then_drop_platinum(serve: type[Sandbox], tmp_path: Path) -> Path:
    """Case B20: plan in batches of 2, then serve HubSpot without "platinum"."""
    case = CASES / "B20"
    code, _, err = run(
        "plan",
        case / "desired.yaml",
        "--snapshot",
        case / "snapshot.json",
        "--properties",
        E2E / "tier_properties.json",
        "--batch-size",
        "2",
        "-o",
        tmp_path / "plan.json",
    )
    assert code == 0, err
    snapshot = load_snapshot([case / "snapshot.json"])
    serve(snapshot, E2E / "tier_properties_without_platinum.json")
    return case


@needs_shared
def test_rejected_deal_is_isolated_and_the_rest_applied(
    serve: type[Sandbox], tmp_path: Path
) -> None:
    case = plan_b20_then_drop_platinum(serve, tmp_path)
    code, out, _ = run("apply", tmp_path / "plan.json")
    assert code == 3
    assert "batch 1: applied (2 deals: 20001, 20002)" in out
    assert "batch 2: partly applied (2 deals: 20003, 20004); rejected 20004" in out
    assert "batch 3: applied (1 deal: 20005)" in out
    assert (
        "rejected: deal 20004 deal_tier=platinum:"
        " platinum was not one of the allowed options"
    ) in out
    assert f"({case / 'desired.yaml'}:6)" in out

    code, out, _ = run(
        "plan",
        case / "desired.yaml",
        "--properties",
        E2E / "tier_properties.json",
        "--format",
        "json",
    )
    remaining = json.loads(out)["batches"]
    assert [deal["id"] for batch in remaining for deal in batch["deals"]] == ["20004"]


@needs_shared
def test_fail_fast_stops_after_the_first_rejected_batch(
    serve: type[Sandbox], tmp_path: Path
) -> None:
    plan_b20_then_drop_platinum(serve, tmp_path)
    code, out, _ = run("apply", tmp_path / "plan.json", "--fail-fast")
    assert code == 3
    assert re.search(
        r"batch 2: rejected \(2 deals: 20003, 20004\): platinum was not one of the"
        r" allowed options.* \[correlationId [0-9a-f-]{36}\]",
        out,
    )
    assert "batch 3: not attempted (1 deal: 20005)" in out
    assert len(update_requests(tmp_path)) == 2


@needs_shared
def test_wait_timeout_and_pending_changes_in_the_next_plan(
    serve: type[Sandbox], tmp_path: Path
) -> None:
    case = CASES / "B18"
    serve(load_snapshot([case / "snapshot.json"]), delay=60.0)
    run("plan", case / "desired.yaml", "-o", tmp_path / "plan.json")

    code, out, _ = run("apply", tmp_path / "plan.json", "--wait", "--timeout", "0.5")
    assert code == 5
    assert "verify: accepted, not yet visible" in out
    assert (
        'deal 18001 dealstage: sent "closedwon", HubSpot still shows "qualifiedtobuy"'
        in out
    )

    code, out, _ = run("plan", case / "desired.yaml")
    assert code == 0
    assert re.search(r"dealstage .* \[submitted \d+ s ago, awaiting processing\]", out)

    saved = tmp_path / "again.json"
    code, out, _ = run("plan", case / "desired.yaml", "--format", "json", "-o", saved)
    change = json.loads(out)["batches"][0]["deals"][0]["changes"][0]
    assert re.fullmatch(r"submitted \d+ s ago, awaiting processing", change["note"])
    # The saved file is the same wherever and whenever it is made.
    assert (
        "note"
        not in json.loads(saved.read_text())["batches"][0]["deals"][0]["changes"][0]
    )


def test_token_never_appears_in_any_output(
    serve: type[Sandbox], tmp_path: Path
) -> None:
    serve(seed(2))
    desired = write_deals(tmp_path, 2)
    outputs = [run("-vv", "plan", desired, "-o", tmp_path / "plan.json")]
    outputs.append(run("-vv", "apply", tmp_path / "plan.json", "--wait"))
    outputs.append(run("-vv", "snapshot", desired, "-o", tmp_path / "snap.json"))
    for code, out, err in outputs:
        assert code == 0, err
        assert TOKEN not in out + err
    assert "POST /deals/v1/batch-async/update 202" in outputs[1][2]
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert TOKEN not in path.read_text()


def test_wrong_token_is_refused_without_echoing_it(
    serve: type[Sandbox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve(seed(2))
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", "pat-wrong-token")
    desired = write_deals(tmp_path, 1)
    code, out, err = run("plan", desired)
    assert code == 1
    assert "401" in err
    assert "pat-wrong-token" not in out + err


def test_snapshot_command_saves_live_values(
    serve: type[Sandbox], tmp_path: Path
) -> None:
    serve(seed(3))
    desired = write_deals(tmp_path, 3)
    desired.write_text(desired.read_text() + '  "1":\n    amount: 5\n')
    code, _, err = run("snapshot", desired, "-o", tmp_path / "snap.json")
    assert code == 0, err
    saved = json.loads((tmp_path / "snap.json").read_text())
    assert saved["deals"]["9002"]["amount"] == "2"
    assert saved["deals"]["9002"]["dealstage"] == "qualifiedtobuy"
    assert list(saved["missing"]) == ["1"]
    assert err.splitlines() == [
        f"Saved 3 deals to {tmp_path / 'snap.json'}.",
        "  deal 1: Could not get some DEAL objects, they may be deleted or not"
        " exist. Check that ids are valid.",
    ]


def test_quickstart_example_plans_against_the_bundled_snapshot() -> None:
    examples = ROOT / "examples"
    code, out, err = run(
        "plan", examples / "deals", "--snapshot", examples / "snapshot.json"
    )
    assert code == 0, err
    assert "Plan: 7 deals to update, 16 properties to change in 1 batch;" in out


def test_apply_of_paths_confirms_before_sending(
    serve: type[Sandbox], tmp_path: Path
) -> None:
    serve(seed(2))
    desired = write_deals(tmp_path, 2)
    code, out, err = run("apply", desired)
    assert code == 64
    assert "pass --auto-approve" in err
    assert "Plan: 1 deal to update" in out
    assert update_requests(tmp_path) == []

    code, out, err = run("apply", desired, "--auto-approve", "--wait")
    assert code == 0, err
    assert "Apply: 1 deal applied, 0 rejected in 1 batch;" in out
    assert len(update_requests(tmp_path)) == 1


def test_plan_is_stale_when_an_unchanged_managed_value_moved(
    serve: type[Sandbox], tmp_path: Path
) -> None:
    sandbox = serve(seed(3))
    desired = write_deals(tmp_path, 3)
    # Deal 9001 already holds its desired dealstage; only its amount changes.
    desired.write_text(desired.read_text().replace("amount: 1001", "amount: 1500"))
    assert run("plan", desired, "-o", tmp_path / "plan.json")[0] == 0
    saved = json.loads((tmp_path / "plan.json").read_text())
    deal = saved["batches"][0]["deals"][1]
    assert (deal["id"], [c["property"] for c in deal["unchanged"]]) == (
        "9001",
        ["dealstage"],
    )

    change_in_hubspot(sandbox, 9001, "dealstage", "closedwon")

    code, _, err = run("apply", tmp_path / "plan.json")
    assert code == 4
    assert 'deal 9001 dealstage: planned against "contractsent", now "closedwon"' in err
    assert len(update_requests(tmp_path)) == 1


def test_apply_of_a_saved_plan_rebatches_at_the_given_batch_size(
    serve: type[Sandbox], tmp_path: Path
) -> None:
    serve(seed(4))
    desired = write_deals(tmp_path, 4)
    assert run("plan", desired, "-o", tmp_path / "plan.json")[0] == 0
    saved = json.loads((tmp_path / "plan.json").read_text())
    assert (saved["batch_size"], len(saved["batches"])) == (100, 1)

    code, out, err = run("apply", tmp_path / "plan.json", "--batch-size", "1")
    assert code == 0, out + err
    assert "batch 3: applied (1 deal: 9003)" in out
    assert "Apply: 3 deals applied, 0 rejected in 3 batches; 4 requests." in out
    sent = update_requests(tmp_path)
    assert [[e["objectId"] for e in entry["body"]] for entry in sent] == [
        [9000],
        [9002],
        [9003],
    ]


def test_a_saved_plan_is_not_resent_while_hubspot_may_be_processing(
    serve: type[Sandbox], tmp_path: Path
) -> None:
    serve(seed(2), delay=60.0)
    desired = write_deals(tmp_path, 2)
    run("plan", desired, "-o", tmp_path / "plan.json")
    assert run("apply", tmp_path / "plan.json")[0] == 0

    code, _, err = run("apply", tmp_path / "plan.json")
    assert code == 1
    assert "HubSpot may still be processing it" in err
    assert len(update_requests(tmp_path)) == 1


def test_a_verified_plan_applied_again_is_stale(
    serve: type[Sandbox], tmp_path: Path
) -> None:
    serve(seed(2))
    desired = write_deals(tmp_path, 2)
    run("plan", desired, "-o", tmp_path / "plan.json")
    assert run("apply", tmp_path / "plan.json", "--wait")[0] == 0

    code, _, err = run("apply", tmp_path / "plan.json")
    assert code == 4
    assert 'deal 9000 amount: planned against "0", now "1000"' in err


def test_a_value_changed_back_after_an_apply_can_be_put_back(
    serve: type[Sandbox], tmp_path: Path
) -> None:
    sandbox = serve(seed(2))
    desired = write_deals(tmp_path, 2)
    assert run("apply", desired, "--auto-approve")[0] == 0  # no --wait
    code, out, _ = run("plan", desired)  # HubSpot shows the values: seen
    assert (code, out.splitlines()[0]) == (
        0,
        "No changes. HubSpot already holds the desired values (2 deals checked).",
    )

    change_in_hubspot(sandbox, 9000, "amount", "0")

    code, out, _ = run("plan", desired, "-o", tmp_path / "again.json")
    assert code == 0
    assert '      amount  "0" -> "1000"' in out.splitlines()
    code, out, err = run("apply", tmp_path / "again.json", "--wait")
    assert code == 0, err
    assert sandbox.deals["9000"]["amount"] == "1000"


def test_resend_overrides_the_processing_guard(
    serve: type[Sandbox], tmp_path: Path
) -> None:
    serve(seed(2), delay=60.0)
    desired = write_deals(tmp_path, 2)
    run("plan", desired, "-o", tmp_path / "plan.json")
    assert run("apply", tmp_path / "plan.json")[0] == 0
    code, _, err = run("apply", tmp_path / "plan.json")
    assert code == 1
    assert "apply with --resend" in err
    assert run("apply", tmp_path / "plan.json", "--resend")[0] == 0
    assert len(update_requests(tmp_path)) == 2


def test_plan_goes_on_without_notes_when_the_journal_is_unreadable(
    serve: type[Sandbox], tmp_path: Path
) -> None:
    serve(seed(2))
    desired = write_deals(tmp_path, 2)
    (tmp_path / ".reconciler" / "journal.jsonl").mkdir(parents=True)
    code, out, err = run("plan", desired)
    assert code == 0
    assert "Plan: 1 deal to update" in out
    assert "cannot read the apply journal" in err


def test_snapshot_does_not_need_valid_values(
    serve: type[Sandbox], tmp_path: Path
) -> None:
    serve(seed(2))
    desired = tmp_path / "deals.yaml"
    desired.write_text('deals:\n  "9001":\n    amount: "1,500"\n')
    code, _, err = run("snapshot", desired, "-o", tmp_path / "snap.json")
    assert code == 0, err
    saved = json.loads((tmp_path / "snap.json").read_text())
    assert saved["deals"]["9001"]["amount"] == "1001.00"
