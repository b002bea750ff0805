"""The HubSpot client: request shape, retries, pacing, errors and token hygiene."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from reconciler import __version__
from reconciler.errors import DailyLimitError, ExitCode, HubSpotError, UsageError
from reconciler.hubspot import (
    HubSpotClient,
    PropertyError,
    client_from_env,
)
from tests.fakes import (
    READ_PATH,
    TOKEN,
    UPDATE_PATH,
    FakeTime,
    fixture_response,
    mock_client,
)

BODY = [{"objectId": 16001, "properties": [{"name": "amount", "value": "1"}]}]

Handler = Callable[[httpx.Request], httpx.Response]


class Server:
    """Answers from a script, one entry per request, recording every request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.times: list[float] = []
        self.time: FakeTime | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.time is not None:
            self.times.append(self.time.now)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def make_client(
    handler: Handler, time: FakeTime | None = None, **options: Any
) -> tuple[HubSpotClient, FakeTime]:
    time = time or FakeTime(1000.0)
    if isinstance(handler, Server):
        handler.time = time
    return mock_client(handler, time, **options), time


# --- request shape ---------------------------------------------------------


def test_update_sends_bare_array_with_bearer_and_user_agent() -> None:
    server = Server(httpx.Response(202))
    client, _ = make_client(server)

    result = client.update_deals(BODY)

    request = server.requests[0]
    assert result.accepted is True
    assert result.status == 202
    assert request.method == "POST"
    assert str(request.url) == "https://api.hubapi.test/deals/v1/batch-async/update"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["User-Agent"] == f"reconciler/{__version__}"
    assert request.headers["Content-Type"] == "application/json"
    sent = json.loads(request.content)
    assert sent == BODY
    assert isinstance(sent[0]["objectId"], int)
    assert sent[0]["properties"][0]["value"] == "1"


def test_202_with_empty_body_is_accepted_without_parsing() -> None:
    server = Server(fixture_response("update_accepted_202.json"))
    client, _ = make_client(server)

    result = client.update_deals(BODY)

    assert server.requests[0].url.path == UPDATE_PATH
    assert (result.accepted, result.status, result.property_errors) == (True, 202, ())


def test_read_deals_sends_100_ids_a_request_and_keeps_207_errors() -> None:
    server = Server(fixture_response("batch_read_207_with_errors.json"))
    client, _ = make_client(server)
    ids = [str(15001 + n) for n in range(150)]

    results, errors = client.read_deals(ids, ["amount", "hs_merged_object_ids"])

    first, second = (json.loads(r.content) for r in server.requests)
    assert [r.url.path for r in server.requests] == [READ_PATH, READ_PATH]
    assert server.requests[0].url.params["archived"] == "false"
    assert len(first["inputs"]) == 100
    assert second["inputs"][0] == {"id": "15101"}
    assert len(second["inputs"]) == 50
    assert first["properties"] == ["amount", "hs_merged_object_ids"]
    assert first["propertiesWithHistory"] == []
    assert [r["id"] for r in results] == ["15001", "15009", "15001", "15009"]
    assert errors[0]["context"] == {"ids": ["15003"]}
    assert len(errors) == 2


def test_read_deals_raises_on_an_error_status() -> None:
    body = {"message": "Invalid input JSON", "correlationId": "c-1"}
    client, _ = make_client(Server(httpx.Response(400, json=body)))

    with pytest.raises(HubSpotError) as caught:
        client.read_deals(["1"], ["amount"])

    assert caught.value.status == 400
    assert str(caught.value) == (
        "HubSpot answered 400: Invalid input JSON (correlationId c-1)"
    )


def test_get_properties_and_pipelines_return_parsed_json() -> None:
    server = Server(
        httpx.Response(200, json={"results": [{"name": "amount"}]}),
        httpx.Response(200, json={"results": [{"id": "default"}]}),
    )
    client, _ = make_client(server)

    assert client.get_properties() == {"results": [{"name": "amount"}]}
    assert client.get_pipelines() == {"results": [{"id": "default"}]}
    assert [(r.method, r.url.path) for r in server.requests] == [
        ("GET", "/crm/v3/properties/deals"),
        ("GET", "/crm/v3/pipelines/deals"),
    ]
    assert client.requests_sent == 2


# --- rejections ------------------------------------------------------------


