"""Validation against real property definitions and pipelines."""

from __future__ import annotations

import pytest

from reconciler.desired import load_desired
from reconciler.errors import InvalidInputError
from reconciler.properties import Definitions, load_definitions, load_pipelines
from reconciler.snapshot import load_snapshot
from reconciler.validate import validate_state
from tests.conftest import FIXTURES, REAL_DATA, needs_shared

REAL = REAL_DATA / "real"
REAL_FIXTURES = FIXTURES / "real"


def demo_portal() -> Definitions:
    return Definitions(
        load_definitions(REAL / "v1_deal_properties__demo_portal_2020-01-31.json"),
        load_pipelines(
            REAL / "v1_deal_pipelines__crm-pipelines_v1__demo_portal_2020-01-31.json"
        ),
    )


@needs_shared
def test_real_v1_definitions_accept_a_valid_deal() -> None:
    state = load_desired([REAL_FIXTURES / "demo_portal_deal.yaml"])
    values = validate_state(state, demo_portal())
    assert {v.property: v.wire for v in values} == {
        "dealname": "Example deal",
        "amount": "150",
        "closedate": "1564783118291",
        "dealtype": "Free Trial",
        "hs_analytics_source": "ORGANIC_SEARCH",
        "description": "Renewal discussed on the call",
    }


@needs_shared
def test_real_v1_definitions_reject_read_only_and_wrong_options() -> None:
    state = load_desired([REAL_FIXTURES / "demo_portal_bad.yaml"])
    snapshot = load_snapshot(
        [REAL / "v1_deals_paged_current_values__demo_portal_2020-01-31.json"]
    )
    with pytest.raises(InvalidInputError) as raised:
        validate_state(state, demo_portal(), snapshot)
    found = [(f.location.line, f.property, f.message) for f in raised.value.findings]
    assert found == [
        (3, "days_to_close", '"days_to_close" is read-only; HubSpot sets its value'),
        (
            4,
            "dealtype",
            "'Free trial' is not an option (values are case-sensitive);"
            " did you mean 'Free Trial'?",
        ),
        (
            5,
            "hs_all_team_ids",
            '"hs_all_team_ids" is read-only; HubSpot sets its value',
        ),
        (
            9,
            "amount_in_home_currency",
            '"amount_in_home_currency" is read-only; HubSpot sets its value',
        ),
    ]


@needs_shared
def test_plan_against_the_real_v1_paged_deal() -> None:
    from reconciler.diff import diff_values
    from reconciler.plan import build_plan

    state = load_desired([REAL_FIXTURES / "demo_portal_deal.yaml"])
    snapshot = load_snapshot(
        [REAL / "v1_deals_paged_current_values__demo_portal_2020-01-31.json"]
    )
    diff = diff_values(state, validate_state(state, demo_portal(), snapshot), snapshot)
    plan = build_plan(diff.changes, checks=diff.checks)
    assert plan.batches[0].request_body() == [
        {
            "objectId": 931633510,
            "properties": [
                {"name": "amount", "value": "150"},
                {"name": "dealtype", "value": "Free Trial"},
                {"name": "description", "value": "Renewal discussed on the call"},
                {"name": "hs_analytics_source", "value": "ORGANIC_SEARCH"},
            ],
        }
    ]
    assert [(c.property, c.before) for c in plan.checks] == [
        ("closedate", "1564783118291"),
        ("dealname", "Example deal"),
    ]


def test_definitions_without_a_known_type_refuse_their_values() -> None:
    definitions = Definitions(
        load_definitions(FIXTURES / "definitions" / "malformed.json"),
        load_pipelines(None),
        properties_source="malformed.json",
    )
    state = load_desired([FIXTURES / "definitions" / "uses_malformed.yaml"])
    with pytest.raises(InvalidInputError) as raised:
        validate_state(state, definitions)
    assert [f.message for f in raised.value.findings] == [
        '"amount" has no type in malformed.json, so its values cannot be checked;'
        " fix the definition",
        "\"deal_size\" has type 'numbr' in malformed.json, so its values cannot be"
        " checked; fix the definition",
        'unknown property "Close Date" in malformed.json; "Close Date" is the label'
        ' of "closedate", use the name',
    ]
