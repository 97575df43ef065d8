"""The labeler's constrained taxonomy choice for raw intent labels the taxonomy file does not map
(defs/intent/choice.py, taxonomy_choices, label_taxonomy's llm_choice status) and its agreement with people
(defs/qualification/taxonomy_choice.py)."""

import math
from pathlib import Path

import polars as pl
import pytest
import yaml
from dagster import build_asset_context

from madef_assets.defs.frames import PROMPT_SCHEMA
from madef_assets.defs.intent.assets import build_intent_assets
from madef_assets.defs.intent.choice import (
    CHOSEN,
    NONE,
    OPTIONS,
    UNPARSED,
    UNSURE,
    apply_taxonomy_choices,
    category_lines,
    choice_prompts,
    choose,
    option_confidence,
    parse_choice,
    with_outcomes,
)
from madef_assets.defs.intent.labels import normalize_label
from madef_assets.defs.intent.review import read_taxonomy_decisions
from madef_assets.defs.intent.taxonomy import CATEGORIES, Taxonomy
from madef_assets.defs.qualification.assets import build_qualification_assets
from madef_assets.defs.qualification.taxonomy_choice import choice_agreement, choice_gold
from madef_assets.llm.resource import LLMBatch, LLMResource, LLMResult, ParseError
from madef_assets.project import CONFIG_DIR
from madef_assets.review.decisions import TAXONOMY_QUEUE_FIELDS, append_decision, read_queue
from madef_assets.settings import load_settings, model_from_parts
from madef_assets.storage import run_sql
from madef_assets_tests.openai_server import OpenAICompatibleServer

# The taxonomy file's categories and reviewed labels without its rules (edited apart: which raw label a rule
# maps is no concern here).
RULELESS = {**yaml.safe_load((CONFIG_DIR / "taxonomy.yaml").read_text(encoding="utf-8")), "rules": []}