def test_400_is_a_rejected_result_with_v1_validation_results_and_no_retry() -> None:
    server = Server(fixture_response("update_rejected_invalid_option_400.json"))
    client, time = make_client(server)

    result = client.update_deals(BODY)

    assert len(server.requests) == 1
    assert time.sleeps == []
    assert result.accepted is False
    assert result.status == 400
    assert result.message == "Property values were not valid"
    assert result.correlation_id == "00000000-0000-0000-0000-000000000020"
    assert result.property_errors == (
        PropertyError(
            "deal_tier",
            "INVALID_OPTION",
            "platinum was not one of the allowed options: [...]",
        ),
    )
    assert result.reason == "platinum was not one of the allowed options: [...]"


def test_v3_errors_embedded_in_the_message_are_parsed() -> None:
    server = Server(fixture_response("update_rejected_v3_invalid_date_400.json"))
    client, _ = make_client(server)

    result = client.update_deals(BODY)

    assert result.message == "Property values were not valid"
    assert result.property_errors == (
        PropertyError(
            "h4w_create_date",
            "INVALID_DATE",
            "1521225089103 is at 18:31:29.103 UTC, not midnight!",
        ),
    )
    assert result.correlation_id == "37227306-08c1-4d91-aa46-4a947a80e6aa"


def test_v3_errors_list_names_the_property_from_its_context() -> None:
    body = {
        "status": "error",
        "message": "Invalid input",
        "errors": [
            {
                "message": "gold2 is not a valid option",
                "code": "INVALID_OPTION",
                "context": {"propertyName": ["deal_tier"]},
            }
        ],
    }
    client, _ = make_client(Server(httpx.Response(422, json=body)))

    result = client.update_deals(BODY)

    assert result.status == 422
    assert result.correlation_id is None
    assert result.property_errors == (
        PropertyError("deal_tier", "INVALID_OPTION", "gold2 is not a valid option"),
    )


@pytest.mark.parametrize(
    "body",
    [
        {
            "message": "Property values were not valid",
            "validationResults": [{"name": "amount", "message": "not a number"}],
        },
        {
            "message": "Could not update some deals, they may be deleted",
            "category": "OBJECT_NOT_FOUND",
            "context": {"ids": ["16001"]},
        },
        {
            "message": "Batch input had errors",
            "errors": [
                {
                    "message": "Object not found",
                    "category": "OBJECT_NOT_FOUND",
                    "context": {"ids": ["16001"]},
                }
            ],
        },
    ],
    ids=["validation-results", "context-ids", "errors-context-ids"],
)
def test_404_naming_objects_is_a_rejection(body: dict[str, Any]) -> None:
    server = Server(httpx.Response(404, json=body))
    client, _ = make_client(server)

    result = client.update_deals(BODY)

    assert (result.accepted, result.status) == (False, 404)
    assert result.message == body["message"]
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (httpx.Response(404), "Not Found"),
        (
            httpx.Response(
                404,
                json={
                    "status": "error",
                    "message": "resource not found",
                    "correlationId": "c-404",
                    "category": "OBJECT_NOT_FOUND",
                },
            ),
            "resource not found",
        ),
    ],
    ids=["bare", "no-ids"],
)
def test_404_naming_no_object_raises_with_the_address(
    answer: httpx.Response, said: str
) -> None:
    server = Server(answer)
    client, time = make_client(server)

    with pytest.raises(HubSpotError) as caught:
        client.update_deals(BODY)

    assert caught.value.status == 404
    assert str(caught.value).startswith(
        f"HubSpot answered 404: {said}"
        " (POST https://api.hubapi.test/deals/v1/batch-async/update);"
        " check HUBSPOT_BASE_URL"
    )
    assert (len(server.requests), time.sleeps) == (1, [])


def test_404_on_a_read_names_the_address_and_the_correlation_id() -> None:
    body = {"message": "resource not found", "correlationId": "c-404"}
    client, _ = make_client(Server(httpx.Response(404, json=body)))

    with pytest.raises(HubSpotError) as caught:
        client.read_deals(["1"], ["amount"])

    assert caught.value.correlation_id == "c-404"
    assert str(caught.value) == (
        "HubSpot answered 404: resource not found"
        " (POST https://api.hubapi.test/crm/v3/objects/deals/batch/read);"
        " check HUBSPOT_BASE_URL (correlationId c-404)"
    )


