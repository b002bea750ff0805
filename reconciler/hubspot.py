"""The HubSpot client: one thin wrapper around an injected ``httpx.Client``.

It paces requests under the rolling 10-second limit, retries 429 (burst) and
5xx answers with the same bytes, stops at once on the daily limit, and turns
HubSpot's answers into values or ``HubSpotError``. The token goes into the
``Authorization`` header and nowhere else: not logs, not messages.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import httpx

from reconciler import __version__
from reconciler.errors import DailyLimitError, HubSpotError, UsageError

LOG = logging.getLogger("reconciler")

DEFAULT_BASE_URL = "https://api.hubapi.com"
WINDOW_SECONDS = 10.0
BURST_WAIT_SECONDS = 10.0
MAX_BACKOFF_SECONDS = 60.0
# A Retry-After beyond this is treated as a broken answer rather than obeyed.
MAX_RETRY_AFTER_SECONDS = 300.0
READ_CHUNK = 100
TIMEOUT = httpx.Timeout(30.0, connect=10.0)
# Statuses by which HubSpot refuses the deals of an update. A 404 counts only
# when its body names objects: a bare 404 means the path or base URL is wrong.
REJECTED_STATUSES = frozenset({400, 409, 422})
DAILY_POLICY = "DAILY"
MISSING_SCOPE_HINT = (
    "it needs crm.objects.deals.read, crm.objects.deals.write and"
    " crm.schemas.deals.read"
)
# What a character that no token has is called, in the order messages list them.
BAD_TOKEN_CHARACTERS = (
    "a line break",
    "a space or tab",
    "a control character",
    "a non-ASCII character",
)


@dataclass(frozen=True)
class PropertyError:
    """HubSpot's objection to one property value in a rejected update."""

    property: str | None
    code: str | None
    message: str


@dataclass(frozen=True)
class UpdateResult:
    """How HubSpot answered one batch update: accepted, or rejected and why."""

    accepted: bool
    status: int
    message: str = ""
    correlation_id: str | None = None
    property_errors: tuple[PropertyError, ...] = ()

    @property
    def reason(self) -> str:
        """HubSpot's own words: the per-property messages, else the message."""
        messages = [error.message for error in self.property_errors if error.message]
        if messages:
            return "; ".join(dict.fromkeys(messages))
        return self.message or f"HubSpot answered {self.status}"


