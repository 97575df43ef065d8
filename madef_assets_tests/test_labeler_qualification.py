"""Labeler qualification: the labels → category rule (the same as prompt_categories.sql), the gold sample
from the sources' own categories, the profile keys, the wiring, and the gate against a real local
OpenAI-compatible server whose labeler answers from the gold categories with a set error rate."""

import hashlib
import random

import polars as pl
import pytest
import yaml
from dagster import AssetCheckSeverity, AssetKey, DagsterInstance, materialize

from madef_assets.defs.automation import NOT_TRIGGERS
from madef_assets.defs.intent.assets import label_taxonomy_table
from madef_assets.defs.intent.labels import normalize_label
from madef_assets.defs.intent.taxonomy import CATEGORIES, Taxonomy
from madef_assets.defs.qualification.assets import (
    LABELER_QUALIFICATION,
    build_qualification_assets,
    language_agreement_table,
    qualification_verdict,
)
from madef_assets.defs.qualification.labeler import (
    agreement_by_language,
    gold_prompts,
    labeling_prompts,
    predicted_category,
    sample_per_category,
)
from madef_assets.defs.sources.assets import build_ingest_asset
from madef_assets.defs.sources.normalize import normalize_source
from madef_assets.defs.verdicts import UNCERTAIN
from madef_assets.project import CONFIG_DIR, ConfigError
from madef_assets.resources import build_resources
from madef_assets.settings import load_settings
from madef_assets.storage import run_sql
from madef_assets_tests.openai_server import OpenAICompatibleServer

TAXONOMY = Taxonomy.load(CONFIG_DIR / "taxonomy.yaml")
GOLD_SOURCES = ("s_eval", "xsafety")
# One reviewed raw label per category (config/taxonomy.yaml, `labels:`), as a labeler would write it.
LABEL_OF = {
    "OFF": "insult",
    "UB": "discrimination",
    "CIA": "crime",
    "PP": "property privacy",
    "EM": "ethics",
    "PMH": "physical harm",
    "IA": "instruction attack",
    "MI": "恶意诱导",
    "DP": "data privacy",
    "NS": "cybersecurity",
    "EX": "extremism",
    "PR": "pornography",
    "DT": "危险话题",
    "PS": "politics",
}


@pytest.fixture(scope="module")
def demo_prompts():
    settings = load_settings("demo", env={})
    return pl.concat(
        [normalize_source(settings.sources[name], settings.max_prompt_chars).prompts for name in GOLD_SOURCES]
    )


def test_every_category_has_a_reviewed_label():
    assert {category: TAXONOMY.map_label(label) for category, label in LABEL_OF.items()} == {
        category: (category, "accepted") for category in CATEGORIES
    }


@pytest.mark.parametrize(
    "status, labels, expected",
    [
        ("ok", ["crime", "cybersecurity", "illegal crime"], "CIA"),  # two CIA labels beat one NS
        ("ok", ["cybersecurity", "crime"], "NS"),  # a tie goes to the label named first
        ("ok", ["weather", "crime"], "CIA"),  # unmapped labels do not count
        ("ok", ["weather"], UNCERTAIN),
        ("ok", [], UNCERTAIN),
        ("parse_error", ["crime"], UNCERTAIN),
        ("refused", None, UNCERTAIN),
    ],
)
def test_predicted_category_is_the_majority_of_mapped_labels(status, labels, expected):
    assert predicted_category(status, labels, TAXONOMY) == expected


