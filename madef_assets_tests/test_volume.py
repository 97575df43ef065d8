"""Volume and diversity as in the paper (§3.5: thin categories filled to their quota over several routes, a
targeted SFT total with Chinese-first general data, the perplexity cut per language) and the scoring prompts
(§3.4: the pairwise judge's criteria and role line, lone candidates on the same scale and selected apart)."""

import math
import random
import sys

import polars as pl
import pytest
import yaml

from madef_assets.defs.diversity.routes import example_sets, route_capacity, split_deficit
from madef_assets.defs.diversity.volume import (
    MIN_PASS_RATE,
    data_rounds,
    derived_quotas,
    measured_pass_rates,
    quota_table,
    safety_rows_target,
)
from madef_assets.defs.frames import params_view
from madef_assets.defs.intent.taxonomy import Taxonomy
from madef_assets.defs.reward.scores import (
    PAPER,
    RESPONSE_SAFETY_TEMPLATES,
    pair_prompt,
    parse_one_score,
    parse_two_scores,
    plan_response_judging,
)
from madef_assets.defs.selection.assets import single_threshold
from madef_assets.project import CONFIG_DIR, PROJECT_ROOT, ConfigError
from madef_assets.prompts import template
from madef_assets.settings import MethodConfig, SelectionConfig, load_settings, parse_section
from madef_assets.storage import run_sql

ROUTES = ("keyword_fewshot", "derived_question", "attack_rewrite")
UNLIMITED = {route: 10**9 for route in ROUTES}


# --- §3.5: the deficit split over the routes ----------------------------------------------------


@pytest.mark.parametrize(
    ("deficit", "capacity", "planned"),
    [
        (9, UNLIMITED, (3, 3, 3)),  # even split
        (10, UNLIMITED, (4, 3, 3)),  # the remainder to the first routes
        (11, UNLIMITED, (4, 4, 3)),
        (2, UNLIMITED, (1, 1, 0)),
        (0, UNLIMITED, (0, 0, 0)),
        (12, {**UNLIMITED, "keyword_fewshot": 1}, (1, 6, 5)),  # a full route's excess
        (12, {"keyword_fewshot": 0, "derived_question": 2, "attack_rewrite": 20}, (0, 2, 10)),  # goes to the others
        (
            50,
            {"keyword_fewshot": 1, "derived_question": 2, "attack_rewrite": 20},
            (1, 2, 20),
        ),  # every route full: short
        (5, {"keyword_fewshot": 0, "derived_question": 0, "attack_rewrite": 0}, (0, 0, 0)),
    ],
)
def test_the_deficit_is_split_evenly_over_the_routes_within_their_capacity(deficit, capacity, planned):
    """§3.5: a thin category is filled to its quota by several routes: an even split in route order, the
    remainder one each to the first routes, no route above what it can produce, its excess to the others."""
    assert tuple(split_deficit(deficit, ROUTES, capacity).values()) == planned
    assert sum(planned) == min(deficit, sum(capacity.values()))


def test_only_the_configured_routes_get_a_share():
    """§3.5: the routes are configured (method.augment_routes); one left out plans nothing."""
    planned = split_deficit(7, ("attack_rewrite", "derived_question"), UNLIMITED)
    assert planned == {"attack_rewrite": 4, "derived_question": 3}


def test_a_route_can_produce_only_distinct_requests():
    """§3.5: the ledger answers a request text once, so a route's capacity is its distinct requests."""
    assert route_capacity(zh_prompts=5, seed_examples=0, parents=4, attack_methods=10) == {
        "keyword_fewshot": 10,
        "derived_question": 4,
        "attack_rewrite": 40,
    }
    assert route_capacity(zh_prompts=1, seed_examples=3, parents=3, attack_methods=10)["keyword_fewshot"] == 1
    assert route_capacity(zh_prompts=2, seed_examples=0, parents=0, attack_methods=10) == {
        "keyword_fewshot": 0,
        "derived_question": 0,
        "attack_rewrite": 0,
    }
    sets = example_sets([f"p{i}" for i in range(5)], 10, random.Random(0))
    assert len(sets) == 10 == len({frozenset(s) for s in sets}) and all(len(s) == 3 for s in sets)
    assert example_sets(["a", "b"], 5, random.Random(0)) in ([["a", "b"]], [["b", "a"]])


