"""JSON bodies in the shapes HubSpot answers with, v1 and v3."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from datetime import timedelta
from typing import Any

from reconciler.properties import EPOCH, Pipeline, PropertyDefinition
from reconciler.sandbox.state import Version

PORTAL_ID = 1234567
AUTH_MESSAGE = (
    "Authentication credentials not found. This API supports OAuth 2.0"
    " authentication and you can find more details at"
    " https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)
NOT_FOUND_MESSAGE = "resource not found"
MISSING_DEALS_MESSAGE = (
    "Could not get some DEAL objects, they may be deleted or not exist."
    " Check that ids are valid."
)
RATE_LIMIT_GROUP = "publicapi:private-app-api-calls-ten-secondly:0"


def correlation_id() -> str:
    """A fresh ID, as HubSpot puts on every error for its support staff."""
    return str(uuid.uuid4())


# --- errors ------------------------------------------------------------------


def error(message: str, **extra: Any) -> dict[str, Any]:
    """The common error envelope: status, message, correlationId, then extras."""
    return {
        "status": "error",
        "message": message,
        "correlationId": correlation_id(),
    } | extra


def legacy_error(message: str, **extra: Any) -> dict[str, Any]:
    """The v1 error envelope, which also carries a ``requestId``."""
    return error(message, **extra) | {"requestId": uuid.uuid4().hex}


def invalid_json(reason: str) -> dict[str, Any]:
    return error(f"Invalid input JSON: {reason}")


def validation_failed(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The v1 body for a batch whose property values HubSpot refuses."""
    return legacy_error("Property values were not valid", validationResults=results)


def validation_result(name: str, code: str, message: str) -> dict[str, Any]:
    return {"isValid": False, "message": message, "error": code, "name": name}


def unauthorized() -> dict[str, Any]:
    return error(AUTH_MESSAGE, category="INVALID_AUTHENTICATION")


def rate_limited() -> dict[str, Any]:
    """HubSpot's 429 body for the rolling ten-second limit."""
    return {
        "status": "error",
        "message": "You have reached your ten_secondly_rolling limit.",
        "errorType": "RATE_LIMIT",
        "correlationId": correlation_id(),
        "policyName": "TEN_SECONDLY_ROLLING",
        "groupName": RATE_LIMIT_GROUP,
    }


def missing_objects(ids: list[str]) -> dict[str, Any]:
    """The v3 per-batch error listing IDs that do not exist."""
    return {
        "status": "error",
        "category": "OBJECT_NOT_FOUND",
        "message": MISSING_DEALS_MESSAGE,
        "context": {"ids": ids},
    }


# --- v1 deals ----------------------------------------------------------------


def v1_deal(
    deal_id: int,
    history: Mapping[str, list[Version]],
    names: Collection[str] | None,
    *,
    with_history: Collection[str] = (),
    associations: bool = True,
) -> dict[str, Any]:
    """A v1 deal; ``names`` limits the properties (None: all of them)."""
    chosen = sorted(
        name
        for name in history
        if names is None or name in names or name in with_history
    )
    return {
        "portalId": PORTAL_ID,
        "dealId": deal_id,
        "isDeleted": False,
        "associations": _no_associations() if associations else None,
        "properties": {
            name: _v1_value(name, history[name], name in with_history)
            for name in chosen
        },
        "stateChanges": [],
    }


def _no_associations() -> dict[str, list[int]]:
    return {
        "associatedVids": [],
        "associatedCompanyIds": [],
        "associatedDealIds": [],
        "associatedTicketIds": [],
    }


def _v1_value(name: str, versions: list[Version], full: bool) -> dict[str, Any]:
    latest = versions[0]
    return {
        "value": latest.value,
        "timestamp": latest.timestamp,
        "source": latest.source,
        "sourceId": latest.source_id,
        "versions": [
            _v1_version(name, version)
            for version in (versions if full else versions[:1])
        ],
    }


def _v1_version(name: str, version: Version) -> dict[str, Any]:
    return {
        "name": name,
        "value": version.value,
        "timestamp": version.timestamp,
        "source": version.source,
        "sourceId": version.source_id,
        "sourceVid": [],
    }


# --- v3 objects, properties and pipelines ------------------------------------


def v3_record(
    deal_id: int,
    values: Mapping[str, str],
    names: list[str],
    definitions: Mapping[str, PropertyDefinition],
    created_ms: int,
    updated_ms: int,
) -> dict[str, Any]:
    """A v3 deal holding only ``names``; unset ones known to HubSpot are null."""
    properties: dict[str, str | None] = {}
    for name in sorted(set(names)):
        if name in values or name in definitions:
            properties[name] = v3_value(definitions.get(name), values.get(name))
    return {
        "id": str(deal_id),
        "properties": properties,
        "createdAt": instant(created_ms),
        "updatedAt": instant(updated_ms),
        "archived": False,
    }


def v3_value(definition: PropertyDefinition | None, value: str | None) -> str | None:
    """v3 reports empty values as null and dates as ISO 8601 text."""
    if value is None or value == "":
        return None
    kind = definition.type if definition else "string"
    if kind in ("date", "datetime") and value.lstrip("-").isdigit():
        text = instant(int(value))
        return text[:10] if kind == "date" else text
    return value


def instant(millis: int) -> str:
    """Epoch milliseconds as Java's ``Instant.toString`` writes them."""
    moment = EPOCH + timedelta(milliseconds=millis)
    fraction = f".{millis % 1000:03d}" if millis % 1000 else ""
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"


def v3_property(definition: PropertyDefinition) -> dict[str, Any]:
    """A property definition as ``GET /crm/v3/properties/deals`` lists it."""
    return {
        "name": definition.name,
        "label": definition.label,
        "type": definition.type,
        "fieldType": definition.field_type,
        "description": "",
        "groupName": "dealinformation",
        "options": [
            {
                "label": option.label,
                "value": option.value,
                "displayOrder": order,
                "hidden": False,
            }
            for order, option in enumerate(definition.options)
        ],
        "displayOrder": -1,
        "calculated": definition.calculated,
        "externalOptions": definition.external_options,
        "hasUniqueValue": False,
        "hidden": False,
        "formField": False,
        "archived": False,
        "modificationMetadata": {
            "archivable": False,
            "readOnlyDefinition": True,
            "readOnlyValue": definition.read_only,
        },
    }


def v3_pipeline(pipeline: Pipeline, order: int) -> dict[str, Any]:
    """A pipeline as ``GET /crm/v3/pipelines/deals`` lists it."""
    return {
        "id": pipeline.id,
        "label": pipeline.label,
        "displayOrder": order,
        "archived": False,
        "stages": [
            {
                "id": stage.id,
                "label": stage.label,
                "displayOrder": index,
                "archived": False,
            }
            for index, stage in enumerate(pipeline.stages)
        ],
    }