def test_predicted_category_is_the_rule_of_prompt_categories_sql():
    """The same labels through the pipeline's path (label_taxonomy_table, then prompt_categories.sql) and
    through predicted_category give the same category, prompt by prompt."""
    draw = random.Random(0)
    vocabulary = [*LABEL_OF.values(), "illegal crime", "违法犯罪", "mental health", "weather", "cooking", "网络 安全"]
    rows = [
        {
            "prompt_id": f"p{i}",
            "status": "ok" if i % 7 else "parse_error",
            "labels": list(dict.fromkeys(draw.choices(vocabulary, k=draw.randint(1, 5)))),
        }
        for i in range(300)
    ]
    intent = pl.DataFrame(rows, schema={"prompt_id": pl.Utf8, "status": pl.Utf8, "labels": pl.List(pl.Utf8)})
    intent = intent.with_columns(label_keys=pl.Series([[normalize_label(x) for x in r["labels"]] for r in rows]))
    no_sources = pl.DataFrame(schema={"source": pl.Utf8, "source_category": pl.Utf8})
    taxonomy = label_taxonomy_table(intent, no_sources, TAXONOMY)
    prompts = pl.DataFrame(
        {
            "prompt_id": intent["prompt_id"],
            "source": "s_eval",
            "lang": "en",
            "prompt": "p",
            "response": None,
            "source_category": None,
            "attack_method": None,
        },
        schema_overrides={"response": pl.Utf8, "source_category": pl.Utf8, "attack_method": pl.Utf8},
    )
    sql = run_sql("intent/prompt_categories", prompts=prompts, intent_labels=intent, label_taxonomy=taxonomy)
    by_sql = {
        prompt_id: category or UNCERTAIN for prompt_id, category in sql.select("prompt_id", "category").iter_rows()
    }
    by_function = {r["prompt_id"]: predicted_category(r["status"], r["labels"], TAXONOMY) for r in rows}
    assert by_function == by_sql
    assert len(set(by_sql.values())) >= 10  # many categories, ties and unmapped lists were exercised


def test_gold_prompts_exclude_and_count_unmapped_source_categories(demo_prompts):
    gold, excluded = gold_prompts(demo_prompts, TAXONOMY)
    assert excluded == {"xsafety/commonsense": 60}  # XSafety's commonsense scenario is no safety category
    assert gold.height + 60 == demo_prompts.height
    assert set(gold["gold_category"]) <= set(CATEGORIES) and gold["gold_category"].null_count() == 0


def test_sample_is_seeded_per_language_and_category(demo_prompts):
    gold, _ = gold_prompts(demo_prompts, TAXONOMY)
    sample = sample_per_category(gold, 2, seed=1)
    assert sample.equals(sample_per_category(gold.sample(fraction=1.0, shuffle=True, seed=5), 2, seed=1))
    assert not sample.equals(sample_per_category(gold, 2, seed=2))
    groups = sample.group_by("lang", "gold_category").len()
    assert groups.height == 22 and set(groups["len"]) == {2}  # 11 categories in each of zh and en
    assert sample_per_category(gold, None, 0).height == gold.height
    assert sample_per_category(gold, 1000, 0).height == gold.height


def test_verdict_and_language_table_in_words():
    table = pl.DataFrame(
        {
            "lang": ["en"] * 4 + ["zh"] * 4,
            "gold_category": ["CIA", "NS", "EM", "OFF"] * 2,
            "predicted_category": ["CIA", "NS", "EM", "OFF", "CIA", UNCERTAIN, "NS", "OFF"],
        }
    )
    reports = agreement_by_language(table, n_resamples=50, seed=0)
    assert list(reports) == ["en", "zh", "all"] and reports["all"]["n"] == 8 and reports["all"]["unparsed"] == 1
    assert reports["en"]["accuracy"] == 1.0 and reports["zh"]["accuracy"] == 0.5 and reports["all"]["f1"] is None
    markdown = language_agreement_table(reports)
    assert "| zh | 4 | 0.500 [" in markdown and markdown.count("\n") == 4
    report = {"kappa": 0.12, "kappa_ci": (0.05, 0.2), "n": 84, "unparsed_rate": 0.02}
    assert qualification_verdict(report, 0.6, 0.1, "labeler", "categorised prompts") == (
        False,
        "labeler κ = 0.12 [0.05, 0.20] on 84 categorised prompts — not qualified (κ below 0.6)",
    )


def profile(tmp_path, models=None, **qualification):
    raw = yaml.safe_load((CONFIG_DIR / "demo.yaml").read_text(encoding="utf-8"))
    raw["qualification"] = {**raw["qualification"], **qualification}
    raw["models"].update(models or {})
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return str(path)


def test_profile_keys(tmp_path):
    settings = load_settings(profile(tmp_path), env={})
    assert (settings.qualification.labeler_sources, settings.qualification.labeler_per_category) == (GOLD_SOURCES, 1)
    only_s_eval = load_settings(profile(tmp_path, labeler_sources=["s_eval"]), env={})
    assert only_s_eval.qualification.labeler_sources == ("s_eval",)
    with pytest.raises(ConfigError, match=r"labeler_sources: \['nope'\] are not configured"):
        load_settings(profile(tmp_path, labeler_sources=["s_eval", "nope"]), env={})
    with pytest.raises(ConfigError, match="labeler_min_kapa"):
        load_settings(profile(tmp_path, labeler_min_kapa=0.5), env={})
    opted_out = load_settings(profile(tmp_path, labeler_sources=[]), env={})
    assert [a.key for a in build_qualification_assets(opted_out)] == [
        AssetKey("judge_qualification"),
        AssetKey("taxonomy_choice_qualification"),
    ]


