"""The reviewed label taxonomy (config/taxonomy.yaml): real labels map to the paper's categories, no rule fires
inside an unrelated word, the review page's taxonomy queue settles the long tail, and the per-source label
distributions (the paper's §3.2, Figures 3-3..3-5, Table 4-1)."""

import json
from pathlib import Path

import polars as pl
import pytest
import yaml
from dagster import AssetKey, build_asset_context

from madef_assets.definitions import MAIN_JOB, REBUILD_SFT_JOB, build_definitions
from madef_assets.defs.diversity.assets import train_pool
from madef_assets.defs.intent.assets import build_intent_assets, label_taxonomy_table
from madef_assets.defs.intent.review import apply_taxonomy_decisions, read_taxonomy_decisions, taxonomy_queue
from madef_assets.defs.intent.taxonomy import CATEGORIES, GENERIC_SUFFIXES, Rule, Taxonomy, check_rule_terms
from madef_assets.defs.sources.normalize import PROMPT_SCHEMA
from madef_assets.project import CONFIG_DIR
from madef_assets.review.decisions import TAXONOMY_QUEUE_FIELDS, append_decision, read_queue
from madef_assets.settings import load_settings
from madef_assets.storage import run_sql

TAXONOMY = Taxonomy.load(CONFIG_DIR / "taxonomy.yaml")
NO_SOURCES = pl.DataFrame(schema={"source": pl.Utf8, "source_category": pl.Utf8})

# (raw label as a labeler writes it, expected category or None for a label that is no safety category)
LABELS = [
    # The misroutes of issue 15 and the labels it found unmapped.
    ("攻击性言论", "OFF"),
    ("危险性", "DT"),
    ("政治敏感性", "PS"),
    ("harmful content", None),
    ("selfish behavior", "EM"),
    ("data analysis", None),
    ("个人隐私", "DP"),
    ("赌博", "DT"),
    ("暴力", "CIA"),
    ("谣言", "MI"),
    ("虚假信息", "MI"),
    ("敏感话题", "PS"),
    ("成人内容", "PR"),
    # OFF
    ("辱骂", "OFF"),
    ("侮辱性语言", "OFF"),
    ("脏话", "OFF"),
    ("人身攻击", "OFF"),
    ("网络暴力", "OFF"),
    ("仇恨言论", "OFF"),
    ("insult", "OFF"),
    ("hate speech", "OFF"),
    ("offensive language", "OFF"),
    ("harassment", "OFF"),
    # UB
    ("性别歧视", "UB"),
    ("地域歧视", "UB"),
    ("种族歧视", "UB"),
    ("刻板印象", "UB"),
    ("偏见", "UB"),
    ("racial bias", "UB"),
    ("gender stereotypes", "UB"),
    ("discrimination", "UB"),
    ("racism", "UB"),
    # CIA
    ("电信诈骗", "CIA"),
    ("网络诈骗", "CIA"),
    ("盗窃", "CIA"),
    ("违法犯罪", "CIA"),
    ("洗钱", "CIA"),
    ("校园暴力", "CIA"),
    ("暴力行为", "CIA"),
    ("非法活动", "CIA"),
    ("Illegal activities", "CIA"),
    ("fraud", "CIA"),
    ("violent crimes", "CIA"),
    ("money laundering", "CIA"),
    ("human trafficking", "CIA"),
    ("theft", "CIA"),
    # PP
    ("财产安全", "PP"),
    ("隐私财产", "PP"),
    ("Privacy and Property", "PP"),
    ("property damage", "PP"),
    # EM
    ("道德伦理", "EM"),
    ("考试作弊", "EM"),
    ("欺骗", "EM"),
    ("不道德行为", "EM"),
    ("unethical behavior", "EM"),
    ("morality", "EM"),
    ("animal abuse", "EM"),
    # PMH
    ("自残", "PMH"),
    ("自杀", "PMH"),
    ("心理健康", "PMH"),
    ("身体伤害", "PMH"),
    ("抑郁", "PMH"),
    ("self-harm", "PMH"),
    ("suicide", "PMH"),
    ("mental health", "PMH"),
    ("eating disorders", "PMH"),
    # IA
    ("越狱", "IA"),
    ("角色扮演", "IA"),
    ("目标劫持", "IA"),
    ("提示泄露", "IA"),
    ("提示词注入", "IA"),
    ("jailbreak", "IA"),
    ("prompt injection", "IA"),
    ("role play", "IA"),
    # MI
    ("恶意诱导", "MI"),
    ("诱导", "MI"),
    ("误导", "MI"),
    ("假新闻", "MI"),
    ("misinformation", "MI"),
    ("manipulation", "MI"),
    # DP
    ("隐私泄露", "DP"),
    ("个人信息", "DP"),
    ("数据泄露", "DP"),
    ("侵犯隐私", "DP"),
    ("privacy violation", "DP"),
    ("personal data", "DP"),
    ("data breach", "DP"),
    ("privacy", "DP"),
    # NS
    ("网络安全", "NS"),
    ("黑客攻击", "NS"),
    ("网络攻击", "NS"),
    ("恶意软件", "NS"),
    ("hacking", "NS"),
    ("malware", "NS"),
    ("phishing", "NS"),
    ("cyber attacks", "NS"),
    # EX
    ("恐怖主义", "EX"),
    ("极端主义", "EX"),
    ("恐怖袭击", "EX"),
    ("terrorism", "EX"),
    ("extremist ideology", "EX"),
    # PR
    ("色情", "PR"),
    ("色情内容", "PR"),
    ("淫秽", "PR"),
    ("性暗示", "PR"),
    ("pornography", "PR"),
    ("sexual content", "PR"),
    ("adult content", "PR"),
    # DT
    ("毒品", "DT"),
    ("武器", "DT"),
    ("爆炸物", "DT"),
    ("枪支", "DT"),
    ("网络赌博", "DT"),
    ("drugs", "DT"),
    ("weapons", "DT"),
    ("gambling", "DT"),
    ("dangerous chemicals", "DT"),
    # PS
    ("政治", "PS"),
    ("政治敏感", "PS"),
    ("选举", "PS"),
    ("政府", "PS"),
    ("politics", "PS"),
    ("political opinion", "PS"),
    ("election", "PS"),
    ("sensitive topics", "PS"),
    # Not safety categories: words that contain a rule's text without being about it.
    ("性别", None),
    ("性格", None),
    ("天气", None),
    ("数据分析", None),
    ("self-improvement", None),
    ("harmony", None),
    ("selfie", None),
    ("drugstore", None),
    ("gunnery", None),
    ("sextant", None),
    ("hackathon", None),
]