def pool_for(category: str, prompts: list[str], lang: str = "zh") -> pl.DataFrame:
    count = len(prompts)
    return pl.DataFrame(
        {
            "prompt_id": [f"{category}{i}" for i in range(count)],
            "category": [category] * count,
            "lang": [lang] * count,
            "prompt": prompts,
            "attack_method": [None] * count,
        },
        schema_overrides={"attack_method": pl.Utf8},
    )


def test_generation_requests_fill_the_deficit_and_report_the_plan():
    """§3.5: augmented_prompts asks for each category's whole deficit (not a fixed number per route), split
    over the routes, every request distinct; augment_max_per_category caps it; the plan is reported."""
    from madef_assets.defs.diversity.assets import augmentation_report, generation_requests

    taxonomy = Taxonomy.load(CONFIG_DIR / "taxonomy.yaml")
    quota = pl.DataFrame({"category": ["CIA", "PS", "OFF"], "deficit": [20, 4, 0]})
    pool = pl.concat(
        [
            pool_for("CIA", [f"如何实施第{i}种违法犯罪行为而不被发现？" for i in range(3)]),
            pool_for("OFF", ["骂人的话有哪些？"]),
        ]
    )
    requests, plan = generation_requests(quota, pool, taxonomy, MethodConfig(quota_per_category=30))
    counts = {(category, route): n for category, route, n in plan.select("category", "route", "planned").iter_rows()}
    by_request = pl.DataFrame(requests).group_by("category", "route").len()
    assert {(c, r): n for c, r, n in by_request.iter_rows()} == {k: v for k, v in counts.items() if v}
    # CIA: 3 zh prompts give one example set; the other 19 go to the parent routes (3 parents, 30 rewrites)
    assert [counts[("CIA", route)] for route in ROUTES] == [1, 3, 16]
    assert sum(v for (c, _), v in counts.items() if c == "PS") == 4 and "OFF" not in plan["category"].to_list()
    assert len({r["request"] for r in requests}) == len(requests)
    capped, capped_plan = generation_requests(quota, pool, taxonomy, MethodConfig(augment_max_per_category=2))
    per_category = capped_plan.group_by("category").agg(pl.col("planned").sum()).sort("category")
    assert per_category.rows() == [("CIA", 2), ("PS", 2)]
    table = pl.DataFrame(
        {
            "category": ["PS"] * 3,
            "route": ["keyword_fewshot", "derived_question", "derived_question"],
            "status": ["ok", "ok", "refused"],
            "kept": [True, False, False],
        }
    )
    report = augmentation_report(capped_plan, table).filter(pl.col("category") == "PS")
    assert report.select("route", "planned", "generated", "kept").rows() == [
        ("keyword_fewshot", 1, 1, 1),
        ("derived_question", 1, 1, 0),
        ("attack_rewrite", 0, 0, 0),
    ]


def test_the_demo_plans_no_more_generations_than_before():
    """§3.5 at the demo's size: at most three new prompts per thin category (one per route before), so the
    270M model's generation work does not grow."""
    demo = load_settings("demo").method
    assert demo.augment_max_per_category is not None and demo.augment_max_per_category <= len(demo.augment_routes)
    assert load_settings("production").method.augment_max_per_category is None  # the paper fills the whole deficit


# --- §3.5: the SFT total, its mix, the general sample ------------------------------------------


def reward_features(rows: list[tuple]) -> pl.DataFrame:
    """(prompt_id, category, lang, perplexity, chosen_score, scored_as) rows with a hard instruction."""
    columns = ["prompt_id", "category", "lang", "perplexity", "chosen_score", "scored_as"]
    frame = pl.DataFrame(rows, schema=columns, orient="row")
    return frame.with_columns(
        prompt=pl.col("prompt_id"),
        chosen_response=pl.lit("r"),
        better_response=pl.lit("safe_response"),
        instruction_safety=pl.lit(0.1),
    )


def selection_params(**changes) -> pl.DataFrame:
    values = {
        "perplexity_quantile": 1.0,
        "min_response_safety": 0.0,
        "min_single_response_safety": 0.0,
        "max_instruction_safety": 1.0,
        "per_category_cap": 100,
        "safety_target": None,
    }
    return params_view(**{**values, **changes})


def select(table: pl.DataFrame, **changes) -> list[str]:
    selected = run_sql("selection/safety_sft_selected", reward_features=table, params=selection_params(**changes))
    return sorted(selected["prompt_id"])


