"""Test doubles and the CLI runner shared by the tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from reconciler.cli import app
from reconciler.hubspot import HubSpotClient

HTTP_FIXTURES = Path(__file__).parent / "fixtures" / "http"
TOKEN = "pat-na1-00000000-test-token-never-shown"
UPDATE_PATH = "/deals/v1/batch-async/update"
READ_PATH = "/crm/v3/objects/deals/batch/read"


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def fixture_response(
    name: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    """A recorded HubSpot answer from tests/fixtures/http as an httpx response."""
    data = json.loads((HTTP_FIXTURES / name).read_text(encoding="utf-8"))
    if "body_text" in data:
        content = data["body_text"].encode("utf-8")
        return httpx.Response(data["http_status"], content=content, headers=headers)
    return httpx.Response(data["http_status"], json=data["body"], headers=headers)


_runner = CliRunner()


def run_cli(*args: object, stdin: str | None = None) -> tuple[int, str, str]:
    """Run ``reconciler`` with ``args``: exit code, stdout and stderr."""
    result = _runner.invoke(app, [str(arg) for arg in args], input=stdin)
    return result.exit_code, result.stdout, result.stderr


def mock_client(
    handler: Callable[[httpx.Request], httpx.Response], time: FakeTime, **options: Any
) -> HubSpotClient:
    """A client talking to ``handler`` through httpx's MockTransport."""
    http = httpx.Client(transport=httpx.MockTransport(handler))
    return HubSpotClient(
        http,
        TOKEN,
        base_url="https://api.hubapi.test",
        sleep=time.sleep,
        clock=time.clock,
        **options,
    )
