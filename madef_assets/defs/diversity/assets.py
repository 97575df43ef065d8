"""Diversity control: per-category quotas, generation for thin categories, dedup and sampling."""

import random

import polars as pl
from dagster import AssetExecutionContext, AssetKey, Output, asset

from madef_assets.defs.diversity.checks import attack_prompt_check_results, attack_prompt_check_specs
from madef_assets.defs.diversity.dedup import near_duplicates, normalized_texts
from madef_assets.defs.diversity.generation import (
    ATTACK_METHODS,
    fewshot_templates,
    parse_generated_prompt,
    render_attack_rewrite,
    render_derive,
    render_fewshot,
)
from madef_assets.defs.frames import params_view
from madef_assets.defs.intent.taxonomy import CATEGORIES, Taxonomy
from madef_assets.defs.llm_steps import parse_failure_check_spec, parse_failure_result
from madef_assets.defs.sources.normalize import prompt_id
from madef_assets.llm.resource import LLMBatch, LLMResource, ParseError
from madef_assets.prompts import family_version
from madef_assets.settings import PROJECT_ROOT, Settings
from madef_assets.storage import run_sql

GROUP = "diversity"
POOL = "duckdb"
AUGMENTED_SOURCE = "augmented"
AUGMENTATION_FILE = PROJECT_ROOT / "data" / "safety_prompts" / "augmentation_prompts.json"


def generation_requests(quota: pl.DataFrame, pool: pl.DataFrame, taxonomy: Taxonomy, per_route: int, seed: int) -> list[dict]:
    """What to generate for each thin category: `per_route` prompts by each of the three routes."""
    rng = random.Random(seed)
    templates = fewshot_templates(AUGMENTATION_FILE, taxonomy.fewshot_scenarios)
    methods = sorted(ATTACK_METHODS)
    requests = []
    for category in quota.filter(pl.col("thin"))["category"]:
        fewshot = templates[category]
        existing = pool.filter(pl.col("category") == category)
        zh = existing.filter(pl.col("lang") == "zh")["prompt"].to_list()
        plain = existing.filter(pl.col("attack_method").is_null())
        parents = [(r["prompt_id"], r["prompt"], r["lang"]) for r in plain.iter_rows(named=True)]
        parents += [(None, example, "zh") for example in fewshot.examples]
        keywords = taxonomy.categories[category]["keywords"]
        for n in range(per_route):
            examples = rng.sample(zh, min(3, len(zh)))
            requests.append({"category": category, "route": "keyword_fewshot", "parent_prompt_id": None, "lang": "zh",
                             "attack_method": None, "request": render_fewshot(fewshot, examples, keywords),
                             "avoid": examples + list(fewshot.examples)})
            parent_id, parent, lang = parents[rng.randrange(len(parents))]
            requests.append({"category": category, "route": "derived_question", "parent_prompt_id": parent_id, "lang": lang,
                             "attack_method": None, "request": render_derive(parent, lang), "avoid": [parent]})
            parent_id, parent, lang = parents[rng.randrange(len(parents))]
            method = methods[(n + CATEGORIES.index(category)) % len(methods)]
            requests.append({"category": category, "route": "attack_rewrite", "parent_prompt_id": parent_id, "lang": lang,
                             "attack_method": method, "request": render_attack_rewrite(parent, lang, method), "avoid": [parent]})
    return requests


AUGMENTED_SCHEMA = {
    "prompt_id": pl.Utf8, "source": pl.Utf8, "lang": pl.Utf8, "prompt": pl.Utf8, "category": pl.Utf8, "route": pl.Utf8,
    "parent_prompt_id": pl.Utf8, "attack_method": pl.Utf8, "model": pl.Utf8, "params": pl.Utf8, "status": pl.Utf8,
    "error": pl.Utf8, "raw_output": pl.Utf8, "cached": pl.Boolean,
}


def augmented_table(requests: list[dict], batch: LLMBatch, model: str, params_json: str) -> pl.DataFrame:
    """One row per generation request: the new prompt (or why there is none), route, parent, model, parameters."""
    rows = []
    for request, result in zip(requests, batch.results):
        text, status, error = (result.value, result.status, result.error)
        if status == "ok":
            try:
                parse_generated_prompt(text, tuple(request["avoid"]))
            except ParseError as exc:
                text, status, error = None, "parse_error", str(exc)
        else:
            text = None
        rows.append({
            "prompt_id": prompt_id(AUGMENTED_SOURCE, request["lang"], text) if text else None,
            "source": AUGMENTED_SOURCE, "lang": request["lang"], "prompt": text, "category": request["category"],
            "route": request["route"], "parent_prompt_id": request["parent_prompt_id"], "attack_method": request["attack_method"],
            "model": model, "params": params_json, "status": status, "error": error,
            "raw_output": result.output if isinstance(result.output, str) else None, "cached": result.cached,
        })
    return pl.DataFrame(rows, schema=AUGMENTED_SCHEMA)