def test_the_perplexity_cut_is_taken_within_each_language():
    """§3.5: Chinese and English perplexities are not comparable; the quantile is taken per language. A global
    0.5 cut would keep the four English prompts and drop every Chinese one."""
    table = reward_features(
        [(f"zh{i}", "CIA", "zh", 40.0 + i, 0.9, "pair") for i in range(4)]
        + [(f"en{i}", "CIA", "en", 5.0 + i, 0.9, "pair") for i in range(4)]
    )
    global_rank = table.with_columns(rank=pl.col("perplexity").rank("min").sub(1) / (table.height - 1))
    assert sorted(global_rank.filter(pl.col("rank") <= 0.5)["prompt_id"]) == ["en0", "en1", "en2", "en3"]
    assert select(table, perplexity_quantile=0.5) == ["en0", "en1", "zh0", "zh1"]


def test_pair_and_single_scores_are_selected_apart():
    """§3.4: a lone candidate's score (scored alone) is kept apart from pair scores: its own threshold, and it
    is ranked among its own kind, so inflated single scores cannot crowd out pairs under the category cap."""
    table = reward_features(
        [
            ("p1", "CIA", "zh", 10.0, 0.80, "pair"),
            ("p2", "CIA", "zh", 11.0, 0.75, "pair"),
            ("s1", "CIA", "zh", 12.0, 0.99, "single"),
            ("s2", "CIA", "zh", 13.0, 0.97, "single"),
        ]
    )
    assert select(table, per_category_cap=2) == ["p1", "s1"]  # by raw score it would be s1 and s2
    assert select(table, min_response_safety=0.7, min_single_response_safety=0.98) == ["p1", "p2", "s1"]
    assert select(table, min_response_safety=0.78, min_single_response_safety=0.0) == ["p1", "s1", "s2"]
    assert single_threshold(SelectionConfig(min_response_safety=0.7)) == 0.7
    assert single_threshold(SelectionConfig(min_response_safety=0.7, min_single_response_safety=0.8)) == 0.8


def test_the_sft_total_trims_the_safety_part_in_turns_across_categories():
    """§3.5: the SFT set targets a configured total (paper: ~200k with 40k general); the safety part gets what
    the general sample leaves, taken in turns across categories so the mix survives the trim."""
    table = reward_features(
        [(f"a{i}", "CIA", "zh", 10.0 + i, 0.9, "pair") for i in range(6)]
        + [(f"b{i}", "PS", "zh", 10.0 + i, 0.9, "pair") for i in range(2)]
    )
    assert safety_rows_target(None, 40) is None and safety_rows_target(200000, 40000) == 160000
    assert select(table, safety_target=safety_rows_target(10, 4)) == ["a0", "a1", "a2", "a3", "b0", "b1"]
    assert select(table, safety_target=2) == ["a0", "b0"]
    assert len(select(table)) == 8


def test_the_sft_mix_reports_category_language_source_route_and_kind():
    """§3.5: the achieved mix of the final set, by category, language, source, route and scoring kind."""
    sft = pl.DataFrame(
        {
            "prompt_id": ["s1", "s2", "g1"],
            "kind": ["safety", "safety", "general"],
            "category": ["CIA", "PS", "general_sft"],
            "lang": ["zh", "en", "zh"],
        }
    )
    attack = pl.DataFrame(
        {"prompt_id": ["s1", "s2"], "source": ["s_eval", "augmented"], "route": [None, "attack_rewrite"]},
        schema_overrides={"route": pl.Utf8},
    )
    selected = pl.DataFrame({"prompt_id": ["s1", "s2"], "scored_as": ["pair", "single"]})
    mix = run_sql("selection/sft_mix", sft=sft, attack=attack, selected=selected)
    rows = {(d, v): (n, share) for d, v, n, share in mix.iter_rows()}
    assert rows[("lang", "zh")] == (2, 0.6667) and rows[("source", "general_sft")] == (1, 0.3333)
    assert rows[("route", "original")][0] == rows[("route", "attack_rewrite")][0] == rows[("route", "general")][0] == 1
    assert rows[("scored_as", "pair")][0] == rows[("scored_as", "single")][0] == 1
    assert {d for d, _ in rows} == {"kind", "category", "lang", "source", "route", "scored_as"}


def general_rows() -> pl.DataFrame:
    langs = ["zh"] * 50 + ["en"] * 50
    return pl.DataFrame(
        {
            "prompt_id": [f"g{i}" for i in range(100)],
            "source": ["alpaca"] * 100,
            "lang": langs,
            "prompt": ["q"] * 100,
            "response": ["r"] * 100,
        }
    )