def test_other_4xx_answers_to_an_update_raise() -> None:
    body = {"message": "Request entity too large", "correlationId": "c-413"}
    client, _ = make_client(Server(httpx.Response(413, json=body)))

    with pytest.raises(HubSpotError) as caught:
        client.update_deals(BODY)

    assert str(caught.value) == (
        "HubSpot answered 413: Request entity too large (correlationId c-413)"
    )


# --- rate limits -----------------------------------------------------------


def test_burst_429_waits_10_s_and_resends_the_same_bytes() -> None:
    server = Server(fixture_response("rate_limit_burst_429.json"), httpx.Response(202))
    client, time = make_client(server)

    result = client.update_deals(BODY)

    assert result.accepted is True
    assert time.sleeps == [10.0]
    assert server.requests[0].content == server.requests[1].content
    assert (client.requests_sent, client.rate_limit_retries) == (2, 1)
    assert client.server_error_retries == 0


def test_burst_429_honours_retry_after() -> None:
    limited = fixture_response("rate_limit_burst_429.json", {"Retry-After": "3"})
    client, time = make_client(Server(limited, httpx.Response(202)))

    client.update_deals(BODY)

    assert time.sleeps == [3.0]


def test_burst_429_retries_are_bounded() -> None:
    server = Server(fixture_response("rate_limit_burst_429.json"))
    client, time = make_client(server, max_attempts=5)

    with pytest.raises(HubSpotError) as caught:
        client.update_deals(BODY)

    assert len(server.requests) == 5
    assert time.sleeps == [10.0] * 4
    assert client.rate_limit_retries == 4
    assert caught.value.status == 429
    assert caught.value.correlation_id == "00000000-0000-0000-0000-000000000016"
    assert "gave up after 5 attempts" in str(caught.value)
    assert not isinstance(caught.value, DailyLimitError)


def test_daily_429_raises_at_once_and_blocks_further_calls() -> None:
    server = Server(fixture_response("rate_limit_daily_429.json"))
    client, time = make_client(server)

    with pytest.raises(DailyLimitError) as caught:
        client.update_deals(BODY)
    with pytest.raises(DailyLimitError):
        client.update_deals(BODY)

    assert len(server.requests) == 1
    assert time.sleeps == []
    assert caught.value.exit_code == ExitCode.DAILY_LIMIT
    assert caught.value.correlation_id == "00000000-0000-0000-0000-000000000017"


def test_daily_is_told_by_policy_name_not_message() -> None:
    body = {"message": "You have reached your daily limit.", "policyName": "SECONDLY"}
    server = Server(httpx.Response(429, json=body), httpx.Response(202))
    client, _ = make_client(server)

    assert client.update_deals(BODY).accepted is True
    assert client.rate_limit_retries == 1


def test_daily_remaining_zero_header_stops_the_next_call_before_sending() -> None:
    spent = httpx.Response(202, headers={"X-HubSpot-RateLimit-Daily-Remaining": "0"})
    server = Server(spent)
    client, _ = make_client(server)

    assert client.update_deals(BODY).accepted is True
    with pytest.raises(DailyLimitError):
        client.update_deals(BODY)
    assert len(server.requests) == 1


def test_window_remaining_zero_header_waits_for_the_interval() -> None:
    headers = {
        "X-HubSpot-RateLimit-Remaining": "0",
        "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
    }
    server = Server(httpx.Response(202, headers=headers), httpx.Response(202))
    client, time = make_client(server)

    client.update_deals(BODY)
    client.update_deals(BODY)

    assert time.sleeps == [10.0]
    assert server.times == [1000.0, 1010.0]


def test_pacing_never_puts_more_than_the_limit_in_any_10_s_window() -> None:
    server = Server(httpx.Response(202))
    client, time = make_client(server, rate_limit=100)

    for _ in range(150):
        client.update_deals(BODY)

    times = server.times
    assert len(times) == 150
    busiest = max(sum(1 for t in times if sent - 10 < t <= sent) for sent in times)
    assert busiest == 100
    assert times[99] == 1000.0
    assert times[100] == 1010.0
    assert time.now == 1010.0


# --- server and transport errors ------------------------------------------


