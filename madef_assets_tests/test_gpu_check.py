"""The GPU check's CPU-safe parts (bench/gpu_check.sh, bench/gpu_check.py): its steps run here on the
transformers backend at toy sizes and write their rows; on a GPU machine the same steps run vLLM."""

import json
import os
import subprocess
import sys

import pytest

from madef_assets.project import PROJECT_ROOT

BENCH = PROJECT_ROOT / "bench"


def test_the_shell_script_parses():
    assert subprocess.run(["bash", "-n", str(BENCH / "gpu_check.sh")]).returncode == 0


@pytest.mark.slow
def test_steps_write_one_row_each_and_a_table(models_dir, tmp_path):
    results = tmp_path / "results.jsonl"
    env = {
        **os.environ,
        "MADEF_STATE_DIR": str(tmp_path),
        "MADEF_MODELS_DIR": str(models_dir),
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    toy = ["--prompts", "2", "--max-new-tokens", "4", "--repeats", "1", "--baseline-repeats", "1"]
    for step in (
        ["machine"],
        ["model"],
        ["release", "--backend", "transformers", *toy],
        ["throughput", "--backends", "transformers", *toy],
    ):
        done = subprocess.run(
            [sys.executable, str(BENCH / "gpu_check.py"), *step, "--results", str(results)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    rows = {row["step"]: row for row in map(json.loads, results.read_text().splitlines())}
    assert all(row["status"] == "ok" for row in rows.values()), rows
    assert [s for s in rows if s.startswith("candidate")] == [
        "candidate first (transformers, attention -), 2 prompts × 3 capabilities",
        "candidate second (transformers, attention -), 2 prompts × 3 capabilities",
    ]
    assert "0 failed rows" in rows["candidate second (transformers, attention -), 2 prompts × 3 capabilities"]["detail"]
    assert rows["generate throughput, transformers"]["tokens_per_s"] > 0
    table = subprocess.run(
        [sys.executable, str(BENCH / "gpu_check.py"), "table", "--results", str(results)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert table.startswith("| step | status | detail |") and len(table.strip().splitlines()) == 2 + len(rows)