def test_intent_labels_waits_for_the_labeler_qualification_without_being_triggered_by_it():
    from madef_assets.definitions import build_definitions

    graph = build_definitions(load_settings("demo", env={})).resolve_asset_graph()
    assert LABELER_QUALIFICATION in graph.get(AssetKey("intent_labels")).parent_keys
    assert graph.get(LABELER_QUALIFICATION).group_name == "qualification"
    [spec] = graph.get(LABELER_QUALIFICATION).assets_def.check_specs
    assert spec.blocking and spec.name == "labeler_qualified"
    assert NOT_TRIGGERS[AssetKey("intent_labels")] == (LABELER_QUALIFICATION,)


def gold_labeler(prompts: pl.DataFrame, error_rate: float, per_category: int, seed: int):
    """A labeler that answers the pipeline's labeling prompt with a reviewed label of the prompt's gold
    category, and with one of the next category on `error_rate` of the prompts (chosen by a hash)."""
    sample = sample_per_category(gold_prompts(prompts, TAXONOMY)[0], per_category, seed)
    answers = {}
    for prompt, category in zip(labeling_prompts(sample), sample["gold_category"], strict=True):
        draw = int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16) / 2**32
        answered = CATEGORIES[(CATEGORIES.index(category) + 1) % len(CATEGORIES)] if draw < error_rate else category
        answers[prompt] = f"{LABEL_OF[answered]}, 风险"  # the second label maps to nothing and does not count
    return lambda prompt, request: answers.get(prompt, "no gold for this prompt")


@pytest.mark.parametrize("error_rate, qualifies", [(0.05, True), (0.6, False)])
def test_gate_passes_a_labeler_that_agrees_with_the_sources_and_blocks_one_that_does_not(
    tmp_path, demo_prompts, error_rate, qualifies
):
    with OpenAICompatibleServer(answer=gold_labeler(demo_prompts, error_rate, 4, 0)) as server:
        labeler = {
            "backend": "openai",
            "model": "gold-labeler",
            "base_url": server.base_url,
            "api_key_env": None,
            "api": "chat",
            "concurrency": 8,
            "params": {"max_new_tokens": 16},
        }
        path = profile(tmp_path, {"labeler": labeler}, labeler_per_category=4, gate="block", n_resamples=200)
        settings = load_settings(path, env={"MADEF_STATE_DIR": str(tmp_path / "state")})
        assets = [a for a in build_qualification_assets(settings) if a.key == LABELER_QUALIFICATION]
        assets += [build_ingest_asset(settings.sources[name], settings) for name in GOLD_SOURCES]
        result = materialize(
            assets, resources=build_resources(settings), instance=DagsterInstance.ephemeral(), raise_on_error=False
        )
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "labeler_qualified"]
    assert (check.passed, check.severity) == (qualifies, AssetCheckSeverity.ERROR)
    assert check.metadata["n"].value == 88 and (check.metadata["kappa"].value >= 0.6) is qualifies
    assert check.metadata["uncertain_rate"].value == 0.0
    assert check.description.startswith("labeler κ = ") and "88 categorised prompts" in check.description
    [materialization] = [
        e.materialization for e in result.get_asset_materialization_events() if e.asset_key == LABELER_QUALIFICATION
    ]
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    assert metadata["excluded_rows"] == 60 and metadata["sampled_rows"] == 88
    assert all(f"| {language} | 44 |" in metadata["agreement"] for language in ("en", "zh"))
    counts = metadata["confusion"]["counts"]
    assert len(counts) == 14 and all(len(row) == 15 for row in counts) and sum(map(sum, counts)) == 88
    chart = settings.state_dir / "reports" / "labeler_confusion.png"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and metadata["confusion_chart_path"] == str(chart)
    table = result.output_for_node("labeler_qualification")
    assert table.columns == [
        "prompt_id",
        "source",
        "lang",
        "gold_category",
        "labels",
        "predicted_category",
        "status",
        "raw_output",
    ]
    assert (table["status"] == "ok").all() and table["labels"].list.len().min() == 2
