"""Rendering results for people (text, Markdown) and machines (JSON).

Every command offers the formats in FORMATS; JSON goes to stdout alone, and a
plan in JSON is the saved plan file plus any review notes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from reconciler.errors import Finding
from reconciler.plan import Batch, Change, Plan, render_plan_file
from reconciler.properties import PropertyDefinition, display_value
from reconciler.snapshot import Snapshot, id_order

FORMATS = ("text", "markdown", "json")


def _shown(change: Change, wire: str | None) -> str:
    return display_value(change.definition(), wire)


PLURALS = {"property": "properties", "batch": "batches", "retry": "retries"}


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun if count == 1 else PLURALS.get(noun, noun + 's')}"


def plan_summary(plan: Plan) -> str:
    """The closing line of a plan: deals, properties and batches."""
    if plan.is_empty:
        return (
            "No changes. HubSpot already holds the desired values"
            f" ({_plural(plan.unchanged_deals, 'deal')} checked)."
        )
    return (
        f"Plan: {_plural(plan.deal_count, 'deal')} to update,"
        f" {_plural(len(plan.changes), 'property')} to change"
        f" in {_plural(len(plan.batches), 'batch')};"
        f" {_plural(plan.unchanged_deals, 'deal')} unchanged."
    )


# --- plans ---------------------------------------------------------------------


def render_plan(plan: Plan, fmt: str) -> str:
    """The plan for review, in the named format."""
    renderers: dict[str, Callable[[Plan], str]] = {
        "text": _plan_text,
        "markdown": _plan_markdown,
        "json": lambda p: render_plan_file(p, notes=True),
    }
    return renderers[fmt](plan)


def skipped_lines(plan: Plan) -> list[str]:
    """One line per deal ``--skip-missing`` left out of the plan."""
    return [f"skipped: {finding}" for finding in plan.skipped]


def _plan_text(plan: Plan) -> str:
    lines: list[str] = []
    if not plan.is_empty:
        lines.append("reconciler will update these deals:")
        lines.append("")
    for batch in plan.batches:
        lines.append(f"# batch {batch.index} ({_plural(len(batch.deals), 'deal')})")
        for deal, changes in _by_deal(batch):
            lines.extend(_deal_text(deal, changes))
        lines.append("")
    lines.extend(skipped_lines(plan))
    lines.append(plan_summary(plan))
    return "\n".join(lines) + "\n"


def _by_deal(batch: Batch) -> Iterable[tuple[str, list[Change]]]:
    for deal in batch.deals:
        yield deal, [change for change in batch.changes if change.deal == deal]


def _deal_text(deal: str, changes: list[Change]) -> list[str]:
    located = [change.location for change in changes if change.location]
    where = min(located, key=lambda loc: loc.line) if located else None
    lines = [f"  ~ deal {deal}" + (f"  ({where.file}:{where.line})" if where else "")]
    width = max(len(change.property) for change in changes)
    for change in changes:
        before, after = _shown(change, change.before), _shown(change, change.after)
        line = f"      {change.property.ljust(width)}  {before} -> {after}"
        if change.note:
            line += f"  [{change.note}]"
        lines.append(line)
    return lines


def _plan_markdown(plan: Plan) -> str:
    lines = ["### reconciler plan", ""]
    if not plan.is_empty:
        lines += [
            "| deal | property | before | after | source |",
            "|---|---|---|---|---|",
        ]
    for change in plan.changes:
        where = change.location
        source = f"`{where.file}:{where.line}`" if where else ""
        before, after = _shown(change, change.before), _shown(change, change.after)
        note = f" ({change.note})" if change.note else ""
        lines.append(
            f"| {change.deal} | `{change.property}` | {_cell(before)} |"
            f" {_cell(after)}{note} | {source} |"
        )
    lines += ["", *(_cell(line) for line in skipped_lines(plan))]
    lines.append(f"**{plan_summary(plan)}**")
    return "\n".join(lines) + "\n"


MARKDOWN_SPECIAL = str.maketrans(
    {char: f"\\{char}" for char in "\\`*_[]<>|#"} | {"\n": " ", "\r": " "}
)


def _cell(text: str) -> str:
    """Text from a YAML file or HubSpot, made inert inside a Markdown table."""
    return text.translate(MARKDOWN_SPECIAL)


# --- findings --------------------------------------------------------------------


def render_findings(findings: list[Finding], summary: str, fmt: str) -> str:
    """Problems, one a line, each led by file:line:col."""
    if fmt == "json":
        document = {
            "ok": False,
            "summary": summary,
            "problems": _findings_json(findings),
        }
        return json.dumps(document, indent=2) + "\n"
    if fmt == "markdown":
        lines = [f"- `{f.location}` {_cell(_subject(f) + f.message)}" for f in findings]
        return "\n".join([f"**{summary}**", "", *lines]) + "\n"
    return "\n".join([*(str(f) for f in findings), summary]) + "\n"


def _subject(finding: Finding) -> str:
    parts = []
    if finding.deal:
        parts.append(f"deal {finding.deal}")
    if finding.property:
        parts.append(f"property `{finding.property}`")
    return f"{', '.join(parts)}: " if parts else ""


def _findings_json(findings: list[Finding]) -> list[dict[str, Any]]:
    return [
        {
            "file": f.location.file if f.location else None,
            "line": f.location.line if f.location else None,
            "column": f.location.column if f.location else None,
            "deal": f.deal,
            "property": f.property,
            "rule": f.rule,
            "message": f.message,
        }
        for f in findings
    ]


def render_error(message: str, details: list[str], fmt: str) -> str:
    """A command's failure that is not a list of input problems."""
    if fmt == "json":
        return json.dumps({"ok": False, "error": message, "details": details}) + "\n"
    return "\n".join([f"error: {message}", *(f"  {d}" for d in details)]) + "\n"


