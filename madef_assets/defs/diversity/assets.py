"""Diversity control: per-category quotas, generation for thin categories, dedup and sampling."""

import json
import logging
import random

import polars as pl
from dagster import AssetExecutionContext, MetadataValue, Output, asset

from madef_assets.defs.diversity.checks import attack_prompt_check_results, attack_prompt_check_specs
from madef_assets.defs.diversity.dedup import near_duplicates, normalized_texts
from madef_assets.defs.diversity.generation import (
    ATTACK_METHODS,
    GENERATED_PROMPT_OUTPUT,
    FewShotTemplate,
    fewshot_templates,
    parse_generated_prompt,
    render_attack_rewrite,
    render_derive,
    render_fewshot,
    screen_generated,
    template_words,
)
from madef_assets.defs.diversity.routes import example_sets, route_capacity, split_deficit
from madef_assets.defs.diversity.volume import latest_per_category, quota_table
from madef_assets.defs.frames import params_view
from madef_assets.defs.intent.labels import LABELS_OUTPUT, parse_labels
from madef_assets.defs.intent.taxonomy import CATEGORIES, Taxonomy
from madef_assets.defs.llm_steps import llm_asset, llm_gate_results
from madef_assets.defs.sources.normalize import prompt_id
from madef_assets.llm.resource import LLMBatch, LLMResource, LLMResult, batches_metadata
from madef_assets.project import PROJECT_ROOT
from madef_assets.prompts import family_version, template
from madef_assets.reports import markdown_table
from madef_assets.settings import MethodConfig, Settings
from madef_assets.storage import run_sql

GROUP = "diversity"
AUGMENTED_SOURCE = "augmented"
AUGMENTATION_FILE = PROJECT_ROOT / "data" / "safety_prompts" / "augmentation_prompts.json"


def train_pool(prompt_categories: pl.DataFrame, train_sources: tuple[str, ...]) -> pl.DataFrame:
    """The categorized prompts that may enter the SFT set: those of a train source. Other attack sources (e.g.
    SafetyBench, labeled only for its intent distribution, the paper's Figure 3-4) never do."""
    return prompt_categories.filter(pl.col("source").is_in(train_sources) & pl.col("category").is_not_null())


PLAN_SCHEMA = {"category": pl.Utf8, "route": pl.Utf8, "deficit": pl.Int64, "capacity": pl.Int64, "planned": pl.Int64}


def capped_deficit(deficit: int, method: MethodConfig) -> int:
    """What generation asks for in a category: its deficit, at most method.augment_max_per_category."""
    return deficit if method.augment_max_per_category is None else min(deficit, method.augment_max_per_category)


def generation_requests(
    quota: pl.DataFrame,
    pool: pl.DataFrame,
    taxonomy: Taxonomy,
    method: MethodConfig,
    round_index: int = 0,
    sent: frozenset[str] = frozenset(),
) -> tuple[list[dict], pl.DataFrame]:
    """What to generate (§3.5): each category's deficit to the quota, capped by method.augment_max_per_category,
    split over method.augment_routes by routes.split_deficit; and the plan (deficit, capacity, planned per
    category and route). A later round draws with its own seed and leaves out the requests already `sent`."""
    rng = random.Random(method.seed if round_index == 0 else f"{method.seed}:{round_index}")
    templates = fewshot_templates(AUGMENTATION_FILE, taxonomy.fewshot_scenarios)
    requests, plan = [], []
    for category, deficit in quota.filter(pl.col("deficit") > 0).select("category", "deficit").iter_rows():
        fewshot = templates[category]
        existing = pool.filter(pl.col("category") == category)
        zh = existing.filter(pl.col("lang") == "zh")["prompt"].to_list()
        plain = existing.filter(pl.col("attack_method").is_null())
        parents = [(r["prompt_id"], r["prompt"], r["lang"]) for r in plain.iter_rows(named=True)]
        parents += [(None, example, "zh") for example in fewshot.examples]
        wanted = capped_deficit(deficit, method)
        capacity = route_capacity(len(zh), len(fewshot.examples), len(parents), len(ATTACK_METHODS))
        planned = split_deficit(wanted, method.augment_routes, capacity)
        keywords = taxonomy.categories[category]["keywords"]
        new = route_requests(category, planned, zh, parents, fewshot, keywords, rng, sent)
        made = {route: sum(r["route"] == route for r in new) for route in planned}  # capacity already sent: fewer
        plan += [
            {"category": category, "route": route, "deficit": deficit, "capacity": capacity[route], "planned": count}
            for route, count in made.items()
        ]
        requests += new
    return requests, pl.DataFrame(plan, schema=PLAN_SCHEMA)


