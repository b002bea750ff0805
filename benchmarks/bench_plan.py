"""Timings for loading, validating and planning, printed with their ratios.

Run from the repository root: ``python benchmarks/bench_plan.py``. Inputs are
generated into a temporary folder, plus the 8,800 real deals in
``../shared/data/crm-opportunities`` when that folder is present.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from reconciler.desired import load_desired
from reconciler.diff import diff_values
from reconciler.plan import build_plan, render_plan_file
from reconciler.properties import Definitions, load_definitions, load_pipelines
from reconciler.snapshot import Snapshot, load_snapshot
from reconciler.validate import validate_state

ROOT = Path(__file__).resolve().parent.parent
OPPORTUNITIES = ROOT.parent / "shared" / "data" / "crm-opportunities"
T = TypeVar("T")


def timed(label: str, work: Callable[[], T], repeat: int = 3) -> tuple[float, T]:
    """Best of ``repeat`` wall-clock runs, printed in milliseconds."""
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - started)
    print(f"  {label:<52} {best * 1000:10.1f} ms")
    return best, result  # type: ignore[return-value]


def write_desired(path: Path, count: int) -> None:
    stages = ("qualifiedtobuy", "contractsent", "closedwon")
    with path.open("w") as out:
        out.write("version: 1\ndeals:\n")
        for n in range(count):
            out.write(
                f'  "{15000000000 + n}":\n'
                f"    dealname: Deal number {n}\n"
                f"    amount: {1000 + n}.50\n"
                f"    dealstage: {stages[n % 3]}\n"
                f"    closedate: 2027-0{1 + n % 9}-15\n"
            )


def synthetic_snapshot(count: int, changed_every: int) -> Snapshot:
    stages = ("qualifiedtobuy", "contractsent", "closedwon")
    deals: dict[str, dict[str, str | None]] = {}
    for n in range(count):
        amount = f"{1000 + n}.5" if n % changed_every else f"{n}"
        deals[str(15000000000 + n)] = {
            "dealname": f"Deal number {n}",
            "amount": amount,
            "dealstage": stages[n % 3],
            "pipeline": "default",
            "closedate": f"2027-0{1 + n % 9}-15T00:00:00.000Z",
        }
    return Snapshot(deals=deals)


def bench_loading(folder: Path, count: int) -> None:
    path = folder / "deals.yaml"
    write_desired(path, count)
    size = path.stat().st_size / 1e6
    print(f"\nLoading {count:,} deals ({size:.1f} MB of YAML)")
    events, _ = timed(
        "event stream with positions (reconciler)", lambda: load_desired([path])
    )
    loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    built, _ = timed(
        "yaml.load with CSafeLoader (no positions)",
        lambda: yaml.load(path.read_text(), Loader=loader),
        repeat=1,
    )
    print(f"  ratio safe_load / reconciler: {built / events:.1f}x")
    gc.disable()
    try:
        paused, _ = timed(
            "yaml.load with CSafeLoader, cycle collector paused",
            lambda: yaml.load(path.read_text(), Loader=loader),
            repeat=1,
        )
    finally:
        gc.enable()
    print(f"  ratio with the collector paused for both: {paused / events:.1f}x")
    tracemalloc.start()
    load_desired([path])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"  peak memory while loading: {peak / 1e6:.0f} MB")


def bench_plan(folder: Path, count: int, changed_every: int) -> None:
    path = folder / "deals.yaml"
    write_desired(path, count)
    snapshot = synthetic_snapshot(count, changed_every)
    definitions = Definitions(load_definitions(None), load_pipelines(None))
    print(f"\nPlanning {count:,} deals, every {changed_every}th changed")
    load_time, state = timed("load", lambda: load_desired([path]), repeat=1)
    check_time, values = timed(
        "validate (schema, definitions, stages)",
        lambda: validate_state(state, definitions, snapshot),
        repeat=1,
    )
    diff_time, diff = timed("diff", lambda: diff_values(state, values, snapshot))
    plan_time, plan = timed("build plan and render plan.json", lambda: _plan(diff))
    total = load_time + check_time + diff_time + plan_time
    print(
        f"  total {total:.2f} s for {len(plan.changes):,} changes in"
        f" {len(plan.batches)} batches ({count / total:,.0f} deals/s)"
    )


def _plan(diff: Any) -> Any:
    plan = build_plan(diff.changes, unchanged=diff.unchanged_deals)
    render_plan_file(plan)
    return plan


def bench_real(folder: Path) -> None:
    if not OPPORTUNITIES.exists():
        print("\n(real data not found; skipped)")
        return
    print("\nReal data: 8,800 deals from crm-opportunities (88 v3 list pages)")
    read_time, snapshot = timed(
        "load snapshot folder", lambda: load_snapshot([OPPORTUNITIES / "v3_deals_list"])
    )
    ids = sorted(snapshot.deals, key=int)
    path = folder / "real.yaml"
    lines = ["deals:"]
    for n, deal in enumerate(ids):
        amount = int(snapshot.deals[deal]["amount"] or 0)
        lines.append(f'  "{deal}":\n    amount: {amount + (1 if n % 25 == 0 else 0)}')
    path.write_text("\n".join(lines) + "\n")
    definitions = Definitions(
        load_definitions(OPPORTUNITIES / "properties.json"),
        load_pipelines(OPPORTUNITIES / "pipelines.json"),
    )

    def plan_all() -> Any:
        state = load_desired([path])
        values = validate_state(state, definitions, snapshot)
        diff = diff_values(state, values, snapshot)
        return build_plan(diff.changes, unchanged=diff.unchanged_deals)

    plan_time, plan = timed("load, validate, diff and plan all 8,800", plan_all)
    print(
        f"  {len(plan.changes)} changes in {len(plan.batches)} batches;"
        f" snapshot + plan {read_time + plan_time:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deals", type=int, default=100_000)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        bench_loading(Path(folder), options.deals)
        bench_plan(Path(folder), options.deals // 2, changed_every=10)
        bench_real(Path(folder))


if __name__ == "__main__":
    main()
