"""Loading desired state from YAML: positions, YAML 1.2 scalars, refusals."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from reconciler.desired import load_desired
from reconciler.errors import InvalidInputError
from reconciler.properties import Definitions, load_definitions, load_pipelines
from reconciler.validate import check_schema, validate_state
from tests.conftest import FIXTURES

DESIRED = FIXTURES / "desired"


def messages(paths: list[Path]) -> list[str]:
    with pytest.raises(InvalidInputError) as raised:
        load_desired(paths)
    return [str(finding) for finding in raised.value.findings]


def test_values_keep_text_position_and_quoting(tmp_path: Path) -> None:
    path = tmp_path / "deals.yaml"
    path.write_text('deals:\n  "9876543210":\n    amount: 120000\n    note: "yes"\n')
    deal = load_desired([path]).deals["9876543210"]
    (amount_key, amount), (_, note) = deal.properties
    assert (amount_key.text, amount_key.location.line, amount_key.location.column) == (
        "amount",
        3,
        5,
    )
    assert (amount.text, amount.plain, amount.location.column) == ("120000", True, 13)
    assert (note.text, note.plain) == ("yes", False)


def test_same_deal_in_two_files_is_refused_with_both_places() -> None:
    found = messages([DESIRED / "two_files_a.yaml", DESIRED / "two_files_b.yml"])
    assert found == [
        f"{DESIRED / 'two_files_b.yml'}:2:3: deal 42: deal 42 is declared twice: here"
        f" and at {DESIRED / 'two_files_a.yaml'}:3:3;"
        " a deal may appear in one place only"
    ]


def test_folders_are_read_in_sorted_order(tmp_path: Path) -> None:
    for name in ("b.yaml", "a.yml", "ignored.txt"):
        (tmp_path / name).write_text('deals:\n  "1": {amount: 1}\n')
    (tmp_path / "ignored.txt").write_text("not yaml")
    (tmp_path / "b.yaml").write_text('deals:\n  "2": {amount: 2}\n')
    state = load_desired([tmp_path])
    assert [d.path for d in state.documents] == [
        str(tmp_path / "a.yml"),
        str(tmp_path / "b.yaml"),
    ]
    assert [deal.id for deal in state.ordered_deals()] == ["1", "2"]


def test_deal_ids_order_numerically_at_any_length(tmp_path: Path) -> None:
    path = tmp_path / "deals.yaml"
    path.write_text(
        "deals:\n  123456789012345678901234567890: {a: 1}\n  9: {a: 1}\n  10: {a: 1}\n"
    )
    ids = [deal.id for deal in load_desired([path]).ordered_deals()]
    assert ids == ["9", "10", "123456789012345678901234567890"]


def test_syntax_errors_name_the_place() -> None:
    found = messages([DESIRED / "syntax.yaml"])
    assert len(found) == 1
    assert found[0].startswith(f"{DESIRED / 'syntax.yaml'}:4:1: YAML syntax:")


def test_custom_tags_are_refused_but_str_is_kept() -> None:
    found = messages([DESIRED / "tags.yaml"])
    assert found == [
        f"{DESIRED / 'tags.yaml'}:3:15: YAML tag"
        " tag:yaml.org,2002:python/object:os.system"
        " is not allowed; quote the value instead"
    ]


def test_one_document_per_file() -> None:
    found = messages([DESIRED / "multi_doc.yaml"])
    assert found == [
        f"{DESIRED / 'multi_doc.yaml'}:3:1: a desired-state file holds one YAML"
        " document; split this one into files"
    ]


def test_missing_paths_are_all_reported(tmp_path: Path) -> None:
    found = messages([tmp_path / "nope.yaml", tmp_path / "also.yaml"])
    assert found == [
        f"{tmp_path / 'also.yaml'}:1:1: no such file or folder",
        f"{tmp_path / 'nope.yaml'}:1:1: no such file or folder",
    ]


def test_schema_problems_are_placed_and_explained() -> None:
    state = load_desired([DESIRED / "structure.yaml"])
    found = sorted(
        (f.location.line, f.location.column, f.deal, f.property, f.message)
        for f in check_schema(state.documents[0])
        if f.location
    )
    assert found == [
        (1, 10, None, None, "version must be 1"),
        (
            2,
            1,
            None,
            None,
            "unexpected top-level key 'owner'; a file holds 'version' and 'deals'",
        ),
        (4, 3, None, None, "deal IDs are whole numbers: 'abc' is not one"),
        (
            7,
            13,
            "501",
            "amount",
            "a value is text, a number, true/false, null, or a list of these"
            " (for multi-select properties)",
        ),
        (8, 10, "502", None, "a deal is a mapping of property names to values"),
    ]


def test_empty_file_is_a_schema_problem() -> None:
    state = load_desired([DESIRED / "empty.yaml"])
    assert [f.message for f in check_schema(state.documents[0])] == [
        "the file is empty; it needs a deals mapping"
    ]


def test_example_desired_state_is_valid() -> None:
    examples = Path(__file__).resolve().parent.parent / "examples"
    state = load_desired([examples / "deals"])
    definitions = Definitions(load_definitions(None), load_pipelines(None))
    values = validate_state(state, definitions)
    assert len(state.deals) == 10
    assert len(values) == 24


def test_large_files_load_quickly(tmp_path: Path) -> None:
    lines = ["deals:"]
    for n in range(20_000):
        lines.append(f'  "{15000000000 + n}":\n    amount: {n}\n    dealname: Deal {n}')
    path = tmp_path / "big.yaml"
    path.write_text("\n".join(lines) + "\n")
    started = time.perf_counter()
    state = load_desired([path])
    assert len(state.deals) == 20_000
    # Generous bound: this guards against quadratic behaviour, not speed.
    assert time.perf_counter() - started < 10


def test_copies_of_a_file_under_a_folder_collide(tmp_path: Path) -> None:
    shutil.copy(DESIRED / "two_files_a.yaml", tmp_path / "one.yaml")
    shutil.copy(DESIRED / "two_files_a.yaml", tmp_path / "two.yaml")
    found = messages([tmp_path])
    assert len(found) == 1
    assert "deal 42 is declared twice" in found[0]


def test_every_problem_of_every_file_in_one_run() -> None:
    from reconciler.desired import read_desired

    state = read_desired([DESIRED / "mixed"])
    definitions = Definitions(load_definitions(None), load_pipelines(None))
    with pytest.raises(InvalidInputError) as raised:
        validate_state(state, definitions)
    found = [
        (Path(f.location.file).name, f.location.line, f.rule)
        for f in raised.value.findings
        if f.location
    ]
    assert found == [
        ("a_broken.yaml", 4, "syntax"),
        ("b_bad_values.yaml", 2, "deal-id"),
        ("b_bad_values.yaml", 4, "deal-id"),
        ("b_bad_values.yaml", 7, "property"),
    ]
    assert "outside HubSpot's IDs (1 to 9223372036854775807)" in str(
        raised.value.findings[1]
    )


def test_deep_nesting_is_refused_without_recursing() -> None:
    found = messages([DESIRED / "deep.yaml"])
    assert len(found) == 1
    assert "nested deeper than 20 levels" in found[0]


def test_bytes_that_are_not_utf8_are_placed() -> None:
    found = messages([DESIRED / "latin1.yaml"])
    assert len(found) == 1
    assert found[0].startswith(f"{DESIRED / 'latin1.yaml'}:3:")
    assert "invalid trailing UTF-8 octet" in found[0]


def test_null_inside_a_list_is_explained() -> None:
    state = load_desired([DESIRED / "null_in_list.yaml"])
    assert [f.message for f in check_schema(state.documents[0])] == [
        "list items are option values: text or numbers, not null or lists"
    ]