def test_5xx_is_retried_with_exponential_backoff() -> None:
    server = Server(httpx.Response(503), httpx.Response(502), httpx.Response(202))
    client, time = make_client(server)

    assert client.update_deals(BODY).accepted is True
    assert time.sleeps == [1.0, 2.0]
    assert client.server_error_retries == 2
    assert server.requests[0].content == server.requests[2].content


def test_5xx_honours_retry_after() -> None:
    busy = httpx.Response(503, headers={"Retry-After": "7"})
    client, time = make_client(Server(busy, httpx.Response(202)))

    client.update_deals(BODY)

    assert time.sleeps == [7.0]


def test_5xx_retries_are_bounded() -> None:
    body = {"message": "internal error", "correlationId": "c-500"}
    server = Server(httpx.Response(500, json=body))
    client, time = make_client(server, max_attempts=3)

    with pytest.raises(HubSpotError) as caught:
        client.update_deals(BODY)

    assert len(server.requests) == 3
    assert time.sleeps == [1.0, 2.0]
    assert str(caught.value) == (
        "HubSpot answered 500: gave up after 3 attempts: internal error"
        " (correlationId c-500)"
    )


def test_transport_errors_are_retried_then_reported() -> None:
    server = Server(httpx.ConnectError("connection refused"))
    client, time = make_client(server, max_attempts=3)

    with pytest.raises(HubSpotError) as caught:
        client.update_deals(BODY)

    assert len(server.requests) == 3
    assert time.sleeps == [1.0, 2.0]
    assert (
        str(caught.value) == "could not reach HubSpot: ConnectError: connection refused"
    )


def test_transport_error_then_success() -> None:
    server = Server(httpx.ReadTimeout("timed out"), httpx.Response(202))
    client, _ = make_client(server)

    assert client.update_deals(BODY).accepted is True
    assert client.server_error_retries == 1


# --- the token -------------------------------------------------------------


def test_401_says_the_token_was_refused_without_showing_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    echo = {"message": f"The token {TOKEN} is invalid", "correlationId": "c-401"}
    client, _ = make_client(Server(httpx.Response(401, json=echo)))
    caplog.set_level(logging.DEBUG, logger="reconciler")

    with pytest.raises(HubSpotError) as caught:
        client.get_properties()

    assert caught.value.status == 401
    assert "refused the access token" in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert TOKEN not in caplog.text
    assert "[token]" in str(caught.value)


def test_403_names_the_scopes_needed() -> None:
    body = {"message": "This app hasn't been granted all required scopes"}
    client, _ = make_client(Server(httpx.Response(403, json=body)))

    with pytest.raises(HubSpotError) as caught:
        client.read_deals(["1"], ["amount"])

    assert caught.value.status == 403
    assert "lacks a required scope" in str(caught.value)
    assert "crm.objects.deals.write" in str(caught.value)


def test_logs_one_info_line_per_request_and_never_the_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = Server(
        httpx.ConnectError(f"cannot connect with {TOKEN}"),
        fixture_response("rate_limit_burst_429.json"),
        httpx.Response(202),
    )
    client, _ = make_client(server)
    caplog.set_level(logging.DEBUG, logger="reconciler")

    client.update_deals(BODY)

    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert "POST /deals/v1/batch-async/update 202 0 ms" in info
    assert "POST /deals/v1/batch-async/update 429 0 ms" in info
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any('"objectId":16001' in line for line in debug)
    assert TOKEN not in caplog.text


# --- configuration from the environment -----------------------------------


def test_client_from_env_needs_a_token() -> None:
    assert client_from_env({}) is None
    assert client_from_env({"HUBSPOT_ACCESS_TOKEN": "  "}) is None


def test_client_from_env_uses_the_default_base_url() -> None:
    server = Server(httpx.Response(200, json={"results": []}))
    client = client_from_env(
        {"HUBSPOT_ACCESS_TOKEN": TOKEN}, transport=httpx.MockTransport(server)
    )

    assert client is not None
    client.get_pipelines()
    assert (
        str(server.requests[0].url) == "https://api.hubapi.com/crm/v3/pipelines/deals"
    )
    assert server.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize(
    "base_url",
    ["http://127.0.0.1:8765", "http://localhost:8765/", "http://[::1]:8765"],
)
def test_plain_http_is_allowed_on_loopback(base_url: str) -> None:
    server = Server(httpx.Response(200, json={"results": []}))
    env = {"HUBSPOT_ACCESS_TOKEN": TOKEN, "HUBSPOT_BASE_URL": base_url}
    client = client_from_env(env, transport=httpx.MockTransport(server))

    assert client is not None
    client.get_properties()
    assert server.requests[0].url.path == "/crm/v3/properties/deals"