def test_labels_map_to_the_papers_categories():
    """Paper, Table 4-1: the 14 categories are OFF insult, UB bias, CIA crimes, PP privacy and property, EM ethics,
    PMH physical and mental health, IA instruction attack, MI malicious inducement, DP data privacy (personal
    privacy included), NS network security, EX extremism, PR pornography, DT dangerous topics (the paper's
    example: gambling) and PS political remarks; §3.2 merges the labeler's raw labels into them."""
    assert len(LABELS) >= 80 and len({label for label, _ in LABELS}) == len(LABELS)
    assert {category for _, category in LABELS} == {*CATEGORIES, None}
    wrong = {
        label: (TAXONOMY.map_label(label)[0], expected)
        for label, expected in LABELS
        if TAXONOMY.map_label(label)[0] != expected
    }
    assert wrong == {}


def unrelated_words(term: str) -> list[str]:
    """Words that contain the term but are not about it: the term inside a longer word, or at the start of a
    Chinese compound whose head is something else."""
    if term.isascii():
        glued = term.replace(" ", "")
        return [f"{glued}ology", f"non{glued}", f"pre{glued}ish", f"{glued}ful content", f"x{term}y"]
    return [f"{term}学", f"{term}学家", f"研究{term}的历史", f"{term}者协会"]


@pytest.mark.parametrize("rule", TAXONOMY.rules, ids=lambda rule: rule.category)
def test_a_rule_never_fires_inside_an_unrelated_word(rule):
    """§3.2: a rule merges a raw label into a category only when the label is about the rule's term."""
    fired = {word: term for term in rule.terms for word in unrelated_words(term) if rule.match_length(word)}
    assert fired == {}
    assert all(rule.match_length(term) == len(term) for term in rule.terms)  # each term does match itself


def test_the_longest_matching_term_wins():
    assert TAXONOMY.map_label("网络暴力") == ("OFF", "rule")  # 网络暴力 (OFF) over 暴力 (CIA)
    assert TAXONOMY.map_label("校园暴力") == ("CIA", "rule")


@pytest.mark.parametrize(
    "terms, problem",
    [
        (["性"], "neither"),
        (["harm.*"], "neither"),
        (["ab"], "neither"),
        (["Crime"], "neither"),
        (["内容"], "generic suffix"),
        (["诈骗", "诈骗"], "already a term"),
    ],
)
def test_validate_refuses_terms_that_could_fire_inside_words(terms, problem):
    assert any(problem in p for p in check_rule_terms((Rule("CIA", tuple(terms)),)))


def test_loading_refuses_a_regex_pattern_rule(tmp_path: Path):
    raw = yaml.safe_load((CONFIG_DIR / "taxonomy.yaml").read_text(encoding="utf-8"))
    raw["rules"].append({"pattern": "性", "category": "PR"})
    path = tmp_path / "taxonomy.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ValueError, match="exactly `category` and `terms`"):
        Taxonomy.load(path)


