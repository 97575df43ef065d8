"""HumanEval's stored predictions re-run under both sandbox isolations: pass@1 per candidate as stored,
under `rlimits` and under `bubblewrap`, the items whose outcome differs, and the wall time of each mode
(bubblewrap / rlimits is the isolation's cost), then the run cgroup's own cost: creating it, placing a
process in it, reading its usage and removing it, around `/bin/true`, next to Python's start-up. Programs
run one at a time; `--repeats` runs of the whole set, medians.

    .venv/bin/python bench/sandbox_compare.py --duckdb state/madef.duckdb
        [--humaneval data/general_eval/humaneval/HumanEval_sample.jsonl.gz] [--repeats 3]

With no DuckDB file (or no HumanEval predictions in it) it runs the canonical solutions of the HumanEval
file and, as a second "candidate", each with its first body line removed.
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import duckdb

from madef_assets.defs.evaluation.general import humaneval_entry_point, humaneval_program
from madef_assets.defs.evaluation.sandbox import RunCgroup, cgroup_layout, isolation_problem, run_in_sandbox
from madef_assets.defs.sources.benchmark_files import load_humaneval
from madef_assets.project import PROJECT_ROOT


def stored_predictions(path: Path | None) -> list[tuple[str, str, str, bool | None]]:
    """(candidate, task_id, completion, stored correct) rows of a madef DuckDB file."""
    if path is None or not path.exists():
        return []
    with duckdb.connect(str(path), read_only=True) as connection:
        return connection.execute(
            "SELECT candidate, item_id, prediction, correct FROM public.general_capability_predictions "
            "WHERE benchmark = 'humaneval' ORDER BY candidate, item_id"
        ).fetchall()


def synthetic_predictions(items) -> list[tuple[str, str, str, bool | None]]:
    rows = [("canonical", item.task_id, item.canonical_solution, None) for item in items]
    broken = ["\n".join(item.canonical_solution.splitlines()[1:]) or "    pass\n" for item in items]
    return rows + [("broken", item.task_id, body, None) for item, body in zip(items, broken)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duckdb", type=Path, default=None)
    parser.add_argument(
        "--humaneval", type=Path, default=PROJECT_ROOT / "data/general_eval/humaneval/HumanEval_sample.jsonl.gz"
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    problem = isolation_problem("bubblewrap")
    if problem:
        raise SystemExit(problem)
    items = {item.task_id: item for item in load_humaneval(args.humaneval)}
    rows = stored_predictions(args.duckdb) or synthetic_predictions(list(items.values()))
    programs = [humaneval_program(items[task_id], completion or "") for _, task_id, completion, _ in rows]
    entry_points = [humaneval_entry_point(items[task_id]) for _, task_id, _, _ in rows]
    outcomes, seconds = {}, {}
    for isolation in ("rlimits", "bubblewrap"):
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            outcomes[isolation] = [
                run_in_sandbox(p, 10, 1024, isolation, entry_point=e).passed for p, e in zip(programs, entry_points)
            ]
            times.append(time.perf_counter() - started)
        seconds[isolation] = statistics.median(times)
    print(f"{len(programs)} programs, one at a time, median of {args.repeats}\n")
    print("| candidate | items | pass@1 stored | pass@1 rlimits | pass@1 bubblewrap | outcomes differing |")
    print("|---|---|---|---|---|---|")
    for candidate in sorted({row[0] for row in rows}):
        index = [i for i, row in enumerate(rows) if row[0] == candidate]
        stored = [rows[i][3] for i in index]
        cells = [
            candidate,
            len(index),
            "n/a" if None in stored else f"{sum(stored) / len(index):.3f}",
            f"{sum(outcomes['rlimits'][i] for i in index) / len(index):.3f}",
            f"{sum(outcomes['bubblewrap'][i] for i in index) / len(index):.3f}",
            sum(outcomes["rlimits"][i] != outcomes["bubblewrap"][i] for i in index),
        ]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    ratio = seconds["bubblewrap"] / seconds["rlimits"]
    print(
        f"\nwall time: rlimits {seconds['rlimits']:.2f} s, bubblewrap {seconds['bubblewrap']:.2f} s "
        f"({1000 * seconds['bubblewrap'] / len(programs):.0f} ms per program), bubblewrap / rlimits {ratio:.2f}"
    )

    cgroup_ms, plain_ms, python_ms = cgroup_cost(200)
    print(
        f"cgroup per program: {cgroup_ms - plain_ms:.2f} ms (create + place + usage + remove around /bin/true: "
        f"{cgroup_ms:.2f} ms, /bin/true alone {plain_ms:.2f} ms); Python start-up (`python -I -c pass`) "
        f"{python_ms:.1f} ms"
    )


def cgroup_cost(runs: int) -> tuple[float, float, float]:
    """Median milliseconds of /bin/true in a fresh run cgroup (created, joined, read, removed), of /bin/true
    alone, and of `python -I -c pass`."""
    layout = cgroup_layout()
    if isinstance(layout, str):
        raise SystemExit(layout)

    def in_cgroup() -> None:
        cgroup = RunCgroup.create(layout, 256 * 1024 * 1024)
        try:
            process = subprocess.Popen(["/bin/sh", "-c", 'read -r _ && exec "$@"', "sh", "/bin/true"], stdin=-1)
            cgroup.add(process.pid)
            process.communicate(b"go\n")
            cgroup.usage()
        finally:
            cgroup.remove()

    def timed(action) -> float:
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            action()
            times.append(1000 * (time.perf_counter() - started))
        return statistics.median(times)

    plain = timed(
        lambda: subprocess.Popen(["/bin/sh", "-c", 'read -r _ && exec "$@"', "sh", "/bin/true"], stdin=-1).communicate(
            b"go\n"
        )
    )
    python = timed(lambda: subprocess.run([sys.executable, "-I", "-c", "pass"], check=True))
    return timed(in_cgroup), plain, python


if __name__ == "__main__":
    main()
