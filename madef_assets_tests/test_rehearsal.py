"""The production path rehearsed at the demo's size (bench/rehearsal.py --size small): every role and
candidate on the `openai` backend against a local server that rate-limits, fails, times out, answers
malformed bodies, moderates and refuses; then a second run and a killed run resumed."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_small_rehearsal_runs_the_whole_graph_resumes_and_repeats_without_calls(tmp_path):
    from rehearsal import rehearse

    numbers = rehearse("small", tmp_path / "rehearsal")
    first, second, killed, resumed = (numbers[k] for k in ("first", "second", "killed", "resumed"))
    assert first.exit_code == 0
    assert first.requests > 100
    statuses = {row["asset"]: row["statuses"] for row in first.assets}
    # Moderation (HTTP 400 data_inspection_failed / content_filter) and refusal answers are final answers.
    assert sum(s.get("refused", 0) for s in statuses.values()) > 0
    assert not any(s.get("error") for s in statuses.values()), statuses
    # Merged preference pairs are counted (PKU-SafeRLHF repeats prompts), not quarantined.
    assert any(merged > 0 for source, *_, merged in first.sources if source == "pku_saferlhf")
    rows = {row["asset"]: row["rows"] for row in first.assets}
    assert rows["sft_dataset"] > 0 and rows["eval_report"] > 0 and rows["finetuned_checkpoint"] == 1
    # Nothing is re-sent, refused rows included.
    assert (second.exit_code, second.requests) == (0, 0)
    # A SIGKILL half-way loses at most the unflushed calls; the resumed run finishes what is missing.
    assert killed.exit_code == -9 and killed.requests > 0
    assert resumed.exit_code == 0
    assert 0 < resumed.requests < first.requests
