"""The journal: submissions, verifications, the pending window and the lock."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from reconciler import journal as journal_module
from reconciler.errors import ReconcilerError
from reconciler.journal import PENDING_WINDOW_SECONDS, Journal
from reconciler.plan import Change

STAGE = Change("18001", "dealstage", "enumeration", "select", "qualifiedtobuy", "won")
AMOUNT = Change("18002", "amount", "number", "number", "0", "1500")


def lines(journal: Journal) -> list[str]:
    return journal.path.read_text(encoding="utf-8").splitlines()


# --- recording and reading -------------------------------------------------


def test_record_appends_one_line_per_accepted_request(tmp_path: Path) -> None:
    journal = Journal(tmp_path / ".reconciler" / "journal.jsonl", clock=lambda: 500.0)

    journal.record("sha256:a", [STAGE, AMOUNT])
    journal.record_verified("sha256:a", at=560.0)

    assert [json.loads(line) for line in lines(journal)] == [
        {
            "fingerprint": "sha256:a",
            "at": 500.0,
            "changes": [
                {"deal": "18001", "property": "dealstage", "after": "won"},
                {"deal": "18002", "property": "amount", "after": "1500"},
            ],
        },
        {"fingerprint": "sha256:a", "at": 560.0, "verified": True},
    ]


def test_was_applied_is_the_first_submission_of_the_plan(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")

    journal.record("sha256:a", [STAGE], at=100.0)
    journal.record("sha256:a", [AMOUNT], at=160.0)

    assert journal.was_applied("sha256:a") == 100.0
    assert journal.was_applied("sha256:b") is None
    assert Journal(tmp_path / "absent.jsonl").was_applied("sha256:a") is None


def test_pending_is_the_last_submission_of_that_value(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")

    journal.record("sha256:a", [STAGE], at=100.0)
    journal.record("sha256:b", [STAGE, AMOUNT], at=160.0)

    assert journal.pending("018001", "dealstage", "won") == 160.0
    assert journal.pending("18002", "amount", "1500") == 160.0
    assert journal.pending("18001", "dealstage", "lost") is None
    assert journal.pending("18003", "dealstage", "won") is None


def test_pending_forgets_a_value_hubspot_was_seen_showing(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    journal.record("sha256:a", [STAGE], at=100.0)
    journal.record("sha256:b", [AMOUNT], at=110.0)

    journal.record_verified("sha256:a", at=130.0)

    assert journal.pending("18001", "dealstage", "won") is None
    assert journal.pending("18002", "amount", "1500") == 110.0


def test_a_torn_last_line_is_skipped_and_the_next_record_kept(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    journal.record("sha256:a", [STAGE], at=100.0)
    with journal.path.open("a", encoding="utf-8") as handle:
        handle.write('{"fingerprint": "sha256:b", "at"')

    journal.record("sha256:c", [AMOUNT], at=200.0)

    fresh = Journal(journal.path)
    assert fresh.was_applied("sha256:a") == 100.0
    assert fresh.was_applied("sha256:b") is None
    assert fresh.was_applied("sha256:c") == 200.0
    assert lines(fresh)[1] == '{"fingerprint": "sha256:b", "at"'


def test_lines_that_are_not_entries_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_text(
        "[]\n"
        '{"fingerprint": "sha256:a", "at": true, "changes": []}\n'
        '{"fingerprint": "sha256:a", "at": 5, "verified": "yes"}\n'
        '{"fingerprint": "sha256:a", "at": 7, "changes": [1, null]}\n',
        encoding="utf-8",
    )

    journal = Journal(path)

    assert journal.was_applied("sha256:a") == 7
    assert journal.blocking_apply("sha256:a", now=8.0) == 7


def test_the_file_is_read_once_for_many_questions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    journal.record("sha256:a", [STAGE], at=100.0)
    reads: list[Path] = []
    read_text = Path.read_text

    def counting_read_text(self: Path, *args: object, **kwargs: object) -> str:
        reads.append(self)
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counting_read_text)

    answers = [journal.pending(str(18000 + n), "dealstage", "won") for n in range(500)]
    journal.record("sha256:b", [AMOUNT], at=150.0)

    assert reads == [journal.path]
    assert answers.count(100.0) == 1
    assert journal.pending("18002", "amount", "1500") == 150.0
    assert journal.was_applied("sha256:b") == 150.0


# --- when a plan may be applied again --------------------------------------


def test_an_unverified_apply_blocks_within_the_window(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    journal.record("sha256:a", [STAGE], at=1000.0)
    journal.record("sha256:a", [AMOUNT], at=1010.0)

    assert journal.blocking_apply("sha256:a", now=1010.0 + 3599.0) == 1010.0
    assert journal.blocking_apply("sha256:b", now=1100.0) is None


def test_a_verified_apply_does_not_block(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    journal.record("sha256:a", [STAGE], at=1000.0)

    journal.record_verified("sha256:a", at=1030.0)

    assert journal.blocking_apply("sha256:a", now=1040.0) is None


def test_an_apply_older_than_the_window_does_not_block(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl", clock=lambda: 1000.0 + 3600.0)
    journal.record("sha256:a", [STAGE], at=1000.0)

    assert PENDING_WINDOW_SECONDS == 3600.0
    assert journal.blocking_apply("sha256:a") is None
    assert journal.blocking_apply("sha256:a", now=1000.0 + 3599.5) == 1000.0


def test_an_apply_after_the_verification_blocks_again(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    journal.record("sha256:a", [STAGE], at=1000.0)
    journal.record_verified("sha256:a", at=1030.0)

    journal.record("sha256:a", [STAGE], at=2000.0)

    assert journal.blocking_apply("sha256:a", now=2100.0) == 2000.0


# --- one apply at a time ---------------------------------------------------


def test_a_second_lock_fails_while_another_apply_holds_it(tmp_path: Path) -> None:
    path = tmp_path / ".reconciler" / "journal.jsonl"
    held, release = threading.Event(), threading.Event()

    def other_apply() -> None:
        with Journal(path).locked():
            held.set()
            release.wait(5)

    thread = threading.Thread(target=other_apply)
    thread.start()
    try:
        assert held.wait(5)
        with pytest.raises(ReconcilerError) as caught, Journal(path).locked(0.1):
            pass
    finally:
        release.set()
        thread.join(5)

    assert str(caught.value) == (
        f"{path}: another apply is running with this journal;"
        " try again when it has finished"
    )
    assert Journal(path).lock_path == tmp_path / ".reconciler" / "journal.jsonl.lock"
    with Journal(path).locked():
        pass


def test_a_lock_waits_up_to_its_timeout(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    held = threading.Event()

    def short_apply() -> None:
        with Journal(path).locked():
            held.set()
            threading.Event().wait(0.2)

    thread = threading.Thread(target=short_apply)
    thread.start()
    assert held.wait(5)
    entered = []
    with Journal(path).locked(timeout=5.0):
        entered.append(True)
    thread.join(5)

    assert entered == [True]


def test_taking_the_lock_reads_what_another_process_wrote(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    mine = Journal(path)
    assert mine.blocking_apply("sha256:a", now=1010.0) is None

    Journal(path).record("sha256:a", [STAGE], at=1000.0)

    with mine.locked():
        assert mine.blocking_apply("sha256:a", now=1010.0) == 1000.0


def test_without_flock_the_block_runs_unlocked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "fcntl", None)
    path = tmp_path / "journal.jsonl"

    with Journal(path).locked(), Journal(path).locked():
        pass

    assert not Journal(path).lock_path.exists()


def test_damaged_bytes_spoil_only_their_line(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.record("sha256:x", [], at=10.0)
    with path.open("ab") as handle:
        handle.write(b"\xff\xfe not json\n")
    assert Journal(path).was_applied("sha256:x") == 10.0


def test_a_journal_that_is_a_folder_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.mkdir()
    with pytest.raises(ReconcilerError, match="cannot read the apply journal"):
        Journal(path).was_applied("sha256:x")


def test_values_seen_in_hubspot_are_no_longer_pending(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl", clock=lambda: 100.0)
    journal.record("sha256:a", [AMOUNT], at=100.0)
    assert journal.blocking_apply("sha256:a", now=150.0) == 100.0

    journal.record_seen([(AMOUNT.deal, AMOUNT.property, AMOUNT.after)], at=120.0)
    fresh = Journal(journal.path)
    assert fresh.pending(AMOUNT.deal, AMOUNT.property, AMOUNT.after) is None
    assert fresh.blocking_apply("sha256:a", now=150.0) is None
    lines_written = journal.path.read_text().splitlines()
    journal.record_seen([(AMOUNT.deal, AMOUNT.property, AMOUNT.after)], at=130.0)
    assert journal.path.read_text().splitlines() == lines_written  # nothing pending


def test_damaged_times_and_items_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_text(
        '{"fingerprint": "sha256:a", "at": 1e308, "changes": []}\n'
        '{"fingerprint": "sha256:b", "at": 5, "changes":'
        ' [{"deal": "abc", "property": [1], "after": {}}]}\n',
        encoding="utf-8",
    )
    journal = Journal(path)
    assert journal.was_applied("sha256:a") is None
    assert journal.was_applied("sha256:b") == 5
    assert journal.pending("abc", "x", "y") is None


def test_a_file_where_the_journal_folder_should_be(tmp_path: Path) -> None:
    (tmp_path / ".reconciler").write_text("not a folder")
    journal = Journal(tmp_path / ".reconciler" / "journal.jsonl")
    refused = pytest.raises(ReconcilerError, match=r"\.reconciler is not a folder")
    with refused, journal.locked():
        pass
