"""The command line: parse options, call one core function, render, exit."""

from __future__ import annotations

import enum
import logging
import os
import signal
import sys
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from reconciler import __version__, commands, render
from reconciler.errors import (
    ExitCode,
    InvalidInputError,
    ReconcilerError,
    StalePlanError,
    UsageError,
)
from reconciler.files import write_atomically
from reconciler.plan import MAX_BATCH_SIZE, render_plan_file
from reconciler.snapshot import render_snapshot

log = logging.getLogger("reconciler")


class Format(str, enum.Enum):
    text = "text"
    markdown = "markdown"
    json = "json"


class _Group(TyperGroup):
    """Maps every way a command can end onto the documented exit codes."""

    def main(self, *args: Any, **extra: Any) -> Any:
        standalone_mode = extra.pop("standalone_mode", True)
        extra["standalone_mode"] = False
        reset = _output_format.set("text")
        try:
            code = _run_guarded(lambda: super(_Group, self).main(*args, **extra))
        finally:
            _output_format.reset(reset)
        if standalone_mode:
            sys.exit(code)
        return code


def _run_guarded(invoke: Any) -> int:
    try:
        result = invoke()
    except (typer.Abort, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except ReconcilerError as error:
        _report_failure(error)
        return error.exit_code
    except Exception as error:
        if _is_click_error(error):
            error.show()  # type: ignore[attr-defined]
            usage = getattr(error, "exit_code", 1) == CLICK_USAGE_EXIT
            return ExitCode.USAGE if usage else ExitCode.ERROR
        # A bug: say so briefly; -vv shows the traceback.
        log.debug("unexpected failure", exc_info=True)
        print(f"error: unexpected {type(error).__name__}: {error}", file=sys.stderr)
        return ExitCode.ERROR
    return int(result or 0)


# Typer raises click's exceptions, from click itself or from its own copy of
# click in newer releases; both carry ``show()`` and click's exit code 2 for
# usage errors.
CLICK_USAGE_EXIT = 2


def _is_click_error(error: Exception) -> bool:
    return hasattr(error, "show") and hasattr(error, "exit_code")


# The output format of the command running now, for reporting its failure.
_output_format: ContextVar[str] = ContextVar("output_format", default="text")


def _report_failure(error: ReconcilerError) -> None:
    fmt = _output_format.get()
    stream = sys.stdout if fmt == "json" else sys.stderr
    if isinstance(error, InvalidInputError):
        stream.write(render.render_findings(error.findings, error.summary, fmt))
    elif isinstance(error, StalePlanError):
        stream.write(render.render_error(str(error), error.drifts, fmt))
    else:
        stream.write(render.render_error(str(error), [], fmt))


app = typer.Typer(
    cls=_Group,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="HubSpot deal properties as code: validate, plan and apply.",
)

PathsArg = Annotated[
    list[Path],
    typer.Argument(metavar="PATH", help="Desired-state YAML files or folders."),
]
PropertiesOpt = Annotated[
    Path | None,
    typer.Option(
        "--properties",
        help="Property definitions JSON (v1 array or v3 results).",
    ),
]
PipelinesOpt = Annotated[
    Path | None, typer.Option("--pipelines", help="Deal pipelines JSON (v3 or v1).")
]
SnapshotOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--snapshot",
        metavar="PATH",
        help="Snapshot file or folder of pages (repeatable).",
    ),
]
FormatOpt = Annotated[Format, typer.Option("--format", help="Output format.")]
BatchOpt = Annotated[
    int,
    typer.Option(
        "--batch-size", min=1, max=MAX_BATCH_SIZE, help="Deals per update request."
    ),
]
RateOpt = Annotated[
    int,
    typer.Option("--rate", min=1, help="Requests per 10 seconds sent at the most."),
]


def _version(value: bool) -> None:
    if value:
        print(f"reconciler {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: Annotated[
        int,
        typer.Option("-v", "--verbose", count=True, help="-v requests, -vv payloads."),
    ] = 0,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version."
        ),
    ] = False,
) -> None:
    _configure_logging(verbose)


def _configure_logging(verbose: int) -> None:
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def _settings(
    properties: Path | None = None,
    pipelines: Path | None = None,
    snapshot: list[Path] | None = None,
    **options: Any,
) -> commands.Settings:
    return commands.Settings(
        properties_file=properties,
        pipelines_file=pipelines,
        snapshot_paths=list(snapshot or []),
        env=os.environ,
        **options,
    )


def _use_format(fmt: Format) -> str:
    _output_format.set(fmt.value)
    return fmt.value


def _progress(message: str) -> None:
    """Progress on a terminal only; quiet when piped or NO_COLOR is set."""
    if sys.stderr.isatty() and "NO_COLOR" not in os.environ:
        sys.stderr.write(f"\r\x1b[K{message}")
        sys.stderr.flush()


@app.command()
def validate(
    paths: PathsArg,
    properties: PropertiesOpt = None,
    pipelines: PipelinesOpt = None,
    snapshot: SnapshotOpt = None,
    fmt: FormatOpt = Format.text,
) -> int:
    """Check desired state against the schema and property definitions."""
    out = _use_format(fmt)
    with _settings(properties, pipelines, snapshot) as settings:
        result = commands.validate_paths(paths, settings)
    sys.stdout.write(
        render.render_validation(len(result.state.deals), len(result.values), out)
    )
    return ExitCode.OK