def test_general_data_is_sampled_chinese_first():
    """§3.5: the paper's general data is Chinese-first: general_zh_share of the sample is Chinese, not half
    English because the English file is as big."""
    sample = run_sql(
        "selection/general_sft_sample", general=general_rows(), params=params_view(sample_size=20, seed=0, zh_share=0.8)
    )
    assert dict(sample.group_by("lang").len().iter_rows()) == {"zh": 16, "en": 4}
    proportional = run_sql(
        "selection/general_sft_sample",
        general=general_rows(),
        params=params_view(sample_size=20, seed=0, zh_share=None),
    )
    assert dict(proportional.group_by("lang").len().iter_rows()) == {"zh": 10, "en": 10}
    short = general_rows().filter((pl.col("lang") == "en") | (pl.col("prompt_id").is_in(["g0", "g1"])))
    scarce = run_sql(
        "selection/general_sft_sample", general=short, params=params_view(sample_size=20, seed=0, zh_share=0.8)
    )
    assert dict(scarce.group_by("lang").len().iter_rows()) == {"zh": 2, "en": 4}  # all the Chinese there is


def test_profiles_carry_the_volume_settings():
    """§3.5: production targets the paper's ~200k with 40k Chinese-first general data; the old per-route count
    is refused with what replaced it; the settings are checked."""
    production = load_settings("production").method
    assert (production.sft_total, production.general_sample_size, production.general_zh_share) == (200000, 40000, 0.8)
    from madef_assets.settings import parse_section

    with pytest.raises(ConfigError, match="replaced by augment_routes"):
        parse_section("method", {"augment_per_route": 1})
    bad_settings = (
        {"augment_routes": ["telepathy"]},
        {"general_zh_share": 1.5},
        {"sft_total": 10, "general_sample_size": 40},
    )
    for bad in bad_settings:
        with pytest.raises(ConfigError):
            parse_section("method", bad)


# --- the response-safety prompts: the paper's (§3.7) by default, madef's helpful variant by name ------------------

# §3.7's pairwise scoring prompt, in meaning: the role, the direction of the scale, the output form.
PAPER_PROMPT = {
    "en": ("You are a safety assessment expert.", "higher scores indicating higher safety", "in list format"),
    "zh": ("你是一名安全评估专家。", "分数越高表示越安全", "以列表格式输出"),
}
PAPER_OUTPUT = {
    "en": ("Output only two numerical values", "Output only one numerical value"),
    "zh": ("只输出两个数值", "只输出一个数值"),
}
HELPFUL_ROLE = {
    "en": "You are a fair and impartial judge of AI assistants' answers.",
    "zh": "你是一名公正、客观的AI助手回答评判者。",
}
HELPFUL_CRITERIA = {
    "en": ("safety", "accuracy", "completeness", "human values", "bare refusal", "between 0 and 1"),
    "zh": ("安全性", "准确性", "完整性", "人类价值观", "只拒绝", "0到1之间"),
}


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_the_default_response_safety_prompts_are_the_papers(lang):
    """§3.7: "You are a safety assessment expert … higher scores indicating higher safety … Output only two
    numerical values, in list format" — the default (method.response_safety_prompt: paper) for the pair, and
    the same words for a lone candidate; both end with the cue the parser reads."""
    assert parse_section("method", {}).response_safety_prompt == "paper"
    pair, single = (template(name, lang).text for name in (PAPER.pair, PAPER.single))
    for text, output in zip((pair, single), PAPER_OUTPUT[lang]):
        assert text.startswith(PAPER_PROMPT[lang][0]) and all(w in text for w in PAPER_PROMPT[lang]) and output in text
        assert not any(words in text for words in HELPFUL_CRITERIA[lang][1:5])  # safety alone
    assert pair.endswith(("Scores: [", "分数：[")) and single.endswith(("Score: [", "分数：["))


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_the_helpful_variant_keeps_its_own_criteria_under_its_own_name(lang):
    """madef's variant (method.response_safety_prompt: helpful): safety together with accuracy, completeness
    and human values, so a bare refusal cannot tie a helpful safe answer; chosen by name, it reaches the reward
    step's requests and the judge's qualification."""
    helpful = RESPONSE_SAFETY_TEMPLATES["helpful"]
    pair, single = template(helpful.pair, lang).text, template(helpful.single, lang).text
    for text in (pair, single):
        assert text.startswith(HELPFUL_ROLE[lang]) and all(words in text for words in HELPFUL_CRITERIA[lang]), text
    rows = [{"prompt_id": "p", "lang": lang, "prompt": "q", "safe_response": "s", "original_response": "o"}]
    ((_, request),) = plan_response_judging(rows, seed=0, templates=helpful).pairs
    assert request.startswith(HELPFUL_ROLE[lang])
    ((_, default),) = plan_response_judging(rows, seed=0).pairs
    assert default.startswith(PAPER_PROMPT[lang][0])


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_the_rehearsal_model_still_answers_the_judge_prompts(lang):
    """The rehearsal server answers each template's form: the rewritten prompts still get parseable scores."""
    sys.path.insert(0, str(PROJECT_ROOT / "bench"))
    from rehearsal_model import answer

    assert len(parse_two_scores(answer(pair_prompt("q", lang, "a", "b"), {}))) == 2
    single = template("response_single_safety", lang).render(prompt="q", response_1="a")
    assert 0 <= parse_one_score(answer(single, {})) <= 1


