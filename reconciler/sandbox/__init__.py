"""A HubSpot-compatible server on loopback for demos, CI and end-to-end tests."""

from __future__ import annotations

from reconciler.sandbox.server import Sandbox, parse_rate, run_sandbox

__all__ = ["Sandbox", "parse_rate", "run_sandbox"]
