"""The sandbox's endpoints: requests in, HubSpot-shaped responses out.

No sockets here; the server module turns HTTP into ``Request`` values and
``Response`` values back into HTTP.
"""

from __future__ import annotations

import hmac
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.sandbox import shapes
from reconciler.sandbox.batch import Catalog, Refusal, check_batch
from reconciler.sandbox.ratelimit import RollingWindow
from reconciler.sandbox.state import DealStore
from reconciler.snapshot import canonical_id

logger = logging.getLogger("reconciler.sandbox")

MAX_READ_INPUTS = 100
PAGE_DEFAULT = 100
PAGE_MAX = 250
# What v3 returns when a batch read names no properties.
V3_DEFAULT_PROPERTIES = ("amount", "closedate", "dealname", "dealstage", "pipeline")


@dataclass(frozen=True)
class Request:
    """One HTTP request, its body already parsed as JSON where it could be."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    authorization: str | None
    body: Any = None
    body_error: str | None = None


@dataclass
class Response:
    """Status, JSON body (None for an empty body) and extra headers."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


Endpoint = Callable[[Request, "re.Match[str]"], Response]


class App:
    """Checks the token and the rate limit, then routes to an endpoint.

    One lock serialises every request, so the server's threads never see a
    half-applied batch.
    """

    def __init__(
        self,
        store: DealStore,
        catalog: Catalog,
        token: str,
        delay: float,
        limiter: RollingWindow | None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self._token = token
        self._delay = delay
        self._limiter = limiter
        self.lock = threading.Lock()
        self._routes: list[tuple[re.Pattern[str], dict[str, Endpoint]]] = [
            (re.compile(r"/deals/v1/batch-async/update"), {"POST": self._batch_update}),
            (re.compile(r"/deals/v1/deal/paged"), {"GET": self._paged}),
            (re.compile(r"/deals/v1/deal/(?P<id>[^/]+)"), {"GET": self._deal}),
            (
                re.compile(r"/crm/v3/objects/deals/batch/read"),
                {"POST": self._batch_read},
            ),
            (re.compile(r"/crm/v3/properties/deals"), {"GET": self._properties}),
            (re.compile(r"/crm/v3/pipelines/deals"), {"GET": self._pipelines}),
        ]

    def handle(self, request: Request) -> Response:
        """The answer HubSpot would give, with rate-limit headers when limited."""
        with self.lock:
            if not self._authorized(request.authorization):
                return Response(401, shapes.unauthorized())
            if self._limiter is None:
                return self._route(request)
            if not self._limiter.admit():
                retry = {"Retry-After": str(self._limiter.retry_after())}
                return Response(
                    429, shapes.rate_limited(), self._limiter.headers() | retry
                )
            response = self._route(request)
            response.headers.update(self._limiter.headers())
            return response

    def _authorized(self, header: str | None) -> bool:
        scheme, _, credentials = (header or "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        # Constant-time comparison, so timing does not leak the token.
        return hmac.compare_digest(credentials.strip().encode(), self._token.encode())

    def _route(self, request: Request) -> Response:
        path = request.path.rstrip("/") or "/"
        for pattern, endpoints in self._routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            endpoint = endpoints.get(request.method)
            if endpoint is None:
                message = f"{request.method} is not supported on {path}"
                return Response(405, shapes.error(message))
            return self._call(endpoint, request, match)
        return Response(404, shapes.error(shapes.NOT_FOUND_MESSAGE))

    def _call(
        self, endpoint: Endpoint, request: Request, match: re.Match[str]
    ) -> Response:
        try:
            return endpoint(request, match)
        except Refusal as refusal:
            return Response(refusal.status, refusal.body)

    # --- v1 ------------------------------------------------------------------

    def _batch_update(self, request: Request, match: re.Match[str]) -> Response:
        updates = check_batch(_json(request), self.store, self.catalog)
        self.store.schedule(updates, self._delay)
        logger.debug(
            "accepted %d deal update(s), due in %ss", len(updates), self._delay
        )
        return Response(202)

    def _deal(self, request: Request, match: re.Match[str]) -> Response:
        text = match["id"]
        if not text.isdigit() or not self.store.exists(int(text)):
            raise Refusal(404, shapes.legacy_error(f"Deal {text} does not exist"))
        deal_id = int(text)
        history = self.store.history(deal_id)
        full = _flag(request, "includePropertyVersions")
        deal = shapes.v1_deal(
            deal_id, history, None, with_history=history if full else ()
        )
        return Response(200, deal)

    def _paged(self, request: Request, match: re.Match[str]) -> Response:
        limit = min(max(_int_param(request, "limit", PAGE_DEFAULT), 1), PAGE_MAX)
        offset = _int_param(request, "offset", 0)
        names = set(request.query.get("properties", []))
        with_history = set(request.query.get("propertiesWithHistory", []))
        ids = [deal_id for deal_id in self.store.ids() if deal_id >= offset]
        page = ids[:limit]
        deals = [
            shapes.v1_deal(
                deal_id,
                self.store.history(deal_id),
                names,
                with_history=with_history,
                associations=_flag(request, "includeAssociations"),
            )
            for deal_id in page
        ]
        # The offset is a cursor, the last deal ID plus one, not a row count.
        next_offset = page[-1] + 1 if page else offset
        return Response(
            200, {"deals": deals, "hasMore": len(ids) > limit, "offset": next_offset}
        )

    # --- v3 ------------------------------------------------------------------

    def _batch_read(self, request: Request, match: re.Match[str]) -> Response:
        started = time.time()
        ids, names = _read_request(_json(request))
        found = [deal_id for deal_id in ids if _known(self.store, deal_id)]
        results = [self._record(int(deal_id), names) for deal_id in found]
        missing = [deal_id for deal_id in ids if deal_id not in found]
        body: dict[str, Any] = {"status": "COMPLETE", "results": results}
        if missing:
            body |= {"numErrors": 1, "errors": [shapes.missing_objects(missing)]}
        body |= {
            "startedAt": shapes.instant(int(started * 1000)),
            "completedAt": shapes.instant(int(time.time() * 1000)),
        }
        return Response(207 if missing else 200, body)

    def _record(self, deal_id: int, names: list[str]) -> dict[str, Any]:
        return shapes.v3_record(
            deal_id,
            self.store.values(deal_id),
            names,
            self.catalog.properties,
            self.store.created,
            self.store.updated_ms(deal_id),
        )

    def _properties(self, request: Request, match: re.Match[str]) -> Response:
        definitions = sorted(
            self.catalog.properties.values(), key=lambda each: each.name
        )
        return Response(
            200, {"results": [shapes.v3_property(each) for each in definitions]}
        )

    def _pipelines(self, request: Request, match: re.Match[str]) -> Response:
        pipelines = self.catalog.pipelines.values()
        results = [
            shapes.v3_pipeline(each, order) for order, each in enumerate(pipelines)
        ]
        return Response(200, {"results": results})


# --- request parsing ---------------------------------------------------------


def _json(request: Request) -> Any:
    if request.body_error is not None:
        raise Refusal(400, shapes.error(request.body_error))
    return request.body


def _flag(request: Request, name: str) -> bool:
    return request.query.get(name, ["false"])[-1].lower() == "true"


def _int_param(request: Request, name: str, default: int) -> int:
    values = request.query.get(name)
    if not values:
        return default
    try:
        return int(values[-1])
    except ValueError:
        message = f"{name} must be a whole number, not {values[-1]!r}"
        raise Refusal(400, shapes.legacy_error(message)) from None


def _read_request(data: Any) -> tuple[list[str], list[str]]:
    """The IDs (deduplicated, in order) and property names of a batch read."""
    if not isinstance(data, dict) or not isinstance(data.get("inputs"), list):
        raise _invalid_read('expected {"inputs": [{"id": ...}], "properties": [...]}')
    inputs = data["inputs"]
    if len(inputs) > MAX_READ_INPUTS:
        raise _invalid_read(
            f"{len(inputs)} inputs given; a batch may hold at most {MAX_READ_INPUTS}"
        )
    ids: list[str] = []
    for item in inputs:
        deal_id = item.get("id") if isinstance(item, dict) else None
        if isinstance(deal_id, bool) or not isinstance(deal_id, (str, int)):
            raise _invalid_read("every input needs an id")
        text = str(deal_id)
        ids.append(canonical_id(text) if text.isdigit() else text)
    names = data.get("properties") or list(V3_DEFAULT_PROPERTIES)
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise _invalid_read("properties must be an array of property names")
    return list(dict.fromkeys(ids)), names


def _invalid_read(reason: str) -> Refusal:
    return Refusal(
        400, shapes.error(f"Invalid input JSON: {reason}", category="VALIDATION_ERROR")
    )


def _known(store: DealStore, deal_id: str) -> bool:
    return deal_id.isdigit() and store.exists(int(deal_id))
