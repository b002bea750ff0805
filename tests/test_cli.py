"""The command line: exit codes, formats, streams and file writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler import __version__
from reconciler.errors import ExitCode
from tests.conftest import CASES, ROOT, needs_shared
from tests.fakes import run_cli as run

EXAMPLES = ROOT / "examples"


def test_exit_codes_are_the_documented_ones() -> None:
    assert [code.value for code in ExitCode] == [0, 1, 2, 3, 4, 5, 6, 64, 130]
    readme = (ROOT / "README.md").read_text()
    for code in ExitCode:
        assert f"| {code.value} |" in readme


def test_version() -> None:
    assert run("--version") == (0, f"reconciler {__version__}\n", "")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["plan", "--bogus"], "--bogus"),
        (["plan", "examples/deals", "--format", "xml"], "'xml'"),
        (["plan", "examples/deals", "--batch-size", "101"], "--batch-size"),
        (["nosuchcommand"], "nosuchcommand"),
        (["apply"], "targets"),
    ],
)
def test_usage_errors_exit_64_and_name_the_culprit(args: list[str], named: str) -> None:
    code, out, err = run(*args)
    assert (code, out) == (64, "")
    last = err.strip().splitlines()[-1]
    assert last.startswith("Error: ")
    assert named in last


def test_validate_reports_success() -> None:
    code, out, _ = run("validate", EXAMPLES / "deals")
    assert (code, out) == (0, "Valid: 10 deals, 24 property values.\n")


@needs_shared
def test_json_goes_to_stdout_alone() -> None:
    case = CASES / "B07"
    code, out, err = run(
        "validate",
        case / "desired.yaml",
        "--properties",
        case / "properties.json",
        "--format",
        "json",
    )
    assert code == 1
    assert err == ""
    document = json.loads(out)
    assert document["summary"] == "4 problems found"
    assert document["problems"][0] == {
        "file": str(case / "desired.yaml"),
        "line": 3,
        "column": 5,
        "deal": "7001",
        "property": "closedat",
        "rule": "property",
        "message": f'unknown property "closedat" in {case / "properties.json"}'
        ' (did you mean "closedate"?)',
    }


@needs_shared
def test_text_problems_go_to_stderr_each_led_by_its_place() -> None:
    case = CASES / "B02"
    code, out, err = run(
        "validate", case / "desired.yaml", "--properties", case / "properties.json"
    )
    assert (code, out) == (1, "")
    lines = err.splitlines()
    assert lines[-1] == "4 problems found"
    assert lines[0].startswith(
        f"{case / 'desired.yaml'}:7:13: deal 2003, property amount:"
    )


def test_plan_needs_a_snapshot_or_a_token() -> None:
    code, _, err = run("plan", EXAMPLES / "deals")
    assert code == 64
    assert "--snapshot" in err


@needs_shared
def test_failed_plan_writes_no_file(tmp_path: Path) -> None:
    case = CASES / "B15"
    out_file = tmp_path / "plan.json"
    code, _, _ = run(
        "plan",
        case / "desired.yaml",
        "--snapshot",
        case / "response.json",
        "-o",
        out_file,
    )
    assert code == 1
    assert not out_file.exists()
    assert list(tmp_path.iterdir()) == []


def test_plan_output_is_byte_identical_across_processes(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    outputs = []
    for seed in ("1", "2"):
        plan_file = tmp_path / f"plan-{seed}.json"
        command = [sys.executable, "-m", "reconciler", "plan", "examples/deals"]
        command += ["--snapshot", "examples/snapshot.json", "-o", str(plan_file)]
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, check=True
        )
        outputs.append((done.stdout, plan_file.read_bytes()))
    assert outputs[0] == outputs[1]
    assert b"Plan: 7 deals to update" in outputs[0][0]


def test_detailed_exitcode_and_markdown() -> None:
    code, out, _ = run(
        "plan",
        EXAMPLES / "deals",
        "--snapshot",
        EXAMPLES / "snapshot.json",
        "--detailed-exitcode",
        "--format",
        "markdown",
    )
    assert code == 2
    assert out.startswith("### reconciler plan\n")
    assert '| 15000001093 | `amount` | "4514" | "4750" |' in out
    assert out.rstrip().endswith(
        "**Plan: 7 deals to update, 16 properties to change in 1 batch;"
        " 3 deals unchanged.**"
    )


def test_plain_http_to_another_host_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", "t")
    monkeypatch.setenv("HUBSPOT_BASE_URL", "http://example.com")
    code, _, err = run("plan", EXAMPLES / "deals")
    assert code == 64
    assert "unencrypted" in err


def test_saved_plan_that_was_edited_is_refused(tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.json"
    run(
        "plan",
        EXAMPLES / "deals",
        "--snapshot",
        EXAMPLES / "snapshot.json",
        "-o",
        plan_file,
    )
    plan_file.write_text(plan_file.read_text().replace('"4750"', '"47500"'))
    code, _, err = run("apply", plan_file)
    assert code == 1
    assert "the plan was edited: its changes do not match its fingerprint" in err


def test_output_goes_through_links_and_devices_not_over_them(tmp_path: Path) -> None:
    import os

    args = ["plan", EXAMPLES / "deals", "--snapshot", EXAMPLES / "snapshot.json"]
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    assert run(*args, "-o", link)[0] == 0
    assert link.is_symlink()
    assert json.loads(real.read_text())["format"] == "reconciler-plan"

    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert run(*args, "-o", fifo)[0] == 0
        assert fifo.is_fifo()
        assert b'"format": "reconciler-plan"' in os.read(reader, 1 << 16)
    finally:
        os.close(reader)


def test_output_problems_name_the_users_path(tmp_path: Path) -> None:
    args = ["plan", EXAMPLES / "deals", "--snapshot", EXAMPLES / "snapshot.json"]
    code, _, err = run(*args, "-o", tmp_path)
    assert (code, err) == (1, f"error: cannot write {tmp_path}: it is a folder\n")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, _, err = run(*args, "-o", locked / "plan.json")
    finally:
        locked.chmod(0o700)
    if os_is_root():
        assert code == 0  # root writes anyway; nothing more to check
    else:
        assert (code, err) == (
            1,
            f"error: cannot write {locked / 'plan.json'}: Permission denied\n",
        )


def os_is_root() -> bool:
    import os

    return os.geteuid() == 0


def test_formats_are_one_table() -> None:
    from reconciler.cli import Format
    from reconciler.render import FORMATS

    assert tuple(f.value for f in Format) == FORMATS


def test_json_plan_is_the_saved_plan_file(tmp_path: Path) -> None:
    args = ["plan", EXAMPLES / "deals", "--snapshot", EXAMPLES / "snapshot.json"]
    code, out, _ = run(*args, "--format", "json", "-o", tmp_path / "plan.json")
    assert code == 0
    assert out == (tmp_path / "plan.json").read_text()