def shortfall(wanted: pl.DataFrame, kept: pl.DataFrame) -> pl.DataFrame:
    """The quota table of the next round: each category's deficit is what it still lacks of what was wanted
    (`wanted`: category, deficit) after the prompts kept so far (`kept`: the rounds' rows)."""
    counts = kept.filter(pl.col("kept")).group_by("category").agg(kept=pl.len())
    return (
        wanted.join(counts, on="category", how="left")
        .with_columns(deficit=(pl.col("deficit") - pl.col("kept").fill_null(0)).clip(lower_bound=0))
        .select("category", "deficit")
    )


def route_requests(
    category: str,
    planned: dict[str, int],
    zh: list[str],
    parents: list[tuple],
    fewshot: FewShotTemplate,
    keywords: list[str],
    rng: random.Random,
    sent: frozenset[str] = frozenset(),
) -> list[dict]:
    """The planned requests of one category, each distinct and none of them `sent` before (a later round walks
    on to the route's next candidates): keyword_fewshot on distinct example sets, derived_question on distinct
    parents, attack_rewrite on distinct (parent, attack method) pairs."""
    requests = []
    own_words = template_words("keyword_fewshot", "zh", fewshot)
    wanted_sets = planned.get("keyword_fewshot", 0)
    # a later round draws more sets than it needs, as some may have been sent already
    for examples in example_sets(zh, wanted_sets * 3 + 8 if sent else wanted_sets, rng):
        if len(requests) == wanted_sets:
            break
        if render_fewshot(fewshot, examples, keywords) in sent:
            continue
        requests.append(
            {
                "category": category,
                "route": "keyword_fewshot",
                "parent_prompt_id": None,
                "lang": "zh",
                "attack_method": None,
                "request": render_fewshot(fewshot, examples, keywords),
                "avoid": examples + list(fewshot.examples) + [own_words],
            }
        )
    wanted_parents = planned.get("derived_question", 0)
    derived = 0
    for parent_id, parent, lang in rng.sample(parents, len(parents) if sent else wanted_parents):
        if derived == wanted_parents:
            break
        if render_derive(parent, lang) in sent:
            continue
        derived += 1
        requests.append(
            {
                "category": category,
                "route": "derived_question",
                "parent_prompt_id": parent_id,
                "lang": lang,
                "attack_method": None,
                "request": render_derive(parent, lang),
                "avoid": [parent, template_words("derived_question", lang, fewshot)],
            }
        )
    order, methods = rng.sample(parents, len(parents)), sorted(ATTACK_METHODS)
    wanted_rewrites, rewrites = planned.get("attack_rewrite", 0), 0
    for n in range(len(order) * len(methods)):  # every (parent, method) pair once, in this order
        if rewrites == wanted_rewrites:
            break
        parent_id, parent, lang = order[n % len(order)]
        method = methods[(n // len(order) + CATEGORIES.index(category)) % len(methods)]
        if render_attack_rewrite(parent, lang, method) in sent:
            continue
        rewrites += 1
        requests.append(
            {
                "category": category,
                "route": "attack_rewrite",
                "parent_prompt_id": parent_id,
                "lang": lang,
                "attack_method": method,
                "request": render_attack_rewrite(parent, lang, method),
                "avoid": [parent, template_words("attack_rewrite", lang, fewshot)],
            }
        )
    return requests


def generate_and_label(
    requests: list[dict],
    attacker: LLMResource,
    labeler: LLMResource,
    taxonomy: Taxonomy,
    method: MethodConfig,
    log: logging.Logger,
) -> tuple[pl.DataFrame, LLMBatch, LLMBatch]:
    """One round: the attacker answers the requests, every new prompt is labeled again and kept or dropped by
    the rejection sampling (label_verdicts)."""
    batch = attacker.generate(
        [r["request"] for r in requests],
        template_version=family_version("attack_rewrite") + family_version("derive_question"),
        parse=parse_generated_prompt,
        log=log,
        refusals=True,
        output=GENERATED_PROMPT_OUTPUT,
    )
    table = augmented_table(
        requests,
        batch,
        attacker.model,
        json.dumps(attacker.config.generation),
        method.contamination_zh_chars,
        method.contamination_en_words,
    )
    generated = [
        (i, row["lang"], row["prompt"]) for i, row in enumerate(table.iter_rows(named=True)) if row["status"] == "ok"
    ]
    label_batch = labeler.generate(
        [template("intent_label", lang).render(prompt=p) for _, lang, p in generated],
        template_version=family_version("intent_label"),
        parse=parse_labels,
        log=log,
        refusals=True,
        output=LABELS_OUTPUT,
    )
    labels = {i: r for (i, _, _), r in zip(generated, label_batch.results)}
    return label_verdicts(table, labels, taxonomy, method.rejection_sampling), batch, label_batch


def augmentation_report(plan: pl.DataFrame, table: pl.DataFrame) -> pl.DataFrame:
    """Planned against produced per category and route over all rounds: the first round's deficit and
    capacity, the planned requests summed, `generated` answers that are new prompts, `kept` those the
    rejection sampling kept."""
    plan = plan.group_by("category", "route", maintain_order=True).agg(
        pl.col("deficit").first(), pl.col("capacity").first(), pl.col("planned").sum()
    )
    produced = table.group_by("category", "route").agg(
        generated=(pl.col("status") == "ok").sum(), kept=pl.col("kept").sum()
    )
    return plan.join(produced, on=["category", "route"], how="left", maintain_order="left").with_columns(
        pl.col("generated", "kept").fill_null(0).cast(pl.Int64)
    )


AUGMENTED_SCHEMA = {
    "prompt_id": pl.Utf8,
    "source": pl.Utf8,
    "lang": pl.Utf8,
    "prompt": pl.Utf8,
    "category": pl.Utf8,
    "route": pl.Utf8,
    "parent_prompt_id": pl.Utf8,
    "attack_method": pl.Utf8,
    "model": pl.Utf8,
    "params": pl.Utf8,
    "status": pl.Utf8,
    "error": pl.Utf8,
    "raw_output": pl.Utf8,
    "cached": pl.Boolean,
}


def augmented_table(
    requests: list[dict], batch: LLMBatch, model: str, params_json: str, zh_chars: int, en_words: int
) -> pl.DataFrame:
    """One row per generation request: the new prompt (or why there is none), route, parent, model, parameters."""
    rows = []
    for request, result in zip(requests, batch.results):
        text, status, error = None, result.status, result.error
        if status == "ok":
            text, status, error = screen_generated(result.value, request["avoid"], zh_chars, en_words)
        rows.append(
            {
                "prompt_id": prompt_id(AUGMENTED_SOURCE, request["lang"], text) if text else None,
                "source": AUGMENTED_SOURCE,
                "lang": request["lang"],
                "prompt": text,
                "category": request["category"],
                "route": request["route"],
                "parent_prompt_id": request["parent_prompt_id"],
                "attack_method": request["attack_method"],
                "model": model,
                "params": params_json,
                "status": status,
                "error": error,
                "raw_output": result.output if isinstance(result.output, str) else None,
                "cached": result.cached,
            }
        )
    return pl.DataFrame(rows, schema=AUGMENTED_SCHEMA)


def label_verdicts(
    table: pl.DataFrame, labels: dict[int, LLMResult], taxonomy: Taxonomy, enforce: bool
) -> pl.DataFrame:
    """The paper's rejection sampling: every generated prompt is labeled again and kept only when its
    labels map to the category it was written for; `drop_reason` says why any row is not kept."""
    rows = []
    for index, row in enumerate(table.iter_rows(named=True)):
        result = labels.get(index)
        label_list = result.value if result is not None and result.status == "ok" else None
        label_category = taxonomy.label_category(label_list) if label_list else None
        if row["status"] != "ok":
            reason = f"{row['status']}: {row['error']}"
        elif label_list is None:
            reason = f"labeler {result.status}: {result.error}"
        elif label_category is None:
            reason = f"labels {label_list} map to no category"
        elif label_category != row["category"]:
            reason = f"labeled {label_category} ({', '.join(label_list)}), written for {row['category']}"
        else:
            reason = None
        kept = row["status"] == "ok" and (reason is None or not enforce)
        rows.append({"labels": label_list, "label_category": label_category, "kept": kept, "drop_reason": reason})
    schema = {"labels": pl.List(pl.Utf8), "label_category": pl.Utf8, "kept": pl.Boolean, "drop_reason": pl.Utf8}
    return pl.concat([table, pl.DataFrame(rows, schema=schema)], how="horizontal")


def build_diversity_assets(settings: Settings) -> list:
    """Quota and augmentation, then the deduplicated, sampled attack prompts."""
    return [*build_augmentation_assets(settings), build_attack_prompts_asset(settings)]


def build_augmentation_assets(settings: Settings) -> list:
    method = settings.method
    train_sources = pl.DataFrame({"source": list(method.train_sources)}, schema={"source": pl.Utf8})

    @asset(group_name=GROUP, kinds={"duckdb", "sql"})
    def category_quota(context: AssetExecutionContext, prompt_categories: pl.DataFrame) -> pl.DataFrame:
        """Train-eligible prompts per category against its quota; thin ones are flagged with their deficit, which
        augmented_prompts fills. The quota is method.quota_per_category, or, when that is null, derived from
        method.sft_total: each category's share of the safety rows over the share of its prompts that reached the
        SFT set in the last build (safety_sft_selected against attack_prompts; before any build, the share the
        perplexity cut keeps), so that what selection drops is collected beforehand (volume.py)."""
        categories = pl.DataFrame({"category": list(CATEGORIES), "position": list(range(len(CATEGORIES)))})
        quotas = quota_table(method, latest_per_category(context.instance))
        table = run_sql(
            "diversity/category_quota",
            prompt_categories=prompt_categories,
            categories=categories,
            train_sources=train_sources,
            quotas=quotas,
        )
        context.add_output_metadata(
            {
                "thin_categories": ", ".join(table.filter(pl.col("thin"))["category"]) or "none",
                "deficit": int(table["deficit"].sum()),
                "quota": "method.quota_per_category"
                if method.quota_per_category is not None
                else f"derived from method.sft_total ({method.sft_total})",
                "quotas": MetadataValue.md(markdown_table(table.drop("thin"))),
            }
        )
        return table

    # one pool for two roles: the scarcer of the attacker's and the labeler's (llm/pools.py step_pool)
    @llm_asset(settings, "augmented_prompts", GROUP, "attacker", "labeler")
    def augmented_prompts(
        context: AssetExecutionContext,
        attacker: LLMResource,
        labeler: LLMResource,
        category_quota: pl.DataFrame,
        prompt_categories: pl.DataFrame,
    ):
        """New prompts that fill each thin category's deficit to its quota (§3.5), split over the routes
        (routes.py): keyword + few-shot completion, a related question derived from an existing prompt, and an
        S-Eval attack-tactic rewrite of a plain one; the metadata's `plan` table sets planned against produced. A
        refusal is `refused`; a copy of the parent, an example or the template is `parse_error`; every
        other prompt is labeled again and `kept` only when its labels map to the category it was written
        for (method.rejection_sampling); `drop_reason` says why a row is not kept. Up to method.augment_rounds
        rounds: each next round asks again, with requests not sent before, for what the categories still lack
        (`round`); `short_after_rounds` names the categories left short and why."""
        taxonomy = Taxonomy.load(settings.taxonomy_path)
        pool = train_pool(prompt_categories, method.train_sources)
        wanted = pl.DataFrame(
            {
                "category": category_quota["category"],
                "deficit": [capped_deficit(d, method) for d in category_quota["deficit"]],
            },
            schema={"category": pl.Utf8, "deficit": pl.Int64},
        )
        rounds, plans, sent, generated, labeled = [], [], set(), [], []
        for round_index in range(method.augment_rounds):
            so_far = pl.concat(rounds) if rounds else pl.DataFrame(schema={"category": pl.Utf8, "kept": pl.Boolean})
            quota = category_quota if round_index == 0 else shortfall(wanted, so_far)
            requests, plan = generation_requests(quota, pool, taxonomy, method, round_index, frozenset(sent))
            if not requests and round_index > 0:
                break
            plans.append(plan.with_columns(round=pl.lit(round_index, pl.Int64)))
            sent |= {r["request"] for r in requests}
            table, batch, label_batch = generate_and_label(requests, attacker, labeler, taxonomy, method, context.log)
            rounds.append(table.with_columns(round=pl.lit(round_index, pl.Int64)))
            generated.append(batch)
            labeled.append(label_batch)
        table = pl.concat(rounds)
        still_short = shortfall(wanted, table).filter(pl.col("deficit") > 0)
        rejected = table.filter((pl.col("status") == "ok") & pl.col("drop_reason").is_not_null()).height
        report = augmentation_report(pl.concat(plans), table)
        yield Output(
            table,
            metadata={
                **batches_metadata(generated),
                **{f"labeler_{k}": v for k, v in batches_metadata(labeled).items()},
                "requests": table.height,
                "rounds": len(rounds),
                # §3.5 generates with weakly aligned models so that generation does not end in refusals: how
                # often this attacker refused (or its provider moderated) is the measure of that choice.
                "attacker_refusal_rate": round((table["status"] == "refused").sum() / table.height, 4)
                if table.height
                else 0.0,
                "deficit": int(category_quota["deficit"].sum()),
                "wanted": int(wanted["deficit"].sum()),
                "planned": int(report["planned"].sum()),
                "plan": MetadataValue.md(markdown_table(report) if report.height else "no category below its quota"),
                "by_status": {k: int(v) for k, v in table.group_by("status").len().sort("status").iter_rows()},
                "rejected_by_label": rejected,
                "rejection_sampling": method.rejection_sampling,
                "kept": int(table["kept"].sum()),
                "kept_by_route": {
                    k: int(v) for k, v in table.filter(pl.col("kept")).group_by("route").len().sort("route").iter_rows()
                },
                # What the rounds could not make up: the category, its shortfall, and why generation stopped.
                "short_after_rounds": {
                    c: f"{d} short: "
                    + (
                        "round limit (method.augment_rounds)"
                        if len(rounds) == method.augment_rounds
                        else "no request left that was not sent (route capacity)"
                    )
                    for c, d in still_short.iter_rows()
                },
            },
        )
        yield from llm_gate_results(context.asset_key, table["status"], method)

    return [category_quota, augmented_prompts]


def build_attack_prompts_asset(settings: Settings):
    method = settings.method

    @asset(group_name=GROUP, kinds={"duckdb", "sql"}, check_specs=attack_prompt_check_specs())
    def attack_prompts(
        context: AssetExecutionContext,
        prompt_categories: pl.DataFrame,
        augmented_prompts: pl.DataFrame,
        category_quota: pl.DataFrame,
    ):
        """Original (train sources) and augmented prompts, exact and MinHash near-duplicate dedup, then
        rejection sampling to each category's quota (category_quota's `target`)."""
        columns = [
            "prompt_id",
            "source",
            "lang",
            "prompt",
            "response",
            "category",
            "attack_method",
            "origin",
            "route",
            "parent_prompt_id",
        ]
        original = train_pool(prompt_categories, method.train_sources).with_columns(
            origin=pl.lit("original"), route=pl.lit(None, pl.Utf8), parent_prompt_id=pl.lit(None, pl.Utf8)
        )
        augmented = augmented_prompts.filter(pl.col("kept")).with_columns(
            origin=pl.lit("augmented"), response=pl.lit(None, pl.Utf8)
        )
        union = pl.concat([original.select(columns), augmented.select(columns)], how="vertical_relaxed")
        exact = union.with_columns(normalized=normalized_texts(pl.col("prompt"))).unique(
            "normalized", keep="first", maintain_order=True
        )
        near = near_duplicates(
            exact["prompt"].to_list(), method.near_duplicate_threshold, method.minhash_permutations, method.seed + 1
        )
        candidates = exact.with_columns(
            duplicate_of=pl.Series([exact["prompt_id"][i] if i is not None else None for i in near], dtype=pl.Utf8)
        )
        sampled = run_sql(
            "diversity/quota_sample",
            candidates=candidates,
            quotas=category_quota.select("category", quota="target"),
            params=params_view(seed=method.seed),
        )
        table = sampled.select(columns)
        near_count = candidates["duplicate_of"].drop_nulls().len()
        yield Output(
            table,
            metadata={
                "rows_original": original.height,
                "rows_augmented": augmented.height,
                "rows_in": union.height,
                "exact_duplicates": union.height - exact.height,
                "near_duplicates": near_count,
                "duplicate_rate": round((union.height - exact.height + near_count) / union.height, 4)
                if union.height
                else 0.0,
                "rows_after_dedup": exact.height - near_count,
                "rows_out": table.height,
                "per_category": {k: int(v) for k, v in table.group_by("category").len().sort("category").iter_rows()},
            },
        )
        yield from attack_prompt_check_results(table, method.required_categories, method.near_duplicate_threshold)

    return attack_prompts
