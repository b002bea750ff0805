"""The apply report: a batch's state and the counts follow from deal fates."""

from __future__ import annotations

import pytest

from reconciler.report import ApplyReport, BatchOutcome, DealFate, batch_state


@pytest.mark.parametrize(
    ("fates", "state"),
    [
        (["applied", "applied"], "applied"),
        (["applied", "rejected"], "partly applied"),
        (["applied", "failed"], "partly applied"),
        (["applied", "unanswered"], "partly applied"),
        (["applied", "refused: daily limit"], "partly applied"),
        (["rejected", "rejected with batch"], "rejected"),
        (["failed", "rejected with batch"], "failed"),
        (["unanswered", "rejected with batch"], "rejected"),
        (["unanswered", "unanswered"], "interrupted"),
        (["refused: daily limit", "rejected with batch"], "rejected"),
        (["refused: daily limit"], "refused: daily limit"),
        (["not attempted", "not attempted"], "not attempted"),
        ([], "not attempted"),
    ],
)
def test_batch_state_follows_from_the_fates_of_its_deals(
    fates: list[DealFate], state: str
) -> None:
    assert batch_state(fates) == state


def test_a_new_outcome_has_every_deal_not_attempted() -> None:
    outcome = BatchOutcome(2, ["7", "12"])

    assert outcome.fates == {"7": "not attempted", "12": "not attempted"}
    assert (outcome.state, outcome.applied, outcome.rejected) == (
        "not attempted",
        [],
        [],
    )


def test_outcome_lists_and_counts_come_from_the_fates() -> None:
    outcome = BatchOutcome(1, ["30003", "30001", "30002", "30010"], requests=4)
    outcome.settle(["30001", "30002", "30003", "30010"], "rejected with batch")
    outcome.settle(["30010", "30001"], "applied")
    outcome.settle(["30003"], "rejected")
    report = ApplyReport("sha256:x", batches=[outcome])

    data = report.to_dict()

    assert data["batches"][0] == {
        "index": 1,
        "state": "partly applied",
        "deals": ["30001", "30002", "30003", "30010"],
        "applied": ["30001", "30010"],
        "rejected": ["30003"],
        "not_applied": ["30002", "30003"],
        "unanswered": [],
        "requests": 4,
        "reason": None,
        "correlation_id": None,
    }
    counts = data["counts"]
    assert (counts["deals"], counts["deals_applied"], counts["deals_rejected"]) == (
        4,
        2,
        1,
    )
    assert counts["deals_rejected_with_batch"] == 1
    assert counts["batches_applied"] == 0