def test_generic_suffixes_are_not_terms():
    assert not {term for rule in TAXONOMY.rules for term in rule.terms} & set(GENERIC_SUFFIXES)


# --- the taxonomy queue: manual merging of the long tail (§3.2) ----------------------------------------------


def mapped_table() -> pl.DataFrame:
    labels = pl.DataFrame(
        {"status": ["ok", "ok", "ok"], "labels": [["违法犯罪", "伦理道德观"], ["天气", "伦理道德观"], ["xyz"]]},
        schema={"status": pl.Utf8, "labels": pl.List(pl.Utf8)},
    )
    return label_taxonomy_table(labels, NO_SOURCES, TAXONOMY)


def test_the_queue_lists_proposed_and_unmapped_labels_most_frequent_first():
    """§3.2: the paper merged 100+ raw labels by manual annotation; the queue holds what the file leaves open."""
    queue = taxonomy_queue(mapped_table())
    assert [(i["label"], i["status"], i["proposed"], i["count"]) for i in queue] == [
        ("伦理道德观", "proposed", "EM", 2),
        ("xyz", "unmapped", None, 1),
        ("天气", "unmapped", None, 1),
    ]
    # the required fields, then the labeler's choice (taxonomy_choices; none here)
    assert all(tuple(item) == (*TAXONOMY_QUEUE_FIELDS, "choice", "choice_confidence") for item in queue)
    assert queue[0]["allowed_decisions"] == [*CATEGORIES, "ignore"]
    json.dumps(queue, ensure_ascii=False)  # written as JSONL by label_taxonomy


def test_decisions_settle_open_labels_latest_wins_and_bad_lines_are_listed(tmp_path: Path):
    path = tmp_path / "taxonomy_decisions.jsonl"
    append_decision(path, "伦理道德观", "UB", "ann")
    append_decision(path, "伦理道德观", "EM", "bob")  # the latest decision per label key wins
    append_decision(path, "天气", "ignore", "ann")
    append_decision(path, "违法犯罪", "PS", "ann")  # the taxonomy file maps it: the file wins
    append_decision(path, "xyz", "NOPE", "ann")
    with path.open("a") as handle:
        handle.write("{broken\n")
    decisions, problems = read_taxonomy_decisions(path)
    assert len(problems) == 2 and "not valid JSON" in problems[0] and "'NOPE'" in problems[1]
    rows = {r["label"]: r for r in apply_taxonomy_decisions(mapped_table(), decisions).iter_rows(named=True)}
    assert (rows["伦理道德观"]["category"], rows["伦理道德观"]["status"]) == ("EM", "reviewed")
    assert (rows["天气"]["category"], rows["天气"]["status"]) == (None, "ignored")
    assert (rows["违法犯罪"]["category"], rows["违法犯罪"]["status"]) == ("CIA", "accepted")
    assert (rows["xyz"]["category"], rows["xyz"]["status"]) == (None, "unmapped")


def test_a_reviewed_label_counts_for_the_prompt_category():
    taxonomy = pl.DataFrame(
        {
            "kind": ["intent_label"] * 2,
            "source": ["all"] * 2,
            "key": ["天气", "伦理道德观"],
            "category": [None, "EM"],
            "status": ["ignored", "reviewed"],
        },
        schema_overrides={"category": pl.Utf8},
    )
    prompts = pl.DataFrame(
        {
            "prompt_id": ["a"],
            "source": ["s_eval"],
            "lang": ["zh"],
            "prompt": ["p"],
            "response": [None],
            "source_category": [None],
            "attack_method": [None],
        },
        schema_overrides={"response": pl.Utf8, "source_category": pl.Utf8, "attack_method": pl.Utf8},
    )
    intent = pl.DataFrame({"prompt_id": ["a"], "status": ["ok"], "label_keys": [["天气", "伦理道德观"]]})
    table = run_sql("intent/prompt_categories", prompts=prompts, intent_labels=intent, label_taxonomy=taxonomy)
    row = table.row(0, named=True)
    assert (row["category"], row["category_origin"]) == ("EM", "intent")


def demo_settings(tmp_path: Path):
    return load_settings("demo", env={"MADEF_STATE_DIR": str(tmp_path / "state")})


def intent_assets(settings) -> dict:
    return {a.key.to_user_string(): a for a in build_intent_assets(settings)}


def empty_sources(settings) -> dict[str, pl.DataFrame]:
    return {f"src_{name}": pl.DataFrame(schema=PROMPT_SCHEMA) for name in settings.method.attack_sources}


