"""The sandbox server, exercised over loopback HTTP with httpx."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.errors import UsageError
from reconciler.properties import (
    load_definitions,
    load_pipelines,
    parse_definitions,
    parse_pipelines,
)
from reconciler.sandbox import Sandbox, parse_rate, run_sandbox
from reconciler.snapshot import load_snapshot

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "sandbox"
TOKEN = "pat-na1-sandbox-test-token"
UPDATE = "/deals/v1/batch-async/update"
READ = "/crm/v3/objects/deals/batch/read"


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def batch(name: str) -> Any:
    return json.loads((FIXTURES / "batches.json").read_text("utf-8"))[name]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def serve(clock: FakeClock) -> Iterator[Callable[..., Sandbox]]:
    """Start a sandbox on a free port, seeded with five deals; stop it after."""
    started: list[Sandbox] = []

    def start(**options: Any) -> Sandbox:
        sandbox = Sandbox(
            load_snapshot([FIXTURES / "seed.json"]),
            load_definitions(None),
            load_pipelines(FIXTURES / "pipelines.json"),
            TOKEN,
            clock=clock,
            **options,
        )
        sandbox.start()
        started.append(sandbox)
        return sandbox

    yield start
    for sandbox in started:
        sandbox.stop()


@pytest.fixture
def sandbox(serve: Callable[..., Sandbox]) -> Sandbox:
    return serve()


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=sandbox.url, headers=headers) as http:
        yield http


def client_for(sandbox: Sandbox, token: str | None = TOKEN) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=sandbox.url, headers=headers)


# --- batch update: accepted --------------------------------------------------


def test_valid_batch_answers_202_with_empty_body_and_applies_at_once(
    sandbox: Sandbox, client: httpx.Client
) -> None:
    response = client.post(UPDATE, json=batch("valid"))

    assert response.status_code == 202
    assert response.content == b""
    assert sandbox.deals["101"]["amount"] == "2500"
    assert sandbox.deals["101"]["hs_priority"] == "low"
    assert sandbox.deals["102"]["dealstage"] == "contractsent"
    assert sandbox.deals["102"]["hs_next_step"] == "Send the order form"
    deal = client.get("/deals/v1/deal/101").json()
    assert deal["properties"]["amount"]["value"] == "2500"
    assert deal["properties"]["amount"]["source"] == "API"


def test_delayed_batch_is_invisible_until_its_time(
    serve: Callable[..., Sandbox], clock: FakeClock
) -> None:
    sandbox = serve(delay=5.0)
    with client_for(sandbox) as client:
        assert client.post(UPDATE, json=batch("valid")).status_code == 202
        clock.advance(4.9)
        before = client.get("/deals/v1/deal/101").json()["properties"]["amount"]
        clock.advance(0.1)
        after = client.get("/deals/v1/deal/101").json()["properties"]["amount"]

    assert before["value"] == "1500.00"
    assert after["value"] == "2500"
    assert sandbox.deals["102"]["dealstage"] == "contractsent"


def test_empty_string_clears_a_value(sandbox: Sandbox, client: httpx.Client) -> None:
    assert client.post(UPDATE, json=batch("clear")).status_code == 202

    v1 = client.get("/deals/v1/deal/101").json()["properties"]["hs_priority"]
    v3 = client.post(
        READ, json={"inputs": [{"id": "101"}], "properties": ["hs_priority"]}
    )
    assert v1["value"] == ""
    assert v3.json()["results"][0]["properties"] == {"hs_priority": None}
    assert sandbox.deals["101"]["hs_priority"] == ""


def test_iso_datetime_is_stored_as_epoch_milliseconds(
    sandbox: Sandbox, client: httpx.Client
) -> None:
    assert client.post(UPDATE, json=batch("iso_datetime")).status_code == 202

    assert sandbox.deals["104"]["closedate"] == "1806485400000"


def test_versions_list_the_newest_value_first(client: httpx.Client) -> None:
    client.post(UPDATE, json=batch("valid"))

    deal = client.get("/deals/v1/deal/101", params={"includePropertyVersions": "true"})
    versions = deal.json()["properties"]["amount"]["versions"]
    assert [version["value"] for version in versions] == ["2500", "1500.00"]
    assert [version["source"] for version in versions] == ["API", "CRM_UI"]


def test_pipeline_move_with_a_stage_of_the_new_pipeline_is_accepted(
    sandbox: Sandbox, client: httpx.Client
) -> None:
    response = client.post(UPDATE, json=batch("move_pipeline_with_stage"))

    assert response.status_code == 202
    assert sandbox.deals["102"]["pipeline"] == "renewals"
    assert sandbox.deals["102"]["dealstage"] == "renewal-won"


# --- batch update: refused ---------------------------------------------------


def refused(response: httpx.Response) -> list[dict[str, Any]]:
    """Check the v1 validation envelope and return its results."""
    body = response.json()
    assert response.status_code == 400
    assert body["status"] == "error"
    assert body["message"] == "Property values were not valid"
    assert uuid.UUID(body["correlationId"]).version == 4
    assert len(body["requestId"]) == 32
    return list(body["validationResults"])


def test_one_invalid_value_refuses_the_whole_batch(
    sandbox: Sandbox, client: httpx.Client
) -> None:
    results = refused(client.post(UPDATE, json=batch("one_invalid_option")))

    assert results == [
        {
            "isValid": False,
            "message": "urgent was not one of the allowed options:"
            " ['high', 'low', 'medium']",
            "error": "INVALID_OPTION",
            "name": "hs_priority",
        }
    ]
    assert sandbox.deals["101"]["amount"] == "1500.00"
    assert "hs_priority" not in sandbox.deals["102"]


def test_every_invalid_value_is_listed(client: httpx.Client) -> None:
    results = refused(client.post(UPDATE, json=batch("several_invalid")))

    assert [(r["name"], r["error"]) for r in results] == [
        ("amount", "INVALID_INTEGER"),
        ("closedate", "INVALID_LONG"),
        ("dealtype", "INVALID_OPTION"),
    ]
    assert results[0]["message"] == "1,500 was not a valid number."
    assert results[1]["message"] == "next week is not a valid datetime."


def test_more_than_100_deals_are_refused(
    sandbox: Sandbox, client: httpx.Client
) -> None:
    body = [{"objectId": 101, "properties": [{"name": "amount", "value": "1"}]}] * 101

    response = client.post(UPDATE, json=body)

    assert response.status_code == 400
    assert response.json()["message"] == (
        "The batch holds 101 deals; at most 100 deals may be updated in one request"
    )
    assert sandbox.deals["101"]["amount"] == "1500.00"


def test_unknown_deal_refuses_the_batch_and_names_it(
    sandbox: Sandbox, client: httpx.Client
) -> None:
    response = client.post(UPDATE, json=batch("unknown_deal"))

    body = response.json()
    assert response.status_code == 400
    assert body["message"].endswith("Check that objectIds are valid: 999")
    assert body["context"] == {"ids": ["999"]}
    assert sandbox.deals["101"]["amount"] == "1500.00"


def test_unknown_property_is_property_doesnt_exist(client: httpx.Client) -> None:
    results = refused(client.post(UPDATE, json=batch("unknown_property")))

    assert results == [
        {
            "isValid": False,
            "message": 'Property "deal_colour" does not exist',
            "error": "PROPERTY_DOESNT_EXIST",
            "name": "deal_colour",
        }
    ]


def test_read_only_and_calculated_properties_are_refused(client: httpx.Client) -> None:
    results = refused(client.post(UPDATE, json=batch("read_only_property")))

    assert [(r["name"], r["error"], r["message"]) for r in results] == [
        (
            "hs_is_closed_won",
            "READ_ONLY_VALUE",
            '"hs_is_closed_won" is a calculated property; its value cannot be set.',
        ),
        (
            "days_to_close",
            "READ_ONLY_VALUE",
            '"days_to_close" is a read only property; its value cannot be set.',
        ),
    ]


def test_stage_of_another_pipeline_is_refused(
    sandbox: Sandbox, client: httpx.Client
) -> None:
    results = refused(client.post(UPDATE, json=batch("stage_of_other_pipeline")))

    assert results == [
        {
            "isValid": False,
            "message": "renewal-won was not one of the allowed options for pipeline"
            " default: ['appointmentscheduled', 'qualifiedtobuy', 'contractsent',"
            " 'closedwon', 'closedlost']",
            "error": "INVALID_OPTION",
            "name": "dealstage",
        }
    ]
    assert sandbox.deals["101"]["dealstage"] == "contractsent"


def test_pipeline_move_leaving_the_old_stage_is_refused(client: httpx.Client) -> None:
    results = refused(client.post(UPDATE, json=batch("move_pipeline_without_stage")))

    assert [(r["name"], r["error"]) for r in results] == [
        ("dealstage", "INVALID_OPTION")
    ]
    assert results[0]["message"].startswith(
        "the deal's stage qualifiedtobuy is not a stage of pipeline renewals"
    )


def test_null_and_number_values_are_refused_not_cleared(
    sandbox: Sandbox, client: httpx.Client
) -> None:
    results = refused(client.post(UPDATE, json=batch("null_and_number_values")))

    assert [(r["name"], r["error"], r["message"]) for r in results] == [
        (
            "hs_next_step",
            "INVALID_VALUE",
            "null is not a string; property values are strings",
        ),
        (
            "amount",
            "INVALID_VALUE",
            "2500 is not a string; property values are strings",
        ),
    ]
    assert sandbox.deals["101"]["amount"] == "1500.00"


def test_an_object_instead_of_an_array_is_invalid_json(client: httpx.Client) -> None:
    response = client.post(UPDATE, json=batch("not_an_array"))

    assert response.status_code == 400
    assert response.json()["message"] == (
        "Invalid input JSON: expected a JSON array of"
        ' {"objectId", "properties"} objects'
    )


def test_unparsable_body_names_line_and_column(client: httpx.Client) -> None:
    response = client.post(
        UPDATE,
        content=b'[{"objectId": 101,}]',
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 400
    assert response.json()["message"] == (
        "Invalid input JSON on line 1, column 19: Expecting property name enclosed in"
        " double quotes"
    )


# --- authentication ----------------------------------------------------------


@pytest.mark.parametrize("token", [None, "pat-na1-wrong"])
def test_missing_or_wrong_token_is_401(sandbox: Sandbox, token: str | None) -> None:
    with client_for(sandbox, token) as client:
        response = client.post(UPDATE, json=batch("valid"))

    body = response.json()
    assert response.status_code == 401
    assert body["status"] == "error"
    assert body["category"] == "INVALID_AUTHENTICATION"
    assert body["message"].startswith("Authentication credentials not found.")
    assert TOKEN not in response.text
    assert sandbox.deals["101"]["amount"] == "1500.00"


# --- reads -------------------------------------------------------------------


def test_batch_read_returns_only_requested_properties(client: httpx.Client) -> None:
    request = {
        "inputs": [{"id": "101"}, {"id": "102"}],
        "properties": ["amount", "closedate", "hs_next_step"],
    }

    response = client.post(READ, json=request)

    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "COMPLETE"
    assert [record["id"] for record in body["results"]] == ["101", "102"]
    assert body["results"][0]["properties"] == {
        "amount": "1500.00",
        "closedate": "2027-03-26T00:00:00Z",
        "hs_next_step": None,
    }
    assert body["results"][0]["archived"] is False
    assert "errors" not in body


def test_batch_read_with_a_missing_id_is_207(client: httpx.Client) -> None:
    request = {"inputs": [{"id": "101"}, {"id": "404404"}], "properties": ["dealname"]}

    response = client.post(READ, json=request)

    body = response.json()
    assert response.status_code == 207
    assert body["results"][0]["properties"] == {"dealname": "Acme renewal"}
    assert len(body["results"]) == 1
    assert body["numErrors"] == 1
    assert body["errors"] == [
        {
            "status": "error",
            "category": "OBJECT_NOT_FOUND",
            "message": "Could not get some DEAL objects, they may be deleted or not"
            " exist. Check that ids are valid.",
            "context": {"ids": ["404404"]},
        }
    ]


def test_batch_read_of_more_than_100_ids_is_400(client: httpx.Client) -> None:
    request = {"inputs": [{"id": str(n)} for n in range(101)], "properties": []}

    response = client.post(READ, json=request)

    assert response.status_code == 400
    assert response.json()["category"] == "VALIDATION_ERROR"


def test_v1_deal_has_hubspot_shape(client: httpx.Client) -> None:
    deal = client.get("/deals/v1/deal/103").json()

    assert deal["dealId"] == 103
    assert deal["isDeleted"] is False
    assert sorted(deal["properties"]) == ["amount", "dealname", "dealstage", "pipeline"]
    value = deal["properties"]["dealstage"]
    assert value["value"] == "renewal-open"
    assert value["versions"][0]["value"] == "renewal-open"
    assert value["versions"][0]["name"] == "dealstage"


def test_unknown_v1_deal_is_404(client: httpx.Client) -> None:
    response = client.get("/deals/v1/deal/999")

    assert response.status_code == 404
    assert response.json()["message"] == "Deal 999 does not exist"


def test_paged_walks_the_cursor(client: httpx.Client) -> None:
    pages = []
    offset = 0
    while True:
        page = client.get("/deals/v1/deal/paged", params={"limit": 2, "offset": offset})
        body = page.json()
        pages.append(([deal["dealId"] for deal in body["deals"]], body["offset"]))
        offset = body["offset"]
        if not body["hasMore"]:
            break

    assert pages == [([101, 102], 103), ([103, 104], 105), ([105], 106)]


def test_paged_returns_only_the_properties_asked_for(client: httpx.Client) -> None:
    bare = client.get("/deals/v1/deal/paged", params={"limit": 1}).json()
    named = client.get(
        "/deals/v1/deal/paged",
        params=[("limit", "1"), ("properties", "dealname"), ("properties", "amount")],
    ).json()

    assert bare["deals"][0]["properties"] == {}
    values = {name: v["value"] for name, v in named["deals"][0]["properties"].items()}
    assert values == {"amount": "1500.00", "dealname": "Acme renewal"}


def test_properties_endpoint_round_trips_the_definitions(client: httpx.Client) -> None:
    body = client.get("/crm/v3/properties/deals").json()

    assert parse_definitions(body, "sandbox") == load_definitions(None)
    amount = next(item for item in body["results"] if item["name"] == "amount")
    assert amount["type"] == "number"
    assert amount["fieldType"] == "number"
    assert amount["modificationMetadata"]["readOnlyValue"] is False


def test_pipelines_endpoint_round_trips_the_pipelines(client: httpx.Client) -> None:
    body = client.get("/crm/v3/pipelines/deals").json()

    assert parse_pipelines(body, "sandbox") == load_pipelines(
        FIXTURES / "pipelines.json"
    )
    assert body["results"][1]["stages"][0] == {
        "id": "renewal-open",
        "label": "Open",
        "displayOrder": 0,
        "archived": False,
    }


def test_unknown_path_is_404_json_and_wrong_method_405(client: httpx.Client) -> None:
    missing = client.get("/crm/v3/objects/contacts")
    wrong = client.get(UPDATE)

    assert missing.status_code == 404
    assert missing.json()["message"] == "resource not found"
    assert wrong.status_code == 405


# --- rate limit --------------------------------------------------------------


def test_rate_limit_headers_and_429(
    serve: Callable[..., Sandbox], clock: FakeClock
) -> None:
    sandbox = serve(rate=2)
    with client_for(sandbox) as client:
        first = client.get("/crm/v3/pipelines/deals")
        clock.advance(5)
        second = client.get("/crm/v3/pipelines/deals")
        clock.advance(1)
        refused_call = client.get("/crm/v3/pipelines/deals")
        clock.advance(4.5)
        # The first call has left the window; the refused one never counted.
        later = client.get("/crm/v3/pipelines/deals")

    assert first.headers["X-HubSpot-RateLimit-Max"] == "2"
    assert first.headers["X-HubSpot-RateLimit-Remaining"] == "1"
    assert first.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    assert first.headers["X-HubSpot-RateLimit-Daily"] == "1000000"
    assert first.headers["X-HubSpot-RateLimit-Daily-Remaining"] == "999999"
    assert second.headers["X-HubSpot-RateLimit-Remaining"] == "0"
    assert refused_call.status_code == 429
    assert refused_call.headers["X-HubSpot-RateLimit-Remaining"] == "0"
    assert refused_call.headers["Retry-After"] == "4"
    body = refused_call.json()
    assert uuid.UUID(body.pop("correlationId"))
    assert body == {
        "status": "error",
        "message": "You have reached your ten_secondly_rolling limit.",
        "errorType": "RATE_LIMIT",
        "policyName": "TEN_SECONDLY_ROLLING",
        "groupName": "publicapi:private-app-api-calls-ten-secondly:0",
    }
    assert later.status_code == 200
    assert later.headers["X-HubSpot-RateLimit-Remaining"] == "0"
    assert later.headers["X-HubSpot-RateLimit-Daily-Remaining"] == "999997"


def test_no_rate_limit_headers_without_a_rate(client: httpx.Client) -> None:
    response = client.get("/crm/v3/pipelines/deals")

    assert "X-HubSpot-RateLimit-Max" not in response.headers


# --- request log -------------------------------------------------------------


def test_request_log_has_one_json_line_per_request(
    serve: Callable[..., Sandbox], tmp_path: Path
) -> None:
    log = tmp_path / "requests.jsonl"
    sandbox = serve(log_path=log)
    with client_for(sandbox) as client:
        client.post(UPDATE, json=batch("clear"))
        client.get(
            "/deals/v1/deal/paged", params=[("limit", "2"), ("properties", "amount")]
        )
    with client_for(sandbox, "pat-na1-wrong") as stranger:
        stranger.get("/crm/v3/properties/deals")

    text = log.read_text("utf-8")
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines == [
        {
            "method": "POST",
            "path": UPDATE,
            "query": {},
            "status": 202,
            "body": batch("clear"),
        },
        {
            "method": "GET",
            "path": "/deals/v1/deal/paged",
            "query": {"limit": ["2"], "properties": ["amount"]},
            "status": 200,
            "body": None,
        },
        {
            "method": "GET",
            "path": "/crm/v3/properties/deals",
            "query": {},
            "status": 401,
            "body": None,
        },
    ]
    assert TOKEN not in text


def test_info_log_never_holds_the_token(
    client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="reconciler.sandbox"):
        client.get("/deals/v1/deal/101")

    assert [record.getMessage().split(" (")[0] for record in caplog.records] == [
        "GET /deals/v1/deal/101 -> 200"
    ]
    assert TOKEN not in caplog.text


# --- construction and the CLI helper -----------------------------------------


def test_deals_accessor_returns_a_copy(sandbox: Sandbox) -> None:
    sandbox.deals["101"]["amount"] = "0"

    assert sandbox.deals["101"]["amount"] == "1500.00"
    assert sorted(sandbox.deals) == ["101", "102", "103", "104", "105"]


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::1", "example.com"])
def test_refuses_to_bind_beyond_loopback(host: str) -> None:
    with pytest.raises(ValueError, match="only listens on the IPv4 loopback"):
        Sandbox(load_snapshot([FIXTURES / "seed.json"]), {}, {}, TOKEN, host=host)


def test_context_manager_serves_and_stops() -> None:
    snapshot = load_snapshot([FIXTURES / "seed.json"])
    with Sandbox(snapshot, load_definitions(None), {}, TOKEN) as sandbox:
        url = sandbox.url
        with client_for(sandbox) as client:
            status = client.get("/deals/v1/deal/105").status_code

    assert url.startswith("http://127.0.0.1:")
    assert status == 200
    with pytest.raises(httpx.ConnectError), httpx.Client() as client:
        client.get(f"{url}/deals/v1/deal/105")


@pytest.mark.parametrize(
    ("text", "rate"),
    [("100", 100), ("100/10s", 100), (" 190 / 10S ", 190), ("7/10", 7)],
)
def test_parse_rate_reads_requests_per_ten_seconds(text: str, rate: int) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "fast", "0", "100/1s", "100/10m", "-5", "1.5"])
def test_parse_rate_refuses_junk(text: str) -> None:
    with pytest.raises(ValueError, match="not a number of requests per 10 seconds"):
        parse_rate(text)


def test_run_sandbox_announces_its_url_and_deal_count(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    served: list[Sandbox] = []
    monkeypatch.setattr(Sandbox, "serve_forever", lambda self: served.append(self))

    run_sandbox(0, [FIXTURES / "seed.json"], TOKEN, None, None, 0.0, None, None)

    served[0].stop()
    line = capsys.readouterr().err
    assert line == f"sandbox listening on {served[0].url} (5 deals)\n"


def test_run_sandbox_without_a_token_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="needs a token"):
        run_sandbox(0, [], "", None, None, 0.0, None, None)
