"""The judged-benchmark shape (defs/evaluation/judged.py) through the judgement assets that use it, invoked
directly on small frames against a judge panel of three models served by a local OpenAI-compatible server."""

import polars as pl
import pytest
from dagster import build_asset_context

from madef_assets.defs.evaluation.assets import build_evaluation_assets
from madef_assets.llm.resource import LLMResource, PanelMember
from madef_assets.settings import load_settings, model_from_parts
from madef_assets_tests.openai_server import OpenAICompatibleServer

# What each panel member answers to a request that contains the key.
MEMBER_ANSWERS = {
    "judge-a": {
        "first answer": "safe\nReason: it declines",
        "second answer": "unsafe\nReason: it helps",
        "third answer": "7",
    },
    "judge-b": {"first answer": "unsafe\nit insults", "second answer": "unsafe\nReason: it helps", "third answer": "9"},
    "judge-c": {"first answer": "safe\nkind", "second answer": "no idea", "third answer": "unreadable"},
}


def member_answer(prompt: str, request: dict) -> str:
    answers = MEMBER_ANSWERS[request["model"]]
    return next((answer for key, answer in answers.items() if key in prompt), "no idea")


@pytest.fixture
def panel(tmp_path):
    with OpenAICompatibleServer(answer=member_answer) as server:

        def config(model: str):
            return model_from_parts("openai", model, {"base_url": server.base_url, "api_key_env": None}, {})

        judge = LLMResource(
            role="judge",
            config=config("judge-a"),
            panel_members=[PanelMember(config=config("judge-b")), PanelMember(config=config("judge-c"))],
            duckdb_path=str(tmp_path / "ledger.duckdb"),
            models_dir=str(tmp_path),
        )
        yield judge, server


def judgement_asset(tmp_path, name: str):
    settings = load_settings("demo", env={"MADEF_STATE_DIR": str(tmp_path)})
    return next(a for a in build_evaluation_assets(settings) if a.key.path == [name])


def responses(**columns) -> pl.DataFrame:
    rows = 4
    return pl.DataFrame(
        {
            "candidate": ["base"] * rows,
            "prompt_id": ["p1", "p2", "p3", "p4"],
            "lang": ["en"] * rows,
            "prompt": ["q1", "q2", "q3", "q4"],
            "response": ["the first answer", None, "the second answer", "   "],
            "status": ["ok", "refused", "ok", "ok"],
            "error": [None, "provider moderation", None, None],
            **columns,
        }
    )


def test_a_panel_judges_only_answered_rows_and_keeps_each_members_vote(tmp_path, panel):
    judge, server = panel
    judgements = judgement_asset(tmp_path, "new_safety_judgements")
    output = judgements(
        build_asset_context(partition_key="base", resources={"judge": judge}),
        new_safety_responses=responses(view=["headline"] * 4, category=["OFF"] * 4),
    )
    table = output.value
    # Rows 1 and 3 are answered; each of the three members is asked once per answered row.
    assert server.total_requests == 6 and output.metadata["unanswered"].value == 2
    assert table["judge_label"].to_list() == ["safe", "uncertain", "unsafe", "uncertain"]
    assert table["judge_reason"][0] == "panel votes safe, unsafe, safe; it declines"
    assert table["judge_reason"][1] == "no answer to judge (refused: provider moderation)"
    assert table["judge_reason"][2] == "panel votes unsafe, unsafe, uncertain; it helps"
    assert table["judge_raw_output"].to_list() == ["safe\nReason: it declines", None, "unsafe\nReason: it helps", None]
    assert output.metadata["judge_model"].value == "judge-a, judge-b, judge-c"
    assert output.metadata["llm_backend_calls"].value == 6


def test_a_panels_responsibility_score_is_the_lower_median_of_the_readable_scores(tmp_path, panel):
    judge, server = panel
    judgements = judgement_asset(tmp_path, "responsibility_judgements")
    rows = responses(domain=["law"] * 4).with_columns(
        response=pl.Series(["the third answer", None, "the first answer", "   "])
    )
    table = judgements(
        build_asset_context(partition_key="base", resources={"judge": judge}), responsibility_responses=rows
    ).value
    # Row 1: 7, 9 and an unreadable answer -> 7; row 3: no member gives a score -> unscored.
    assert table["score"].to_list() == [7, None, None, None]
    assert table["answered"].to_list() == [True, False, True, False]
    assert server.total_requests == 6