def test_response_scores_say_how_they_were_obtained():
    """§3.4: each row records whether its score came from a pair or a lone candidate (`scored_as`)."""
    rows = [
        {"prompt_id": "two", "lang": "en", "prompt": "q", "safe_response": "s", "original_response": "o"},
        {"prompt_id": "one", "lang": "en", "prompt": "q", "safe_response": "s", "original_response": None},
        {"prompt_id": "none", "lang": "en", "prompt": "q", "safe_response": None, "original_response": None},
    ]
    assert [row["scored_as"] for row in plan_response_judging(rows, seed=0).rows] == ["pair", "single", None]


def test_a_later_round_asks_only_for_what_is_still_short_with_requests_not_sent_before():
    """§3.5's volume: prompts lost to refusals, copies or the rejection sampling are generated for again, in
    bounded rounds, with requests the ledger has not answered yet (the same request would bring the same answer)."""
    from madef_assets.defs.diversity.assets import generation_requests, shortfall

    taxonomy = Taxonomy.load(CONFIG_DIR / "taxonomy.yaml")
    wanted = pl.DataFrame({"category": ["CIA", "PS"], "deficit": [6, 4]})
    pool = pool_for("CIA", [f"如何实施第{i}种违法犯罪行为而不被发现？" for i in range(6)])
    method = MethodConfig(quota_per_category=30)
    first, _ = generation_requests(wanted, pool, taxonomy, method)
    kept = pl.DataFrame({"category": [r["category"] for r in first], "kept": [i % 2 == 0 for i in range(len(first))]})
    short = shortfall(wanted, kept)
    expected = {c: n - sum(k for cat, k in zip(kept["category"], kept["kept"]) if cat == c) for c, n in wanted.rows()}
    assert dict(short.rows()) == expected and sum(expected.values()) > 0
    second, _ = generation_requests(short, pool, taxonomy, method, 1, frozenset(r["request"] for r in first))
    assert second and not {r["request"] for r in second} & {r["request"] for r in first}
    per_category = pl.DataFrame(second).group_by("category").len()
    assert all(n <= expected[c] for c, n in per_category.rows())
    # nothing short: nothing asked
    enough = pl.DataFrame({"category": ["CIA"] * 6 + ["PS"] * 4, "kept": [True] * 10})
    assert dict(shortfall(wanted, enough).rows()) == {"CIA": 0, "PS": 0}
    assert generation_requests(shortfall(wanted, enough), pool, taxonomy, method, 1)[0] == []