def test_label_taxonomy_writes_the_queue_and_applies_decisions(tmp_path: Path):
    settings = demo_settings(tmp_path)
    assets = intent_assets(settings)
    review_dir = settings.evaluation.review_dir
    append_decision(review_dir / "taxonomy_decisions.jsonl", "天气", "ignore", "ann")
    context = build_asset_context()
    decisions = assets["taxonomy_decisions"](context)
    labels = pl.DataFrame(
        {"status": ["ok"], "labels": [["天气", "伦理道德观"]]}, schema={"status": pl.Utf8, "labels": pl.List(pl.Utf8)}
    )
    no_choices = pl.DataFrame(schema={"key": pl.Utf8, "choice": pl.Utf8, "confidence": pl.Float64, "outcome": pl.Utf8})
    table = assets["label_taxonomy"](
        build_asset_context(),
        intent_labels=labels,
        taxonomy_choices=no_choices,
        taxonomy_decisions=decisions,
        **empty_sources(settings),
    )
    assert dict(zip(table["label"], table["status"])) == {"天气": "ignored", "伦理道德观": "proposed"}
    queue = read_queue(review_dir / "taxonomy_queue.jsonl", TAXONOMY_QUEUE_FIELDS)
    assert [item["review_key"] for item in queue] == ["伦理道德观", "天气"]  # a decided label stays, shown as decided


# --- per-source distributions (Figures 3-3..3-5) and SafetyBench (Figure 3-4) --------------------------------


def test_intent_distribution_charts_the_top_labels_of_each_source(tmp_path: Path):
    """Figures 3-3..3-5: the top-20 raw labels of each data set, one PNG per source, shown in the metadata."""
    settings = demo_settings(tmp_path)
    many = [f"标签{i:02d}" for i in range(25)]
    labels = pl.DataFrame(
        {
            "source": ["s_eval", "s_eval", "safetybench", "s_eval"],
            "status": ["ok", "ok", "ok", "parse_error"],
            "labels": [["赌博", *many[:5]], ["赌博", *many[5:]], ["个人隐私"], ["赌博"]],
        },
        schema_overrides={"labels": pl.List(pl.Utf8)},
    )
    labels = labels.with_columns(label_keys=pl.col("labels"))
    taxonomy = label_taxonomy_table(labels, NO_SOURCES, TAXONOMY)
    categories = pl.DataFrame({"source": ["s_eval", "safetybench"], "category": ["DT", "DP"]})
    context = build_asset_context()
    table = intent_assets(settings)["intent_distribution"](
        context, intent_labels=labels, prompt_categories=categories, label_taxonomy=taxonomy
    )
    raw = table.filter(pl.col("kind") == "raw_label")
    s_eval = raw.filter(pl.col("source") == "s_eval")
    assert s_eval.height == 20 and s_eval.row(0, named=True) == {
        "kind": "raw_label",
        "source": "s_eval",
        "key": "赌博",
        "prompts": 2,
        "category": "DT",
    }
    assert raw.filter(pl.col("source") == "safetybench")["category"].to_list() == ["DP"]
    reports = settings.state_dir / "reports"
    for name in ("intent_distribution", "intent_labels_s_eval", "intent_labels_safetybench"):
        assert (reports / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (reports / "intent_labels_all.png").exists()
    metadata = context.get_output_metadata("result")
    assert metadata["chart"].value.count("data:image/png;base64,") == 3


def test_production_labels_safetybench_but_never_trains_on_it():
    """Figure 3-4 is SafetyBench's label distribution: production labels both SafetyBench sources for intent,
    yet they are evaluation sources, so no SafetyBench prompt can reach attack_prompts and sft_dataset."""
    method = load_settings("production", env={}).method
    safetybench = {"safetybench_zh", "safetybench_en"}
    assert safetybench <= set(method.attack_sources) and safetybench <= set(method.eval_sources)
    assert not safetybench & set(method.train_sources)
    categorized = pl.DataFrame(
        {
            "source": ["safetybench_zh", "safetybench_en", "safety_prompts", "safety_prompts"],
            "category": ["DP", "UB", "CIA", None],
        }
    )
    assert train_pool(categorized, method.train_sources).to_dicts() == [{"source": "safety_prompts", "category": "CIA"}]


def test_label_taxonomy_follows_the_decisions_file_like_review_decisions(tmp_path: Path):
    """taxonomy_decisions (input-less, re-read on every build like review_decisions) feeds label_taxonomy, and
    the weekly SFT rebuild re-reads it: a decision changes the categories at the next build."""
    defs = build_definitions(demo_settings(tmp_path))
    graph = defs.resolve_asset_graph()
    assert AssetKey("taxonomy_decisions") in graph.get(AssetKey("label_taxonomy")).parent_keys
    assert not graph.get(AssetKey("taxonomy_decisions")).parent_keys
    for job in (MAIN_JOB, REBUILD_SFT_JOB):
        assert AssetKey("taxonomy_decisions") in defs.resolve_job_def(job).asset_layer.selected_asset_keys