def render_snapshot_summary(snapshot: Snapshot, where: str) -> str:
    """What a saved snapshot holds, and every requested deal HubSpot lacks."""
    lines = [f"Saved {_plural(len(snapshot.deals), 'deal')} to {where}."]
    for deal in sorted(snapshot.missing, key=id_order):
        survivor = snapshot.merged_into(deal)
        reason = f"merged into deal {survivor}" if survivor else snapshot.missing[deal]
        lines.append(f"  deal {deal}: {reason}")
    return "\n".join(lines) + "\n"


def render_validation(deals: int, values: int, fmt: str) -> str:
    """What ``validate`` says when everything is valid."""
    if fmt == "json":
        return json.dumps({"ok": True, "deals": deals, "properties": values}) + "\n"
    return f"Valid: {_plural(deals, 'deal')}, {_plural(values, 'property value')}.\n"


# --- apply reports -------------------------------------------------------------

# The deals an apply did not apply, by what became of them, as the summary
# names them; "0 rejected" stands for all of them when there are none.
NOT_APPLIED_COUNTS = (
    ("deals_rejected", "rejected"),
    ("deals_rejected_with_batch", "not applied (rejected batch)"),
    ("deals_failed", "failed"),
    ("deals_refused_daily_limit", "refused (daily limit)"),
    ("deals_unanswered", "unanswered (interrupted)"),
    ("deals_not_attempted", "not attempted"),
)
REASON_STATES = ("rejected", "failed", "interrupted")

Escape = Callable[[str], str]


def render_apply_report(report: dict[str, Any], fmt: str) -> str:
    """What an apply did: every batch, every rejected deal, the verify state."""
    if fmt == "json":
        return json.dumps(report, indent=2) + "\n"
    if fmt == "markdown":
        lines = _apply_lines(report, _cell)
        lines = ["### reconciler apply", "", *(f"- {line}" for line in lines[:-1])]
        lines += ["", f"**{_apply_summary(report)}**"]
    else:
        lines = _apply_lines(report, _plain_text)
    return "\n".join(lines) + "\n"


def _plain_text(text: str) -> str:
    return text


def _apply_lines(report: dict[str, Any], esc: Escape) -> list[str]:
    lines = [_batch_line(batch, esc) for batch in report["batches"]]
    for rejected in report["rejected"]:
        lines.append(_rejected_line(rejected, esc))
    if report.get("stop_reason"):
        lines.append(f"stopped: {esc(report['stop_reason'])}")
    lines.extend(_verify_lines(report, esc))
    lines.append(_apply_summary(report))
    return lines


def _batch_line(batch: dict[str, Any], esc: Escape) -> str:
    deals = batch["deals"]
    line = f"batch {batch['index']}: {batch['state']} ({_plural(len(deals), 'deal')}:"
    line += f" {esc(', '.join(deals))})"
    if batch.get("reason") and batch["state"] in REASON_STATES:
        line += f": {esc(batch['reason'])}"
        if batch.get("correlation_id"):
            line += f" [correlationId {esc(batch['correlation_id'])}]"
    if batch["rejected"] and batch["applied"]:
        line += f"; rejected {esc(', '.join(batch['rejected']))}"
    if batch.get("unanswered") and batch["state"] != "interrupted":
        line += f"; unanswered {esc(', '.join(batch['unanswered']))}"
    return line


def _rejected_line(rejected: dict[str, Any], esc: Escape) -> str:
    values = ", ".join(f"{c['property']}={c['after']}" for c in rejected["changes"])
    sources = sorted(
        {
            f"{c['source']['file']}:{c['source']['line']}"
            for c in rejected["changes"]
            if c.get("source")
        }
    )
    where = f" ({esc(', '.join(sources))})" if sources else ""
    line = (
        f"rejected: deal {esc(rejected['deal'])} {esc(values)}:"
        f" {esc(rejected['reason'])}{where}"
    )
    if rejected.get("correlation_id"):
        status, correlation = rejected["status"], esc(rejected["correlation_id"])
        line += f" [HubSpot {status}, correlationId {correlation}]"
    return line


def _verify_lines(report: dict[str, Any], esc: Escape) -> list[str]:
    lines = [f"verify: {report['verify']}"]
    for value in report.get("not_visible") or []:
        definition = PropertyDefinition(
            value["property"], value["type"], value["field_type"]
        )
        sent = display_value(definition, value["after"])
        shown = display_value(definition, value["current"])
        subject = f"deal {value['deal']} {value['property']}"
        lines.append(
            f"  {esc(subject)}: sent {esc(sent)}, HubSpot still shows {esc(shown)}"
        )
    return lines


def _apply_summary(report: dict[str, Any]) -> str:
    counts = report["counts"]
    not_applied = [
        f"{counts[key]} {label}" for key, label in NOT_APPLIED_COUNTS if counts[key]
    ]
    summary = (
        f"Apply: {_plural(counts['deals_applied'], 'deal')} applied,"
        f" {', '.join(not_applied or ['0 rejected'])}"
        f" in {_plural(counts['batches'], 'batch')}"
    )
    summary += f"; {_plural(counts['requests'], 'request')}"
    retries = counts["rate_limit_retries"] + counts["server_error_retries"]
    if retries:
        summary += f", {_plural(retries, 'retry')}"
    return summary + "."