def test_augmentation_runs_a_second_round_for_what_the_first_lost(tmp_path):
    """Direct invocation against a served attacker and labeler: the attacker refuses some requests, so a
    second round asks for the shortfall with requests never sent before; nothing is asked twice."""
    import hashlib

    from dagster import Output, build_asset_context

    from madef_assets.defs.diversity.assets import build_augmentation_assets
    from madef_assets.llm.resource import LLMResource
    from madef_assets.settings import model_from_parts
    from madef_assets_tests.openai_server import OpenAICompatibleServer

    def answer(prompt: str, request: dict) -> str:
        digest = hashlib.sha256(prompt.encode()).hexdigest()
        if request["model"] == "labeler":
            return "违法犯罪"
        if int(digest, 16) % 2:  # about half the generation requests refused
            return "抱歉，我无法协助完成这个请求。"
        return f"第{digest[:8]}号问题：怎样在不被发现的情况下实施违法犯罪行为？"

    raw = yaml.safe_load((CONFIG_DIR / "demo.yaml").read_text(encoding="utf-8"))
    raw["method"].update(augment_rounds=2, augment_max_per_category=6)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    settings = load_settings(str(tmp_path / "p.yaml"), env={"MADEF_STATE_DIR": str(tmp_path / "state")})
    augmented = build_augmentation_assets(settings)[1]
    quota = pl.DataFrame({"category": ["CIA"], "deficit": [6], "thin": [True]})
    categories = pool_for("CIA", [f"如何实施第{i}种违法犯罪行为而不被发现？" for i in range(6)]).with_columns(
        source=pl.lit(settings.method.train_sources[0]), response=pl.lit(None, pl.Utf8)
    )
    with OpenAICompatibleServer(answer=answer) as server:

        def role(name: str) -> LLMResource:
            options = {"base_url": server.base_url, "api_key_env": None, "max_retries": 0}
            return LLMResource(
                role=name,
                config=model_from_parts("openai", name, options, {}),
                duckdb_path=str(tmp_path / "ledger.duckdb"),
                models_dir=str(tmp_path),
            )

        context = build_asset_context(resources={"attacker": role("attacker"), "labeler": role("labeler")})
        results = list(augmented(context, category_quota=quota, prompt_categories=categories))
    output = next(r for r in results if isinstance(r, Output))
    table, metadata = output.value, {k: v.value for k, v in output.metadata.items()}
    first = table.filter(pl.col("round") == 0)
    assert metadata["rounds"] == 2 and first.height == 6 and (first["status"] == "refused").sum() > 0
    assert table.filter(pl.col("round") == 1).height == (first["status"] == "refused").sum()
    assert table["kept"].sum() > first["kept"].sum()
    assert max(server.requests.values()) == 1  # no request sent twice
    assert 0 < metadata["attacker_refusal_rate"] < 1


@pytest.mark.parametrize("route", ["attack_rewrite", "derived_question"])
def test_a_later_round_walks_on_to_the_routes_unsent_candidates(route):
    """All of round 0 lost: round 1 plans the whole shortfall again from the route's candidates not yet sent
    (another parent, another attack method), not the few that happen to differ."""
    from madef_assets.defs.diversity.assets import generation_requests

    taxonomy = Taxonomy.load(CONFIG_DIR / "taxonomy.yaml")
    quota = pl.DataFrame({"category": ["CIA"], "deficit": [5]})
    pool = pool_for("CIA", [f"如何实施第{i}种违法犯罪行为而不被发现？" for i in range(6)])
    method = MethodConfig(quota_per_category=30, augment_routes=(route,))
    first, _ = generation_requests(quota, pool, taxonomy, method)
    second, plan = generation_requests(quota, pool, taxonomy, method, 1, frozenset(r["request"] for r in first))
    left = plan["capacity"][0] - len(first)  # 6 parents x 10 attack methods, or the 6 parents themselves
    assert len(first) == 5 and len(second) == plan["planned"].sum() == min(5, left) > 0
    assert not {r["request"] for r in first} & {r["request"] for r in second}


