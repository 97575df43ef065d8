"""The production path rehearsed at the demo's size (bench/rehearsal.py --size small): every role and
candidate on the `openai` backend against a local server that rate-limits, fails, times out, answers
malformed bodies, moderates and refuses. Here a run killed half-way, resumed to the end, then run again.
(bench/rehearsal.py also times an uninterrupted first run; the test leaves it out: the resumed run goes
through every step, and one run fewer is a minute of the suite.)"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

KILL_AFTER_ANSWERS = 200  # an uninterrupted small rehearsal gets ~500 answers


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_small_rehearsal_is_killed_resumes_to_the_end_and_repeats_without_calls(tmp_path, monkeypatch):
    from rehearsal import FAULTS, OpenAICompatibleServer, answer, describe, run_graph, small_profile

    # describe() points DAGSTER_HOME at this run's instance; setting it first makes monkeypatch restore it after
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with OpenAICompatibleServer(faults=FAULTS, answer=answer, timeout_sleep_s=2.5, retry_after_s=0.05) as server:
        profile = small_profile(server.base_url, tmp_path / "rehearsal_small.yaml")
        state = tmp_path / "state"
        killed = run_graph(profile, state, server, kill_after_answers=KILL_AFTER_ANSWERS)
        asked_before_kill = set(server.requests)
        counts_at_kill = dict(server.requests)
        resumed = describe(run_graph(profile, state, server), state, profile)
        asked_again = {p for p in asked_before_kill if server.requests[p] > counts_at_kill[p]}
        second = run_graph(profile, state, server)

    # A SIGKILL half-way loses at most the calls not yet flushed to the ledger and those in flight: of the
    # prompts asked before the kill, few are asked again (38 of 214 here; without the ledger, every prompt of
    # the steps that had not finished would be).
    assert killed.exit_code == -9 and killed.requests >= KILL_AFTER_ANSWERS
    assert resumed.exit_code == 0 and resumed.requests > 0
    assert len(asked_again) < len(asked_before_kill) / 2, (len(asked_again), len(asked_before_kill))
    statuses = {row["asset"]: row["statuses"] for row in resumed.assets}
    # Moderation (HTTP 400 data_inspection_failed / content_filter) and refusal answers are final answers.
    assert sum(s.get("refused", 0) for s in statuses.values()) > 0
    assert not any(s.get("error") for s in statuses.values()), statuses
    # Merged preference pairs are counted (PKU-SafeRLHF repeats prompts), not quarantined.
    assert any(merged > 0 for source, *_, merged in resumed.sources if source == "pku_saferlhf")
    rows = {row["asset"]: row["rows"] for row in resumed.assets}
    assert rows["sft_dataset"] > 0 and rows["eval_report"] > 0 and rows["finetuned_checkpoint"] == 1
    # Nothing is re-sent, refused rows included.
    assert (second.exit_code, second.requests) == (0, 0)