@pytest.mark.parametrize(
    "base_url",
    ["http://api.hubapi.com", "http://127.0.0.1.example.com", "ftp://127.0.0.1"],
)
def test_plain_http_elsewhere_is_refused(base_url: str) -> None:
    env = {"HUBSPOT_ACCESS_TOKEN": TOKEN, "HUBSPOT_BASE_URL": base_url}

    with pytest.raises(UsageError) as caught:
        client_from_env(env)

    assert "would send the token unencrypted" in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert caught.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize(
    ("token", "kinds"),
    [
        ("pat-na1-abc\ndef", "a line break"),
        ("pat-na1-ab\x01c", "a control character"),
        ("pat-na1-abcé", "a non-ASCII character"),
        ("pat-na1 abc", "a space or tab"),
        ("pat\n-\té-x", "a line break, a space or tab, a non-ASCII character"),
    ],
)
def test_client_from_env_refuses_a_token_no_header_can_carry(
    token: str, kinds: str
) -> None:
    server = Server(httpx.Response(200, json={"results": []}))
    env = {"HUBSPOT_ACCESS_TOKEN": token}

    with pytest.raises(UsageError) as caught:
        client_from_env(env, transport=httpx.MockTransport(server))

    assert str(caught.value) == (
        f"HUBSPOT_ACCESS_TOKEN contains characters a token cannot have ({kinds});"
        " copy the token again from HubSpot"
    )
    assert "pat" not in str(caught.value)
    assert caught.value.exit_code == ExitCode.USAGE
    assert server.requests == []


def test_client_from_env_strips_whitespace_around_the_token() -> None:
    server = Server(httpx.Response(200, json={"results": []}))
    env = {"HUBSPOT_ACCESS_TOKEN": f"  {TOKEN}\r\n"}
    client = client_from_env(env, transport=httpx.MockTransport(server))

    assert client is not None
    client.get_pipelines()
    assert server.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"


def test_the_client_itself_refuses_such_a_token() -> None:
    with pytest.raises(UsageError):
        HubSpotClient(httpx.Client(), "pat-na1-é")


# A token a header can carry whose quoted forms differ from the token.
QUOTED_TOKEN = "pat-na1-back\\slash-'quote'-\"double\""


def test_transport_error_quoting_the_header_is_scrubbed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    header = f"Bearer {QUOTED_TOKEN}".encode()
    server = Server(httpx.LocalProtocolError(f"Illegal header value {header!r}"))
    http = httpx.Client(transport=httpx.MockTransport(server))
    client = HubSpotClient(http, QUOTED_TOKEN, max_attempts=1)
    caplog.set_level(logging.DEBUG, logger="reconciler")

    with pytest.raises(HubSpotError) as caught:
        client.get_pipelines()

    assert str(caught.value) == (
        "could not reach HubSpot: LocalProtocolError:"
        " Illegal header value b'Bearer [token]'"
    )
    assert caught.value.__suppress_context__ is True
    for secret in ("back", "slash", "quote", "double"):
        assert secret not in str(caught.value) + caplog.text


def test_other_errors_while_sending_are_scrubbed_and_not_retried() -> None:
    server = Server(ValueError(f"cannot encode {QUOTED_TOKEN!r}"))
    http = httpx.Client(transport=httpx.MockTransport(server))
    client = HubSpotClient(http, QUOTED_TOKEN, sleep=FakeTime().sleep)

    with pytest.raises(HubSpotError) as caught:
        client.get_pipelines()

    assert str(caught.value) == (
        "could not send the request: ValueError: cannot encode '[token]'"
    )
    assert len(server.requests) == 1


def test_a_rejection_echoing_the_token_is_scrubbed() -> None:
    body = {
        "message": f"Bad request from {TOKEN}",
        "validationResults": [{"name": "amount", "message": f"{TOKEN} is odd"}],
    }
    client, _ = make_client(Server(httpx.Response(400, json=body)))

    result = client.update_deals(BODY)

    assert result.message == "Bad request from [token]"
    assert result.reason == "[token] is odd"