def test_quotas_follow_sft_total_over_the_measured_pass_rates():
    """Issue 27 item 4: 14 × 12,000 × 0.8 cannot reach the paper's ~200k (§3.5). With quota_per_category null,
    each category asks for its share of the safety rows over the share of its prompts that reached the SFT set
    in the last build; before any build, over what the perplexity cut keeps by construction."""
    method = MethodConfig(
        quota_per_category=None,
        sft_total=200_000,
        general_sample_size=40_000,
        selection=SelectionConfig(perplexity_quantile=0.8),
    )
    prior = quota_table(method, None)
    assert prior["sft_rows_target"].sum() == 160_000 and set(prior["quota"]) == {
        14_285,
        14_287,
    }  # ceil(11,428 or 11,429 / 0.8)
    assert set(prior["pass_rate_origin"]) == {"prior: selection.perplexity_quantile"}
    rates = measured_pass_rates({"OFF": 1000, "UB": 400, "PS": 0}, {"OFF": 500, "UB": 400}, "run abc")
    assert rates.per_category == {"OFF": 0.5, "UB": 1.0} and rates.overall == 900 / 1400
    quotas = {
        r["category"]: r for r in derived_quotas(1400, ("OFF", "UB", "PS", "EX"), rates, 0.8).iter_rows(named=True)
    }
    assert (quotas["OFF"]["quota"], quotas["OFF"]["pass_rate_origin"]) == (700, "measured (run abc)")  # 350 / 0.5
    assert quotas["UB"]["quota"] == 350
    assert quotas["PS"]["pass_rate_origin"] == "measured overall (run abc)" and quotas["PS"]["quota"] == 545
    floor = derived_quotas(100, ("OFF",), measured_pass_rates({"OFF": 50}, {}, "r"), 0.8)
    assert floor["quota"][0] == round(100 / MIN_PASS_RATE)  # nothing passed: bounded, not infinite
    fixed = quota_table(MethodConfig(quota_per_category=7), None)
    assert set(fixed["quota"]) == {7} and fixed["sft_rows_target"].is_null().all()
    with pytest.raises(ValueError, match="derives the quotas from sft_total"):
        MethodConfig(quota_per_category=None)
    with pytest.raises(ValueError, match=r"per_category_cap \(11000\) × 14 categories cannot hold the 160000"):
        MethodConfig(**{**method.model_dump(), "selection": SelectionConfig(per_category_cap=11_000)})


def test_category_quota_reads_the_last_builds_pass_rates_from_the_instance(tmp_path):
    from dagster import AssetMaterialization, DagsterInstance, build_asset_context

    from madef_assets.defs.diversity.assets import build_augmentation_assets

    raw = yaml.safe_load((CONFIG_DIR / "demo.yaml").read_text())
    raw["method"].update(quota_per_category=None, sft_total=4 + 14 * 10, general_sample_size=4)
    raw["method"]["selection"]["per_category_cap"] = 10
    settings = load_settings_from(raw, tmp_path)
    category_quota = next(a for a in build_augmentation_assets(settings) if a.key.path == ["category_quota"])
    prompts = pl.DataFrame({"prompt_id": ["a"], "source": ["xsafety"], "category": ["OFF"]})
    with DagsterInstance.ephemeral() as instance:
        before = category_quota(build_asset_context(instance=instance), prompt_categories=prompts)
        prior = settings.method.selection.perplexity_quantile
        assert set(before["target"]) == {math.ceil(10 / prior)}  # 10 rows over the prior
        report = instance.report_runless_asset_event
        report(AssetMaterialization("safety_sft_selected", metadata={"passed_per_category": {"OFF": 1}}))
        report(AssetMaterialization("attack_prompts", metadata={"per_category": {"OFF": 20, "UB": 10}}))
        stale = category_quota(build_asset_context(instance=instance), prompt_categories=prompts)
        assert set(stale["pass_rate_origin"]) == {"prior: selection.perplexity_quantile"}  # selection older
        # what passed the thresholds counts, not what the cap or the total trim left
        report(AssetMaterialization("safety_sft_selected", metadata={"passed_per_category": {"OFF": 5}}))
        after = category_quota(build_asset_context(instance=instance), prompt_categories=prompts)
    off = after.row(0, named=True)
    assert (off["category"], off["prompts"], off["target"], off["deficit"], off["pass_rate"]) == (
        "OFF",
        1,
        40,
        39,
        0.25,
    )
    ub = after.row(1, named=True)
    assert (ub["target"], ub["pass_rate"]) == (round(10 / MIN_PASS_RATE), 0.0)  # measured: none of UB's passed
    assert after.filter(pl.col("category") == "PS")["pass_rate_origin"][0].startswith("measured overall")


def load_settings_from(raw: dict, tmp_path):
    from madef_assets.settings import parse_settings

    return parse_settings(raw, tmp_path / "p.yaml", {"MADEF_STATE_DIR": str(tmp_path)})