def ruleless_taxonomy(folder: Path) -> Path:
    path = folder / "taxonomy.yaml"
    path.write_text(yaml.safe_dump(RULELESS, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


TAXONOMY = Taxonomy(RULELESS["categories"], {normalize_label(k): v for k, v in RULELESS["labels"].items()}, (), {}, {})


# --- the prompt and the parser ---------------------------------------------------------------------------------


def test_the_prompt_lists_the_categories_from_the_taxonomy_file():
    zh, en = choice_prompts(["电信诈骗", "credit card fraud"], TAXONOMY)
    assert (
        "标签：电信诈骗" in zh
        and zh.endswith("类别：")
        and "CIA：违法犯罪（Crimes and Illegal Activities；例：犯罪" in zh
    )
    assert "Label: credit card fraud" in en and en.endswith("Category:")
    assert "PS: Political Remarks (e.g. 政治, 政府, 选举, 敏感人物, politics, election)" in en
    assert all(f"\n{code}" in en and f"\n{code}" in zh for code in OPTIONS)
    renamed = Taxonomy({**TAXONOMY.categories, "DT": {"name": "Hazards", "zh": "危险", "keywords": []}}, {}, (), {}, {})
    assert "DT: Hazards\n" in category_lines(renamed, "en")  # built from the file, not written in the template


@pytest.mark.parametrize(
    "answer, code",
    [
        ("CIA", "CIA"),
        ("cia", "CIA"),
        (" Category: PMH.", "PMH"),
        ("category：pp", "PP"),
        ("类别：DT。", "DT"),
        ("**OFF**", "OFF"),
        ("[NS]", "NS"),
        ("'EX'\nbecause it is about terrorism", "EX"),
        ("none", NONE),
        ("\n\n  PS  ", "PS"),
    ],
)
def test_the_parser_accepts_exactly_one_known_code(answer, code):
    assert parse_choice(answer) == code


@pytest.mark.parametrize(
    "answer",
    ["", "CIA, EM", "CIA or EM", "XYZ", "Crimes and Illegal Activities", "It is CIA", "C I A", "类别：违法犯罪"],
)
def test_the_parser_refuses_anything_else(answer):
    with pytest.raises(ParseError):
        parse_choice(answer)


# --- confidence and outcomes -----------------------------------------------------------------------------------


def test_confidence_is_the_chosen_options_probability_over_the_fifteen():
    scores = {option: -math.inf for option in OPTIONS} | {"CIA": math.log(0.6), "EM": math.log(0.2)}
    choice, confidence, mass = option_confidence(scores)
    assert choice == "CIA" and confidence == pytest.approx(0.75) and mass == pytest.approx(0.8)
    assert option_confidence({option: -math.inf for option in OPTIONS}) == (None, None, None)
    tied = option_confidence(dict.fromkeys(OPTIONS, -1.0))  # ties: the first option in OPTIONS order
    assert tied[0] == "OFF" and tied[1] == pytest.approx(1 / 15)


def choices_frame(rows: list[tuple]) -> pl.DataFrame:
    keys = ("key", "label", "choice", "confidence", "status")
    frame = pl.DataFrame([dict(zip(keys, row)) for row in rows], schema=dict.fromkeys(keys, pl.Utf8))
    return frame.with_columns(pl.col("confidence").cast(pl.Float64))


def test_outcomes_gate_on_the_threshold_and_never_discard_a_label():
    choices = choices_frame(
        [
            ("a", "a", "CIA", 0.95, "ok"),
            ("b", "b", "CIA", 0.9, "ok"),  # at the threshold: chosen
            ("c", "c", "EM", 0.5, "ok"),
            ("d", "d", "EM", None, "ok"),  # no confidence (an endpoint without scores): a person decides
            ("e", "e", NONE, 0.99, "ok"),  # NONE is never applied automatically
            ("f", "f", None, None, "parse_error"),
            ("g", "g", None, None, "refused"),
        ]
    )
    outcomes = with_outcomes(choices, 0.9)["outcome"].to_list()
    assert outcomes == [CHOSEN, CHOSEN, UNSURE, UNSURE, UNSURE, UNPARSED, UNPARSED]


# --- the assets against the local OpenAI-compatible server -----------------------------------------------------


ANSWERS = {"逃税": "CIA", "天气": "NONE", "xyz": "I am not sure what this is", "伦理道德观": "Category: EM"}


TEMPERATURES: list = []


def label_of(prompt: str) -> str:
    """The raw label a taxonomy_choice prompt asks about (its line before the answer cue)."""
    return prompt.rsplit("\n", 2)[-2].split("：", 1)[-1].split(": ", 1)[-1]


def answer(prompt: str, request: dict) -> str:
    TEMPERATURES.append(request.get("temperature"))
    return ANSWERS.get(label_of(prompt), "???")


def labeler(server: OpenAICompatibleServer, tmp_path: Path) -> LLMResource:
    return LLMResource(
        role="labeler",
        config=model_from_parts("openai", "m", {"base_url": server.base_url, "api_key_env": None}, {}),
        duckdb_path=str(tmp_path / "ledger.duckdb"),
        models_dir=str(tmp_path),
    )


class ScoringLabeler:
    """A local backend's view for `choose`: option log-probabilities, given per label (no model)."""

    backend = "transformers"
    model = "scores"

    def __init__(self, scores: dict[str, dict[str, float]]):
        self.scores = scores

    def option_logprobs(self, prompts, options, template_version, log=None) -> LLMBatch:
        assert tuple(options) == OPTIONS and template_version.startswith("taxonomy_choice@")
        results = []
        for prompt in prompts:
            label = label_of(prompt)
            scores = self.scores[label]
            results.append(
                LLMResult(label, None, "ok" if scores else "error", None if scores else "boom", False, scores)
            )
        return LLMBatch(results, backend_calls=len(prompts))


def intent_labels_frame(rows: list[list[str]]) -> pl.DataFrame:
    return pl.DataFrame(
        {"status": ["ok"] * len(rows), "labels": rows}, schema={"status": pl.Utf8, "labels": pl.List(pl.Utf8)}
    )


LABELS = intent_labels_frame([["违法犯罪", "逃税"], ["天气", "逃税"], ["xyz", "伦理道德观"]])


def settings_for(tmp_path: Path, scores: bool = False):
    """The demo's settings (its labeler answers once: taxonomy_choice_scores false) over the rule-less taxonomy."""
    settings = load_settings("demo", env={"MADEF_STATE_DIR": str(tmp_path / "state")})
    method = settings.method.model_copy(update={"taxonomy_choice_scores": scores})
    return settings.model_copy(update={"taxonomy": ruleless_taxonomy(tmp_path), "method": method})


def intent_assets(settings) -> dict:
    return {a.key.to_user_string(): a for a in build_intent_assets(settings)}


def test_choices_from_the_endpoint_are_parsed_unscored_and_left_to_people(tmp_path: Path):
    """An openai endpoint: one answer at temperature 0, parsed; no confidence, so nothing is applied."""
    settings = settings_for(tmp_path)
    with OpenAICompatibleServer(answer=answer) as server:
        TEMPERATURES.clear()
        with build_asset_context(resources={"labeler": labeler(server, tmp_path)}) as context:
            outputs = list(intent_assets(settings)["taxonomy_choices"](context, intent_labels=LABELS))
    table = outputs[0].value
    assert TEMPERATURES == [0.0] * 4
    rows = {r["label"]: r for r in table.iter_rows(named=True)}
    assert set(rows) == {"逃税", "天气", "xyz", "伦理道德观"}  # 违法犯罪 is the file's (accepted)
    assert [
        (rows[x]["choice"], rows[x]["status"], rows[x]["outcome"]) for x in ("逃税", "天气", "xyz", "伦理道德观")
    ] == [
        ("CIA", "ok", UNSURE),
        (NONE, "ok", UNSURE),
        (None, "parse_error", UNPARSED),
        ("EM", "ok", UNSURE),
    ]
    assert table["confidence"].is_null().all() and set(table["mode"]) == {"generate"}
    assert set(table["origin"]) == {"llm_choice"}
    metadata = {k: v.value for k, v in outputs[0].metadata.items()}
    assert (metadata["labels_in"], metadata["chosen_confidently"]) == (4, 0)
    assert (metadata["unsure_to_people"], metadata["unparsed_to_people"]) == (3, 1)
    assert len(outputs) == 1  # no blocking gate: an unparsed choice only leaves its label to a person


SCORES = {
    "逃税": {"CIA": math.log(0.9), "NS": math.log(0.05)},  # confident: 0.947
    "天气": {NONE: math.log(0.5), "DT": math.log(0.4)},
    "xyz": {},  # the call failed
    "伦理道德观": {"EM": math.log(0.4), "MI": math.log(0.35)},  # unsure
}


def test_confident_choices_are_applied_unsure_ones_queued_and_a_person_wins(tmp_path: Path):
    assert load_settings("demo", env={}).method.taxonomy_choice_scores is False  # the demo's CPU labeler
    settings = settings_for(tmp_path, scores=True)
    assets = intent_assets(settings)
    review_dir = settings.evaluation.review_dir
    append_decision(review_dir / "taxonomy_decisions.jsonl", "逃税", "NS", "ann")  # overrides llm_choice
    with build_asset_context(resources={"labeler": ScoringLabeler(SCORES)}) as context:
        outputs = list(assets["taxonomy_choices"](context, intent_labels=LABELS))
    choices = outputs[0].value
    outcome = dict(zip(choices["label"], choices["outcome"]))
    assert outcome == {"逃税": CHOSEN, "天气": UNSURE, "xyz": UNPARSED, "伦理道德观": UNSURE}
    assert dict(zip(choices["label"], choices["confidence"]))["逃税"] == pytest.approx(0.9 / 0.95)
    metadata = {k: v.value for k, v in outputs[0].metadata.items()}
    assert (
        metadata["labels_in"]
        == 4
        == sum(metadata[k] for k in ("chosen_confidently", "unsure_to_people", "unparsed_to_people"))
    )
    assert (metadata["chosen_confidently"], metadata["unsure_to_people"], metadata["unparsed_to_people"]) == (1, 2, 1)

    no_decisions = read_taxonomy_decisions(tmp_path / "none.jsonl")[0]
    sources = {f"src_{name}": pl.DataFrame(schema=PROMPT_SCHEMA) for name in settings.method.attack_sources}
    table = assets["label_taxonomy"](
        build_asset_context(),
        intent_labels=LABELS,
        taxonomy_choices=choices,
        taxonomy_decisions=no_decisions,
        **sources,
    )
    rows = {r["label"]: r for r in table.iter_rows(named=True)}
    assert (rows["逃税"]["status"], rows["逃税"]["category"]) == ("llm_choice", "CIA")
    assert (rows["违法犯罪"]["status"], rows["违法犯罪"]["choice"]) == ("accepted", None)  # the file's
    assert (rows["伦理道德观"]["status"], rows["伦理道德观"]["category"]) == ("proposed", "EM")
    assert rows["伦理道德观"]["similarity"] is None  # the proposal is the labeler's, not the nearest label's
    assert (rows["天气"]["choice"], rows["天气"]["category"]) == (NONE, None)  # NONE: no category proposed
    queue = read_queue(review_dir / "taxonomy_queue.jsonl", TAXONOMY_QUEUE_FIELDS)
    assert [i["review_key"] for i in queue] == ["xyz", "伦理道德观", "天气"]  # llm_choice is not in the queue
    unsure = queue[1]
    assert (unsure["proposed"], unsure["choice"], unsure["choice_confidence"]) == (
        "EM",
        "EM",
        pytest.approx(0.4 / 0.75),
    )

    decisions = assets["taxonomy_decisions"](build_asset_context())
    decided = assets["label_taxonomy"](
        build_asset_context(), intent_labels=LABELS, taxonomy_choices=choices, taxonomy_decisions=decisions, **sources
    )
    person = decided.filter(pl.col("label") == "逃税").row(0, named=True)
    assert (person["status"], person["category"]) == ("reviewed", "NS")  # a human decision wins

    # prompt_categories counts a confident choice like a reviewed label
    categories = run_sql(
        "intent/prompt_categories",
        prompts=pl.DataFrame(
            {
                "prompt_id": ["p"],
                "source": ["s"],
                "lang": ["zh"],
                "prompt": ["x"],
                "response": [None],
                "source_category": [None],
                "attack_method": [None],
                "meta": ["{}"],
            },
            schema=PROMPT_SCHEMA,
        ),
        intent_labels=pl.DataFrame(
            {"prompt_id": ["p"], "status": ["ok"], "label_keys": [["逃税"]]},
            schema={"prompt_id": pl.Utf8, "status": pl.Utf8, "label_keys": pl.List(pl.Utf8)},
        ),
        label_taxonomy=table,
    )
    assert categories.select("category", "category_origin").row(0) == ("CIA", "intent")


def test_a_choice_never_touches_what_the_file_maps():
    mapped = pl.DataFrame(
        {
            "kind": ["intent_label"],
            "key": ["违法犯罪"],
            "category": ["CIA"],
            "status": ["accepted"],
            "similarity": [None],
        },
    ).with_columns(similarity=pl.lit(None, pl.Float64))
    choices = with_outcomes(choices_frame([("违法犯罪", "违法犯罪", "PS", 0.99, "ok")]), 0.5)
    row = apply_taxonomy_choices(mapped, choices).row(0, named=True)
    assert (row["status"], row["category"], row["choice"]) == ("accepted", "CIA", "PS")


# --- agreement with people -------------------------------------------------------------------------------------


def test_agreement_on_a_hand_case():
    """4 of 5 right: accuracy 0.8, Wilson (0.3755, 0.9638); κ by hand: p_o = 0.8, gold CIA 2, EM 2, NONE 1;
    predicted CIA 2, EM 1, NONE 1, uncertain 1: p_e = (2·2 + 2·1 + 1·1)/25 = 0.28, κ = 0.52/0.72."""
    table = pl.DataFrame(
        {
            "gold_category": ["CIA", "CIA", "EM", "EM", NONE],
            "choice": ["CIA", "CIA", "EM", None, NONE],
            "outcome": [CHOSEN, UNSURE, CHOSEN, UNPARSED, UNSURE],
            "gold_origin": ["taxonomy_file", "taxonomy_file", "human_decision", "human_decision", "human_decision"],
        }
    )
    report = choice_agreement(table, n_resamples=100)
    assert (report["n"], report["correct"], report["accuracy"]) == (5, 4, 0.8)
    assert report["wilson_95"] == [pytest.approx(0.3755, abs=1e-4), pytest.approx(0.9638, abs=1e-4)]
    assert report["kappa"] == pytest.approx(0.52 / 0.72) and report["unparsed"] == 1
    assert (report["applied"]["n"], report["applied"]["accuracy"]) == (2, 1.0)
    assert report["by_origin"]["human_decision"]["accuracy"] == pytest.approx(2 / 3)
    assert choice_agreement(table.clear()) == {"n": 0}


def test_gold_is_the_reviewed_list_and_the_decisions(tmp_path: Path):
    path = tmp_path / "taxonomy_decisions.jsonl"
    append_decision(path, "伦理道德观", "EM", "ann")
    append_decision(path, "天气", "ignore", "ann")
    append_decision(path, "crime", "PS", "ann")  # the file's label: the file's category is the gold
    append_decision(path, "gone", "DT", "ann")  # not among the current labels: no text to ask about
    decisions, _ = read_taxonomy_decisions(path)
    choices = pl.DataFrame({"key": ["伦理道德观", "天气"], "label": ["伦理道德观", "天气"]})
    gold, skipped = choice_gold(TAXONOMY, decisions, choices)
    assert gold.height == len(TAXONOMY.labels) + 2 and skipped == ["gone"]
    assert gold.filter(pl.col("key") == "crime")["gold_category"].to_list() == ["CIA"]
    decided = gold.filter(pl.col("gold_origin") == "human_decision")
    assert dict(zip(decided["key"], decided["gold_category"])) == {"伦理道德观": "EM", "天气": NONE}


def test_the_qualification_asset_reports_n_accuracy_and_kappa(tmp_path: Path):
    """A labeler that answers every reviewed label with its category except those of EM (answered MI)."""
    wrong = {k for k, v in TAXONOMY.labels.items() if v == "EM"}

    def gold_answer(prompt: str, request: dict) -> str:
        label = label_of(prompt)
        return "MI" if label in wrong else TAXONOMY.labels.get(label, "garbage")

    settings = settings_for(tmp_path)
    [asset] = [
        a for a in build_qualification_assets(settings) if a.key.to_user_string() == "taxonomy_choice_qualification"
    ]
    no_choices = pl.DataFrame(schema={"key": pl.Utf8, "label": pl.Utf8})
    no_decisions = read_taxonomy_decisions(tmp_path / "none.jsonl")[0]
    with OpenAICompatibleServer(answer=gold_answer) as server:
        with build_asset_context(resources={"labeler": labeler(server, tmp_path)}) as context:
            table = asset(context, taxonomy_choices=no_choices, taxonomy_decisions=no_decisions)
            agreement = context.get_output_metadata("result")["agreement"]
    n = len(TAXONOMY.labels)
    assert table.height == n and agreement["n"] == n and agreement["correct"] == n - len(wrong)
    assert agreement["applied"]["n"] == 0  # an endpoint's choices carry no confidence
    assert 0 < agreement["kappa"] < 1 and agreement["wilson_95"][0] < agreement["accuracy"] < agreement["wilson_95"][1]
    assert set(CATEGORIES) >= set(table["gold_category"])


# --- a local backend for real ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_bundled_model_scores_the_fifteen_options(tmp_path: Path, models_dir: Path):
    resource = LLMResource(
        role="labeler",
        config=model_from_parts("transformers", "bundled:gemma3-270m", {"batch_size": 8}, {}),
        duckdb_path=str(tmp_path / "ledger.duckdb"),
        models_dir=str(models_dir),
    )
    rows = pl.DataFrame({"key": ["逃税"], "label": ["逃税"]})  # one label: 15 long prompts on CPU
    table, batch = choose(resource, rows, TAXONOMY)
    assert table["status"].to_list() == ["ok"] and set(table["mode"]) == {"option_scores"}
    assert set(table["choice"]) <= set(OPTIONS)
    assert all(1 / 15 <= c <= 1 for c in table["confidence"]) and all(0 < m <= 1 for m in table["option_mass"])
    again, second = choose(resource, rows, TAXONOMY)
    assert second.backend_calls == 0 and again["confidence"].to_list() == table["confidence"].to_list()