@app.command()
def plan(
    paths: PathsArg,
    properties: PropertiesOpt = None,
    pipelines: PipelinesOpt = None,
    snapshot: SnapshotOpt = None,
    out: Annotated[
        Path | None, typer.Option("-o", "--out", help="Save the plan as JSON here.")
    ] = None,
    detailed_exitcode: Annotated[
        bool,
        typer.Option("--detailed-exitcode", help="Exit 2 when changes are pending."),
    ] = False,
    batch_size: BatchOpt = MAX_BATCH_SIZE,
    skip_missing: Annotated[
        bool,
        typer.Option("--skip-missing", help="Leave out deals HubSpot lacks; warn."),
    ] = False,
    fmt: FormatOpt = Format.text,
) -> int:
    """Diff desired state against HubSpot and show the batches to send."""
    output = _use_format(fmt)
    options = {"batch_size": batch_size, "skip_missing": skip_missing}
    with _settings(properties, pipelines, snapshot, **options) as settings:
        result = commands.plan_paths(paths, settings)
    shown = render.render_plan(result, output)
    if out is not None:
        write_atomically(out, render_plan_file(result))
    for warning in render.skipped_lines(result) if output == "json" else []:
        print(warning, file=sys.stderr)
    sys.stdout.write(shown)
    if detailed_exitcode and not result.is_empty:
        return ExitCode.CHANGES_PENDING
    return ExitCode.OK


@app.command()
def apply(
    targets: Annotated[
        list[Path], typer.Argument(help="A saved plan.json, or desired-state paths.")
    ],
    auto_approve: Annotated[
        bool, typer.Option("--auto-approve", help="Apply without asking.")
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="Read back until HubSpot shows the values.")
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0, help="Seconds --wait may take.")
    ] = 600.0,
    fail_fast: Annotated[
        bool, typer.Option("--fail-fast", help="Stop at the first rejected batch.")
    ] = False,
    resend: Annotated[
        bool,
        typer.Option(
            "--resend",
            help="Send even if this plan was sent less than an hour ago.",
        ),
    ] = False,
    skip_missing: Annotated[
        bool,
        typer.Option("--skip-missing", help="Leave out deals HubSpot lacks; warn."),
    ] = False,
    properties: PropertiesOpt = None,
    pipelines: PipelinesOpt = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            min=1,
            max=MAX_BATCH_SIZE,
            help=f"Deals per update request, {MAX_BATCH_SIZE} unless given;"
            " re-batches a saved plan.",
        ),
    ] = None,
    rate: RateOpt = 100,
    fmt: FormatOpt = Format.text,
) -> int:
    """Apply a saved plan, or plan, confirm and apply desired state."""
    output = _use_format(fmt)
    size = MAX_BATCH_SIZE if batch_size is None else batch_size
    with _settings(
        properties,
        pipelines,
        batch_size=size,
        rate_limit=rate,
        skip_missing=skip_missing,
    ) as settings:
        prepared = commands.plan_for_apply(targets, settings, batch_size)
        if not prepared.saved:
            # As Terraform does: the plan is shown even when not asked about.
            sys.stdout.write(render.render_plan(prepared.plan, output))
            if prepared.plan.is_empty:
                return ExitCode.OK
            if not auto_approve:
                _confirm()
        report = commands.apply_reviewed_plan(
            prepared.plan,
            settings,
            fail_fast=fail_fast,
            wait=wait,
            timeout=timeout,
            resend=resend,
            progress=_progress,
        )
    _progress("")
    sys.stdout.write(render.render_apply_report(report.to_dict(), output))
    return report.exit_code


def _confirm() -> None:
    if not sys.stdin.isatty():
        raise UsageError(
            "apply needs confirmation but input is not a terminal;"
            " pass --auto-approve, or apply a saved plan"
        )
    answer = input("Apply these changes? Only 'yes' is accepted: ")
    if answer.strip() != "yes":
        raise ReconcilerError("apply cancelled; nothing was sent")


@app.command()
def snapshot(
    paths: PathsArg,
    out: Annotated[Path, typer.Option("-o", "--out", help="Where to save it.")],
    properties: PropertiesOpt = None,
    pipelines: PipelinesOpt = None,
) -> int:
    """Save the live values of the managed deals and properties."""
    with _settings(properties, pipelines) as settings:
        result = commands.take_snapshot(paths, settings)
    write_atomically(out, render_snapshot(result))
    sys.stderr.write(render.render_snapshot_summary(result, str(out)))
    return ExitCode.OK


@app.command()
def sandbox(
    port: Annotated[int, typer.Option("--port", min=0, max=65535)] = 8765,
    seed: Annotated[
        list[Path] | None, typer.Option("--seed", help="Snapshot to start from.")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token", help="Token to accept; defaults to $HUBSPOT_ACCESS_TOKEN."
        ),
    ] = None,
    properties: PropertiesOpt = None,
    pipelines: PipelinesOpt = None,
    delay: Annotated[
        float, typer.Option("--delay", min=0, help="Seconds before updates show.")
    ] = 0.0,
    rate: Annotated[
        str | None, typer.Option("--rate", help="Rate limit, e.g. 100/10s.")
    ] = None,
    log_file: Annotated[
        Path | None, typer.Option("--log", help="JSON line per request here.")
    ] = None,
) -> int:
    """Serve a HubSpot-compatible API on 127.0.0.1 for demos and CI."""
    from reconciler.sandbox import parse_rate, run_sandbox

    secret = token or os.environ.get("HUBSPOT_ACCESS_TOKEN")
    if not secret:
        raise UsageError("sandbox needs --token or HUBSPOT_ACCESS_TOKEN")
    try:
        limit = parse_rate(rate) if rate else None
    except ValueError as error:
        raise UsageError(f"--rate: {error}") from error
    run_sandbox(
        port, list(seed or []), secret, properties, pipelines, delay, limit, log_file
    )
    return ExitCode.OK


def main() -> None:
    """Console entry point."""
    # CI cancels a job with SIGTERM: stop as Ctrl-C does, with a report.
    signal.signal(signal.SIGTERM, _interrupt)
    app()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