def test_madef_run_builds_the_data_again_while_the_sft_set_is_short():
    """`madef run`'s data builds (method.volume_rounds): again while short of sft_total, stopping when met, when a
    build adds nothing, or at the limit, and saying why."""
    from dagster import AssetMaterialization, DagsterInstance

    def scenario(method: MethodConfig, totals: list[int]) -> tuple[int, list[str]]:
        said, builds = [], iter(totals[1:])
        with DagsterInstance.ephemeral() as instance:

            def build() -> bool:
                rows = next(builds)
                instance.report_runless_asset_event(AssetMaterialization("sft_dataset", metadata={"sft_total": rows}))
                return True

            instance.report_runless_asset_event(AssetMaterialization("sft_dataset", metadata={"sft_total": totals[0]}))
            assert data_rounds(instance, method, build, said.append)
            return len(totals) - 1 - sum(1 for _ in builds), said

    derived = {"quota_per_category": None, "sft_total": 100, "general_sample_size": 10, "volume_rounds": 3}
    assert scenario(MethodConfig(**derived), [60, 90, 100, 100]) == (2, [ANY_LINE, ANY_LINE])
    extra, said = scenario(MethodConfig(**derived), [60, 70, 80, 90])
    assert extra == 2 and "after 3 data build(s) the SFT set has 80 of 100 rows (20 short)" in said[-1]
    extra, said = scenario(MethodConfig(**derived), [60, 60, 90])
    assert extra == 1 and "added no row" in said[-1]
    extra, said = scenario(MethodConfig(**{**derived, "quota_per_category": 5}), [60, 90])
    assert extra == 0 and "the quotas are fixed" in said[0]
    assert scenario(MethodConfig(**derived), [100, 100]) == (0, [])


class _AnyLine:
    def __eq__(self, other) -> bool:
        return isinstance(other, str) and other.startswith("data build")


ANY_LINE = _AnyLine()


def test_selection_losses_count_each_row_at_the_first_cut_it_fails():
    table = reward_features(
        [
            ("ok", "CIA", "zh", 1.0, 0.9, "pair"),
            ("fluent_but_unsafe", "CIA", "zh", 2.0, 0.1, "pair"),
            ("perplexing", "CIA", "zh", 99.0, 0.9, "pair"),
            ("capped", "CIA", "zh", 3.0, 0.9, "pair"),
        ]
    ).vstack(
        reward_features([("no_score", "PS", "zh", 1.0, None, "pair")]).with_columns(
            pl.col("chosen_score").cast(pl.Float64)
        )
    )
    table = table.with_columns(
        instruction_safety=pl.when(pl.col("prompt_id") == "capped").then(0.95).otherwise(pl.col("instruction_safety"))
    )
    params = selection_params(
        perplexity_quantile=0.7, min_response_safety=0.5, max_instruction_safety=0.9, per_category_cap=1
    )
    selected = run_sql("selection/safety_sft_selected", reward_features=table, params=params)
    losses = run_sql("selection/selection_losses", reward_features=table, selected=selected, params=params)
    assert losses.rows() == [("CIA", 4, 0, 1, 1, 1, 0, 1), ("PS", 1, 1, 0, 0, 0, 0, 0)]
    assert losses.columns[2:] == [
        "missing_feature",
        "perplexity_cut",
        "response_safety",
        "instruction_safety",
        "cap_or_total",
        "selected",
    ]


def test_with_data_rounds_madef_run_builds_the_sft_set_apart_and_trains_once(tmp_path):
    """volume_rounds > 1: the first wave builds the SFT set and its upstream (built again while short), the
    training and the rest of madef_build run once after it; together the two jobs are madef_build, no asset in both."""
    from madef_assets.cli import run_plan
    from madef_assets.definitions import AFTER_DATA_JOB, DATA_JOB, MAIN_JOB, OBSERVE_JOB, build_definitions

    raw = yaml.safe_load((CONFIG_DIR / "production.yaml").read_text())
    settings = load_settings_from(raw, tmp_path)
    assert [[p.job for p in wave] for wave in run_plan(settings)[:3]] == [[OBSERVE_JOB], [DATA_JOB], [AFTER_DATA_JOB]]
    definitions = build_definitions(settings)
    jobs = {
        name: set(definitions.resolve_job_def(name).asset_layer.selected_asset_keys)
        for name in (MAIN_JOB, DATA_JOB, AFTER_DATA_JOB)
    }
    assert jobs[MAIN_JOB] == jobs[DATA_JOB] | jobs[AFTER_DATA_JOB] and not jobs[DATA_JOB] & jobs[AFTER_DATA_JOB]
    names = {key.to_user_string() for key in jobs[AFTER_DATA_JOB]}
    assert "finetuned_checkpoint" in names and "sft_dataset" not in names
    raw["method"]["volume_rounds"] = 1
    assert [p.job for p in run_plan(load_settings_from(raw, tmp_path))[1]] == [MAIN_JOB]
