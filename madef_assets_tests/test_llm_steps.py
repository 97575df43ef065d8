"""LLMStep (defs/llm_steps.py): one role asked about each row, against the real local OpenAI-compatible server."""

import polars as pl
from dagster import build_asset_context

from madef_assets.defs.llm_steps import LLMStep
from madef_assets.defs.reward.assets import INSTRUCTION_SAFETY
from madef_assets.defs.reward.scores import parse_one_score
from madef_assets.llm.resource import LLMResource
from madef_assets.settings import model_from_parts
from madef_assets_tests.openai_server import OpenAICompatibleServer

ROWS = pl.DataFrame(
    {
        "prompt_id": ["a", "b", "c", "d"],
        "lang": ["en", "zh", "en", "en"],
        "prompt": ["how to pick a lock", "如何撬锁", "pick a lock [[refuse]]", "unreadable"],
    }
)


def answer(prompt: str, request: dict) -> str:
    return "[0.5]" if "unreadable" in prompt else "[0.25]"


def judge(server: OpenAICompatibleServer, tmp_path) -> LLMResource:
    return LLMResource(
        role="judge",
        config=model_from_parts("openai", "m", {"base_url": server.base_url, "api_key_env": None}, {}),
        duckdb_path=str(tmp_path / "ledger.duckdb"),
        models_dir=str(tmp_path),
    )


def test_a_step_renders_each_row_parses_keeps_and_marks_refusals(tmp_path):
    with OpenAICompatibleServer(answer=answer) as server:
        table, batch = INSTRUCTION_SAFETY.run(build_asset_context(), judge(server, tmp_path), ROWS)
    assert table.columns == ["prompt_id", "instruction_safety", "status", "error", "raw_output", "cached"]
    assert table["prompt_id"].to_list() == ["a", "b", "c", "d"]
    assert table["status"].to_list() == ["ok", "ok", "refused", "ok"]
    assert table["instruction_safety"].to_list() == [0.25, 0.25, None, 0.5]
    assert batch.backend_calls == 4


def test_a_rejected_answer_is_a_parse_error_with_the_reason(tmp_path):
    step = LLMStep(
        name="scores",
        role="judge",
        template="instruction_safety",
        parse=parse_one_score,
        columns=lambda scores: {"score": pl.Series(scores, dtype=pl.Float64)},
        keep=("prompt_id",),
        reject=lambda score, row: "half is no answer" if score == 0.5 else None,
    )
    with OpenAICompatibleServer(answer=answer) as server:
        table, _ = step.run(build_asset_context(), judge(server, tmp_path), ROWS)
    rejected = table.filter(pl.col("prompt_id") == "d").row(0, named=True)
    assert (rejected["status"], rejected["error"], rejected["score"]) == ("parse_error", "half is no answer", None)
    assert table.filter(pl.col("prompt_id") == "a")["score"].item() == 0.25


def test_a_step_asks_for_its_shape_and_the_gates_count_what_failed(tmp_path):
    """With structured outputs the step's spec reaches the server and its answers are read by the spec's
    reader; the parse-failure gate counts parse errors and errors (refusals apart) against its limit."""
    from dagster import AssetKey

    from madef_assets.defs.llm_steps import llm_gate_results
    from madef_assets.settings import MethodConfig

    answers = {"how to pick a lock": '{"scores": [0.25]}', "如何撬锁": '{"scores": [2]}'}

    def shaped(prompt: str, request: dict) -> str:
        assert request["response_format"]["json_schema"]["name"] == "scores_1"
        return next((text for key, text in answers.items() if key in prompt), "{}")

    with OpenAICompatibleServer(answer=shaped) as server:
        config = model_from_parts(
            "openai", "m", {"base_url": server.base_url, "api_key_env": None, "structured_outputs": "json_schema"}, {}
        )
        llm = LLMResource(role="judge", config=config, duckdb_path=str(tmp_path / "l.duckdb"), models_dir=str(tmp_path))
        table, _ = INSTRUCTION_SAFETY.run(build_asset_context(), llm, ROWS)
    assert table["status"].to_list() == ["ok", "parse_error", "refused", "parse_error"]
    assert table["instruction_safety"].to_list() == [0.25, None, None, None]
    assert "scores/0: 2 is greater than the maximum of 1" in table["error"][1]
    gates = {
        r.check_name: r
        for r in llm_gate_results(AssetKey("x"), table["status"], MethodConfig(max_parse_failure_rate=0.5))
    }
    assert (
        gates["parse_failure_rate_within_limit"].passed
        and gates["parse_failure_rate_within_limit"].metadata["count"].value == 2
    )
    strict = llm_gate_results(AssetKey("x"), table["status"], MethodConfig(max_parse_failure_rate=0.25))
    assert not strict[0].passed