def build_diversity_assets(settings: Settings) -> list:
    method = settings.method
    train_sources = pl.DataFrame({"source": list(method.train_sources)}, schema={"source": pl.Utf8})

    @asset(group_name=GROUP, kinds={"duckdb", "sql"}, pool=POOL)
    def category_quota(context: AssetExecutionContext, prompt_categories: pl.DataFrame) -> pl.DataFrame:
        """Train-eligible prompts per category against the target from the config; thin ones are flagged."""
        categories = pl.DataFrame({"category": list(CATEGORIES), "position": list(range(len(CATEGORIES)))})
        table = run_sql("diversity/category_quota", prompt_categories=prompt_categories, categories=categories,
                        train_sources=train_sources, params=params_view(quota=method.quota_per_category))
        context.add_output_metadata({"thin_categories": ", ".join(table.filter(pl.col("thin"))["category"]) or "none"})
        return table

    @asset(group_name=GROUP, kinds={"duckdb", "llm"}, pool=POOL, check_specs=[parse_failure_check_spec(AssetKey("augmented_prompts"))])
    def augmented_prompts(context: AssetExecutionContext, attacker: LLMResource, category_quota: pl.DataFrame, prompt_categories: pl.DataFrame):
        """New prompts for thin categories by the attacker model: keyword + few-shot completion, a related
        question derived from an existing prompt, and an S-Eval attack-tactic rewrite of a plain one."""
        pool = prompt_categories.filter(pl.col("source").is_in(method.train_sources) & pl.col("category").is_not_null())
        requests = generation_requests(category_quota, pool, Taxonomy.load(settings.taxonomy_path), method.augment_per_route, method.seed)
        batch = attacker.generate([r["request"] for r in requests], template_version=family_version("attack_rewrite") + family_version("derive_question"),
                                  parse=parse_generated_prompt, log=context.log)
        table = augmented_table(requests, batch, attacker.model, attacker.params_json)
        yield Output(table, metadata={**batch.metadata(), "requests": len(requests),
                                      "ok_by_route": {k: int(v) for k, v in table.filter(pl.col("status") == "ok").group_by("route").len().iter_rows()}})
        yield parse_failure_result(context.asset_key, table["status"], method.max_parse_failure_rate)

    @asset(group_name=GROUP, kinds={"duckdb", "sql"}, pool=POOL, check_specs=attack_prompt_check_specs())
    def attack_prompts(context: AssetExecutionContext, prompt_categories: pl.DataFrame, augmented_prompts: pl.DataFrame):
        """Original (train sources) and augmented prompts, exact and MinHash near-duplicate dedup, then
        rejection sampling to the per-category quota."""
        columns = ["prompt_id", "source", "lang", "prompt", "response", "category", "attack_method", "origin", "route", "parent_prompt_id"]
        original = prompt_categories.filter(pl.col("source").is_in(method.train_sources) & pl.col("category").is_not_null()).with_columns(
            origin=pl.lit("original"), route=pl.lit(None, pl.Utf8), parent_prompt_id=pl.lit(None, pl.Utf8))
        augmented = augmented_prompts.filter(pl.col("status") == "ok").with_columns(origin=pl.lit("augmented"), response=pl.lit(None, pl.Utf8))
        union = pl.concat([original.select(columns), augmented.select(columns)], how="vertical_relaxed")
        exact = union.with_columns(normalized=normalized_texts(pl.col("prompt"))).unique("normalized", keep="first", maintain_order=True)
        near = near_duplicates(exact["prompt"].to_list(), method.near_duplicate_threshold, method.minhash_permutations, method.seed + 1)
        candidates = exact.with_columns(duplicate_of=pl.Series([exact["prompt_id"][i] if i is not None else None for i in near], dtype=pl.Utf8))
        sampled = run_sql("diversity/quota_sample", candidates=candidates, params=params_view(quota=method.quota_per_category, seed=method.seed))
        table = sampled.select(columns)
        near_count = candidates["duplicate_of"].drop_nulls().len()
        yield Output(table, metadata={
            "rows_original": original.height, "rows_augmented": augmented.height, "rows_in": union.height,
            "exact_duplicates": union.height - exact.height, "near_duplicates": near_count,
            "duplicate_rate": round((union.height - exact.height + near_count) / union.height, 4) if union.height else 0.0,
            "rows_after_dedup": exact.height - near_count, "rows_out": table.height,
            "per_category": {k: int(v) for k, v in table.group_by("category").len().sort("category").iter_rows()},
        })
        yield from attack_prompt_check_results(table, method.required_categories)

    return [category_quota, augmented_prompts, attack_prompts]