class HubSpotClient:
    """Sends requests to HubSpot with pacing, retries and token hygiene."""

    def __init__(
        self,
        http: httpx.Client,
        token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        rate_limit: int = 100,
        max_attempts: int = 5,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_limit < 1 or max_attempts < 1:
            raise ValueError("rate_limit and max_attempts must be at least 1")
        self._http = http
        self._token = check_token(token)
        self._token_forms = _quoted_forms(self._token)
        self._base_url = base_url.rstrip("/")
        self._rate_limit = rate_limit
        self._max_attempts = max_attempts
        self._sleep = sleep
        self._clock = clock
        self._sent: deque[float] = deque()
        self._blocked_until = 0.0
        self._daily_spent = False
        self.requests_sent = 0
        self.rate_limit_retries = 0
        self.server_error_retries = 0

    def close(self) -> None:
        """Close the underlying HTTP client."""
        self._http.close()

    # --- endpoints ---------------------------------------------------------

    def read_deals(
        self, ids: Sequence[str], properties: Sequence[str]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Batch-read deals, 100 IDs a request; returns (results, errors).

        A 207 carries results and errors side by side, so both are kept.
        """
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for start in range(0, len(ids), READ_CHUNK):
            body = {
                "inputs": [
                    {"id": deal_id} for deal_id in ids[start : start + READ_CHUNK]
                ],
                "properties": list(properties),
                "propertiesWithHistory": [],
            }
            response = self._send(
                "POST",
                "/crm/v3/objects/deals/batch/read",
                params={"archived": "false"},
                content=_encode(body),
            )
            data = self._expect(response, (200, 207))
            if not isinstance(data, dict):
                raise HubSpotError("HubSpot's batch-read answer was not an object")
            results.extend(_dicts(data.get("results")))
            errors.extend(_dicts(data.get("errors")))
        return results, errors

    def get_properties(self) -> Any:
        """The deal property definitions (``{"results": [...]}``)."""
        return self._expect(self._send("GET", "/crm/v3/properties/deals"), (200,))

    def get_pipelines(self) -> Any:
        """The deal pipelines and their stages (``{"results": [...]}``)."""
        return self._expect(self._send("GET", "/crm/v3/pipelines/deals"), (200,))

    def update_deals(self, body: list[dict[str, Any]]) -> UpdateResult:
        """Send one batch-async update; HubSpot refusing the deals is a value.

        Refusals are 400, 409 and 422, and a 404 whose body names objects;
        any other answer that is not a success raises ``HubSpotError``. The
        body is serialised once so every retry resends the same bytes.
        """
        response = self._send(
            "POST", "/deals/v1/batch-async/update", content=_encode(body)
        )
        status = response.status_code
        if 200 <= status < 300:
            # 202 has an empty body; there is nothing to parse.
            return UpdateResult(accepted=True, status=status)
        answer = self._scrub_data(_json_object(response))
        if _is_rejection(status, answer):
            return _rejection(status, answer)
        self._raise_for(response)

    # --- one request, paced and retried ------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        """Send until HubSpot gives an answer worth returning, or give up.

        Resending is safe: every body sets absolute values, so a request
        HubSpot did receive changes nothing the second time.
        """
        attempt = 1
        while True:
            last = attempt >= self._max_attempts
            response = self._attempt(method, path, params, content, last)
            if response is None:
                self.server_error_retries += 1
                self._back_off(attempt, None)
            elif _is_daily_limit(response):
                raise self._spend_daily_limit(response)
            elif not _is_retryable(response):
                return response
            elif last:
                raise self._exhausted(response, attempt)
            elif response.status_code == 429:
                self.rate_limit_retries += 1
                self._wait_after_rate_limit(response)
            else:
                self.server_error_retries += 1
                self._back_off(attempt, response)
            attempt += 1

    def _attempt(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        content: bytes | None,
        last: bool,
    ) -> httpx.Response | None:
        """One paced send; ``None`` after a transport error worth retrying."""
        if self._daily_spent:
            raise DailyLimitError("HubSpot's daily API limit is spent for today")
        self._wait_for_slot()
        started = self._clock()
        self._sent.append(started)
        self.requests_sent += 1
        if content is not None:
            LOG.debug("%s %s payload: %s", method, path, content.decode("utf-8"))
        try:
            response = self._http.request(
                method,
                self._base_url + path,
                params=params,
                content=content,
                headers=self._headers(content is not None),
            )
        except httpx.TransportError as error:
            reason = self._scrub(f"{type(error).__name__}: {error}")
            LOG.info("%s %s failed: %s", method, path, reason)
            if last:
                raise HubSpotError(f"could not reach HubSpot: {reason}") from None
            return None
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as error:
            # Not worth a retry, and its text may quote the request headers.
            reason = self._scrub(f"{type(error).__name__}: {error}")
            LOG.info("%s %s failed: %s", method, path, reason)
            raise HubSpotError(f"could not send the request: {reason}") from None
        elapsed_ms = (self._clock() - started) * 1000
        LOG.info("%s %s %s %.0f ms", method, path, response.status_code, elapsed_ms)
        LOG.debug("%s %s answer: %s", method, path, self._scrub(response.text))
        self._note_limits(response)
        return response

    def _headers(self, has_body: bool) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self._token}",
            "User-Agent": f"reconciler/{__version__}",
            "Accept": "application/json",
        }
        if has_body:
            headers["Content-Type"] = "application/json"
        return headers

    def _spend_daily_limit(self, response: httpx.Response) -> DailyLimitError:
        """Block every further request; the error that says why."""
        self._daily_spent = True
        body = _json_object(response)
        said = self._scrub(str(body.get("message") or "daily limit reached"))
        return DailyLimitError(said, 429, _correlation_id(body))

    def _exhausted(self, response: httpx.Response, attempts: int) -> HubSpotError:
        body = _json_object(response)
        said = self._scrub(str(body.get("message") or response.reason_phrase))
        return HubSpotError(
            f"gave up after {attempts} attempts: {said}",
            response.status_code,
            _correlation_id(body),
        )

    def _wait_after_rate_limit(self, response: httpx.Response) -> None:
        """Wait ``Retry-After``, else a whole 10-second window."""
        delay = _retry_after(response)
        wait = BURST_WAIT_SECONDS if delay is None else delay
        LOG.info("rate limited by HubSpot; waiting %.1f s", wait)
        self._sleep(wait)

    def _back_off(self, attempt: int, response: httpx.Response | None) -> None:
        """Exponential backoff (1, 2, 4 ... s) unless HubSpot names a wait."""
        delay = _retry_after(response) if response is not None else None
        if delay is None:
            delay = min(2.0 ** (attempt - 1), MAX_BACKOFF_SECONDS)
        LOG.info("retrying in %.1f s (attempt %d failed)", delay, attempt)
        self._sleep(delay)

    # --- pacing ------------------------------------------------------------

    def _wait_for_slot(self) -> None:
        """Sleep until one more request fits the rolling window."""
        while True:
            delay = self._pacing_delay(self._clock())
            if delay <= 0:
                return
            self._sleep(delay)

    def _pacing_delay(self, now: float) -> float:
        while self._sent and self._sent[0] <= now - WINDOW_SECONDS:
            self._sent.popleft()
        delay = self._blocked_until - now
        if len(self._sent) >= self._rate_limit:
            delay = max(delay, self._sent[0] + WINDOW_SECONDS - now)
        return delay

    def _note_limits(self, response: httpx.Response) -> None:
        """Follow HubSpot's own counters: they include other integrations."""
        headers = response.headers
        if _int_header(headers, "X-HubSpot-RateLimit-Daily-Remaining") == 0:
            self._daily_spent = True
        if _int_header(headers, "X-HubSpot-RateLimit-Remaining") == 0:
            interval = _int_header(headers, "X-HubSpot-RateLimit-Interval-Milliseconds")
            seconds = interval / 1000 if interval else WINDOW_SECONDS
            self._blocked_until = max(self._blocked_until, self._clock() + seconds)

    # --- answers -----------------------------------------------------------

    def _expect(self, response: httpx.Response, ok: tuple[int, ...]) -> Any:
        if response.status_code not in ok:
            self._raise_for(response)
        try:
            return response.json()
        except ValueError:
            raise HubSpotError(
                "HubSpot's answer was not JSON", response.status_code
            ) from None

    def _raise_for(self, response: httpx.Response) -> NoReturn:
        """Turn an answer that is not a success into ``HubSpotError``."""
        status = response.status_code
        body = _json_object(response)
        correlation_id = _correlation_id(body)
        said = self._scrub(str(body.get("message") or response.reason_phrase))
        if status == 401:
            message = (
                "HubSpot refused the access token (HUBSPOT_ACCESS_TOKEN):"
                f" it is wrong, expired or revoked ({said})"
            )
        elif status == 403:
            message = f"the access token lacks a required scope; {MISSING_SCOPE_HINT}"
            message = f"{message} ({said})"
        elif status == 404:
            # Deals HubSpot lacks come back as 207 or a rejection; a bare 404
            # means nothing answers at this address.
            url = response.request.url.copy_with(query=None)
            method = response.request.method
            message = f"{said} ({method} {url}); check HUBSPOT_BASE_URL"
        else:
            message = said
        raise HubSpotError(message, status, correlation_id)

    def _scrub(self, text: str) -> str:
        """Remove the token from text that may echo a request, quoted or not."""
        for form in self._token_forms:
            text = text.replace(form, "[token]")
        return text

    def _scrub_data(self, data: Any) -> Any:
        """Parsed JSON with the token removed from every string in it."""
        if isinstance(data, str):
            return self._scrub(data)
        if isinstance(data, list):
            return [self._scrub_data(item) for item in data]
        if isinstance(data, dict):
            return {key: self._scrub_data(value) for key, value in data.items()}
        return data


def client_from_env(
    env: Mapping[str, str] = os.environ,
    *,
    transport: httpx.BaseTransport | None = None,
    rate_limit: int = 100,
) -> HubSpotClient | None:
    """A client for ``$HUBSPOT_BASE_URL`` with ``$HUBSPOT_ACCESS_TOKEN``.

    ``None`` when no token is set. Plain ``http://`` is refused unless the
    host is loopback, so a token never crosses a network unencrypted.
    """
    token = check_token(env.get("HUBSPOT_ACCESS_TOKEN", ""))
    if not token:
        return None
    base_url = env.get("HUBSPOT_BASE_URL", "").strip() or DEFAULT_BASE_URL
    check_base_url(base_url)
    http = httpx.Client(transport=transport, timeout=TIMEOUT)
    return HubSpotClient(http, token, base_url=base_url, rate_limit=rate_limit)


def check_token(token: str) -> str:
    """The token without surrounding whitespace, refused if a header cannot
    carry it; the message says which kind of character, never the token."""
    token = token.strip()
    found = {_character_kind(char) for char in token if not "!" <= char <= "~"}
    if found:
        kinds = ", ".join(kind for kind in BAD_TOKEN_CHARACTERS if kind in found)
        raise UsageError(
            f"HUBSPOT_ACCESS_TOKEN contains characters a token cannot have ({kinds});"
            " copy the token again from HubSpot"
        )
    return token


def _character_kind(char: str) -> str:
    if char in "\r\n":
        return "a line break"
    if char in " \t":
        return "a space or tab"
    if char.isascii():
        return "a control character"
    return "a non-ASCII character"


def _quoted_forms(token: str) -> list[str]:
    """The token as text and as Python and JSON quote it, longest first."""
    if not token:
        return []
    forms = {
        token,
        repr(token)[1:-1],
        repr(token.encode("utf-8", "backslashreplace"))[2:-1],
        json.dumps(token)[1:-1],
    }
    return sorted(forms, key=len, reverse=True)


def check_base_url(base_url: str) -> None:
    """Refuse a base URL that would send the token in clear text."""
    try:
        url = httpx.URL(base_url)
    except httpx.InvalidURL as error:
        raise UsageError(f"HUBSPOT_BASE_URL is not a URL: {error}") from None
    if not url.host:
        raise UsageError(f"HUBSPOT_BASE_URL has no host: {base_url}")
    if url.scheme == "https":
        return
    if url.scheme == "http" and _is_loopback(url.host):
        return
    raise UsageError(
        f"HUBSPOT_BASE_URL {base_url} would send the token unencrypted;"
        " use https://, or http:// only for 127.0.0.1, localhost or ::1"
    )


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# --- helpers ---------------------------------------------------------------


def _encode(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _json_object(response: httpx.Response) -> dict[str, Any]:
    """The answer's JSON object, or ``{}`` when it is empty or not an object."""
    if not response.content:
        return {}
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value or [] if isinstance(item, dict)]


def _correlation_id(body: Mapping[str, Any]) -> str | None:
    value = body.get("correlationId")
    return str(value) if value else None


def _int_header(headers: httpx.Headers, name: str) -> int | None:
    try:
        return int(headers[name])
    except (KeyError, ValueError):
        return None


def _is_daily_limit(response: httpx.Response) -> bool:
    """A 429 for the daily allowance, which waiting a minute does not cure."""
    if response.status_code != 429:
        return False
    # policyName, not the message text, says which limit was hit.
    return _json_object(response).get("policyName") == DAILY_POLICY


def _is_retryable(response: httpx.Response) -> bool:
    """429 (the rolling window) and 5xx answers are worth sending again."""
    return response.status_code == 429 or response.status_code >= 500


def _retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds; HTTP-date values are not used by HubSpot."""
    try:
        seconds = float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def _is_rejection(status: int, body: Mapping[str, Any]) -> bool:
    """Whether an update's answer refuses its deals rather than the request.

    A 404 is a refusal only with per-object detail: ``validationResults``,
    or the IDs of the objects not found (``context.ids``, on the body or on
    one of its ``errors``), as HubSpot gives for category OBJECT_NOT_FOUND.
    """
    if status in REJECTED_STATUSES:
        return True
    if status != 404:
        return False
    if _dicts(body.get("validationResults")):
        return True
    return any(_context_ids(item) for item in [body, *_dicts(body.get("errors"))])


def _context_ids(item: Mapping[str, Any]) -> list[Any]:
    context = item.get("context")
    ids = context.get("ids") if isinstance(context, dict) else None
    return ids if isinstance(ids, list) else []


def _rejection(status: int, body: Mapping[str, Any]) -> UpdateResult:
    """Read v1 ``validationResults``, v3 JSON-in-``message`` and ``errors``."""
    message = str(body.get("message") or "")
    errors = [_property_error(item) for item in _dicts(body.get("validationResults"))]
    head, embedded = _split_embedded(message)
    errors.extend(_property_error(item) for item in embedded)
    errors.extend(_property_error(item) for item in _dicts(body.get("errors")))
    unique = tuple(dict.fromkeys(error for error in errors if error.message))
    return UpdateResult(
        accepted=False,
        status=status,
        message=head,
        correlation_id=_correlation_id(body),
        property_errors=unique,
    )


def _split_embedded(message: str) -> tuple[str, list[dict[str, Any]]]:
    """v3 puts the per-property errors as JSON after "...not valid: "."""
    head, separator, tail = message.partition(": [")
    if not separator:
        return message, []
    try:
        items = json.loads("[" + tail)
    except ValueError:
        return message, []
    return head, _dicts(items)


def _property_error(item: Mapping[str, Any]) -> PropertyError:
    name = item.get("name") or item.get("in")
    context = item.get("context")
    if not name and isinstance(context, dict):
        names = context.get("propertyName") or context.get("properties") or []
        name = names[0] if isinstance(names, list) and names else None
    code = item.get("error") or item.get("code") or item.get("subCategory")
    return PropertyError(
        property=str(name) if name else None,
        code=str(code) if code else None,
        message=str(item.get("message") or ""),
    )
