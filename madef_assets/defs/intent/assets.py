"""Intent recognition: the labeler tags attack prompts; labels map to the 14 categories."""

from pathlib import Path

import polars as pl
from dagster import AssetExecutionContext, AssetIn, AssetKey, MetadataValue, Output, asset

from madef_assets.defs.frames import concat_prompts, params_view
from madef_assets.defs.intent.checks import coverage_check_spec, coverage_result
from madef_assets.defs.intent.choice import CHOSEN, UNPARSED, UNSURE, apply_taxonomy_choices, choose, with_outcomes
from madef_assets.defs.intent.labels import LABELS_OUTPUT, normalize_label, parse_labels
from madef_assets.defs.intent.review import (
    REVIEWABLE,
    apply_taxonomy_decisions,
    read_taxonomy_decisions,
    taxonomy_queue,
)
from madef_assets.defs.intent.taxonomy import CATEGORIES, Taxonomy
from madef_assets.defs.llm_steps import LLMStep, llm_asset, llm_gate_results, role_step
from madef_assets.llm.resource import LLMResource
from madef_assets.reports import bar_png, markdown_image, stacked_bar_png
from madef_assets.review.decisions import write_jsonl_atomically
from madef_assets.settings import Settings
from madef_assets.storage import run_sql

GROUP = "intent"
TOP_LABELS = 20


def label_taxonomy_table(labels: pl.DataFrame, sources: pl.DataFrame, taxonomy: Taxonomy) -> pl.DataFrame:
    """Every distinct raw intent label and every source category with its category and mapping status."""
    rows = []
    ok = labels.filter(pl.col("status") == "ok").explode("labels")
    counts = (
        ok.group_by("labels").len().sort(["len", "labels"], descending=[True, False]) if ok.height else pl.DataFrame()
    )
    seen: dict[str, dict] = {}
    for label, count in counts.iter_rows():
        key = normalize_label(label)
        if key in seen:
            seen[key]["count"] += count
            continue
        category, status = taxonomy.map_label(label)
        score = None
        if category is None:
            category, score = taxonomy.propose(label)
            status = "proposed" if category else "unmapped"
        seen[key] = {
            "kind": "intent_label",
            "source": "all",
            "label": label,
            "key": key,
            "count": count,
            "category": category,
            "status": status,
            "similarity": score,
        }
    rows += seen.values()
    for source, category, count in (
        sources.group_by(["source", "source_category"]).len().iter_rows() if sources.height else []
    ):
        if category is None:
            continue
        mapped = taxonomy.map_source_category(source, category)
        known = category in taxonomy.source_categories.get(source, {})
        rows.append(
            {
                "kind": "source_category",
                "source": source,
                "label": category,
                "key": category,
                "count": count,
                "category": mapped,
                "status": "accepted" if known else "unmapped",
                "similarity": None,
            }
        )
    schema = {
        "kind": pl.Utf8,
        "source": pl.Utf8,
        "label": pl.Utf8,
        "key": pl.Utf8,
        "count": pl.Int64,
        "category": pl.Utf8,
        "status": pl.Utf8,
        "similarity": pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema)


def open_intent_labels(labels: pl.DataFrame, taxonomy: Taxonomy) -> pl.DataFrame:
    """The raw intent labels the taxonomy file does not map (proposed or unmapped), one row per label key."""
    table = label_taxonomy_table(labels, pl.DataFrame(), taxonomy)
    return table.filter(pl.col("status").is_in(REVIEWABLE)).select("key", "label", "count", "status")


def intent_chart_paths(distribution: pl.DataFrame, reports_dir: Path) -> tuple[Path, dict[str, Path]]:
    """Where intent_distribution draws its charts: the source × category chart, and the top-labels chart of
    each labeled source (the paper's Figures 3-3..3-5)."""
    sources = sorted(set(distribution.filter(pl.col("kind") == "raw_label")["source"]) - {"all"})
    return reports_dir / "intent_distribution.png", {
        source: reports_dir / f"intent_labels_{source}.png" for source in sources
    }


def attack_source_ins(settings: Settings) -> dict[str, AssetIn]:
    """The attack sources as inputs (`src_<name>`)."""
    return {f"src_{name}": AssetIn(AssetKey(name)) for name in settings.method.attack_sources}


def build_intent_assets(settings: Settings) -> list:
    """Labels and their taxonomy, then each prompt's category and the intent distribution."""
    return [*build_intent_label_assets(settings), *build_intent_category_assets(settings)]


def label_columns(answers: list[list[str] | None]) -> dict[str, pl.Series]:
    labels = [answer or [] for answer in answers]
    return {
        "labels": pl.Series(labels, dtype=pl.List(pl.Utf8)),
        "label_keys": pl.Series([[normalize_label(x) for x in row] for row in labels], dtype=pl.List(pl.Utf8)),
    }


INTENT_LABELS = LLMStep(
    name="intent_labels",
    role="labeler",
    template="intent_label",
    parse=parse_labels,
    columns=label_columns,
    keep=(pl.all(),),
    output=LABELS_OUTPUT,
)


def build_intent_label_assets(settings: Settings) -> list:
    method = settings.method
    source_ins = attack_source_ins(settings)
    # The labeler's qualification blocks labeling in the same run (none is built without gold sources).
    qualification = [AssetKey("labeler_qualification")] if settings.qualification.labeler_sources else []

    @llm_asset(settings, INTENT_LABELS.name, GROUP, INTENT_LABELS.role, ins=source_ins, deps=qualification)
    def intent_labels(context: AssetExecutionContext, labeler: LLMResource, **sources: pl.DataFrame):
        """Free-form safety-theme intent labels for attack prompts (the paper's labeling instruction, zh/en),
        one row per prompt with the parsed labels, their normalized keys and the call's status."""
        params = params_view(sample_per_source=method.label_sample_per_source, seed=method.seed)
        sample = run_sql("intent/label_sample", prompts=concat_prompts(sources), params=params)
        table, batch = INTENT_LABELS.run(context, labeler, sample)
        yield Output(table, metadata={**batch.metadata(), "rows_in": sample.height})
        yield from llm_gate_results(context.asset_key, table["status"], method)

    # Not llm_asset: no blocking gate. A choice that fails or cannot be parsed only leaves its label to a person
    # (`unparsed_to_people`), so the line does not stop for it.
    @asset(
        group_name=GROUP, kinds={"duckdb", "llm"}, **role_step(settings, "labeler"), ins={"intent_labels": AssetIn()}
    )
    def taxonomy_choices(context: AssetExecutionContext, labeler: LLMResource, intent_labels: pl.DataFrame):
        """The labeler's constrained choice for each raw intent label the taxonomy file leaves proposed or
        unmapped (before a person): one of the 14 categories or NONE (template taxonomy_choice, the categories
        listed from the taxonomy file), with its confidence where the backend scores the options (the option's
        probability over the 15; null on an `openai` endpoint, which answers once at temperature 0:
        defs/intent/choice.py). `outcome`: `chosen` (a category at confidence >= method.
        taxonomy_choice_min_confidence; label_taxonomy applies it as status llm_choice), `unsure` or `unparsed`
        (the label goes to the taxonomy queue with the choice as its proposal)."""
        taxonomy = Taxonomy.load(settings.taxonomy_path)
        rows = open_intent_labels(intent_labels, taxonomy)
        choices, batch = choose(labeler, rows, taxonomy, context.log, method.taxonomy_choice_scores)
        table = with_outcomes(choices, method.taxonomy_choice_min_confidence)
        counts = {o: int((table["outcome"] == o).sum()) for o in (CHOSEN, UNSURE, UNPARSED)}
        yield Output(
            table,
            metadata={
                **batch.metadata(),
                "labels_in": rows.height,
                "chosen_confidently": counts[CHOSEN],
                "unsure_to_people": counts[UNSURE],
                "unparsed_to_people": counts[UNPARSED],
                "min_confidence": method.taxonomy_choice_min_confidence,
                "mode": table["mode"][0] if table.height else None,
                "by_choice": {str(k): int(v) for k, v in table["choice"].value_counts().sort("choice").iter_rows()},
            },
        )

    review_dir = settings.evaluation.review_dir
    decisions_file = review_dir / "taxonomy_decisions.jsonl"
    queue_file = review_dir / "taxonomy_queue.jsonl"

    @asset(group_name=GROUP, kinds={"duckdb", "json"})
    def taxonomy_decisions(context: AssetExecutionContext) -> pl.DataFrame:
        """The reviewers' decisions on raw intent labels from <review_dir>/taxonomy_decisions.jsonl (append-only,
        written by the review page's taxonomy queue; the latest per label key wins): the paper merged its raw
        labels by manual annotation (§3.2). Malformed lines and decisions that are no category are listed in
        the metadata, never dropped silently. Re-read on every build, like review_decisions."""
        table, problems = read_taxonomy_decisions(decisions_file)
        context.add_output_metadata(
            {
                "decisions_file": MetadataValue.path(str(decisions_file)),
                "malformed_lines": len(problems),
                "problems": problems[:20],
            }
        )
        return table

    @asset(
        group_name=GROUP,
        kinds={"duckdb", "polars", "json"},
        ins={
            **source_ins,
            "intent_labels": AssetIn(),
            "taxonomy_choices": AssetIn(),
            "taxonomy_decisions": AssetIn(),
        },
    )
    def label_taxonomy(
        context: AssetExecutionContext,
        intent_labels: pl.DataFrame,
        taxonomy_choices: pl.DataFrame,
        taxonomy_decisions: pl.DataFrame,
        **sources: pl.DataFrame,
    ) -> pl.DataFrame:
        """Each raw intent label and each source category mapped to one of the 14 categories through the
        reviewed file (status accepted or rule); the long tail takes the labeler's confident choice
        (taxonomy_choices: status llm_choice), else gets a `proposed` category (the labeler's unsure choice, or
        the nearest reviewed label's) and a place in the taxonomy queue (<review_dir>/taxonomy_queue.jsonl,
        `madef review` → /taxonomy) until a reviewer decides (status reviewed, or ignored with no category; a
        decision also overrides an llm_choice), as the paper merged raw labels by hand (§3.2)."""
        taxonomy = Taxonomy.load(settings.taxonomy_path)
        mapped = label_taxonomy_table(intent_labels, concat_prompts(sources), taxonomy)
        mapped = apply_taxonomy_choices(mapped, taxonomy_choices)
        queue = taxonomy_queue(mapped)
        write_jsonl_atomically(queue_file, queue)
        table = apply_taxonomy_decisions(mapped, taxonomy_decisions)
        decided = set(taxonomy_decisions["review_key"])
        by_status = table.group_by(["kind", "status"]).len().sort(["kind", "status"])
        context.add_output_metadata(
            {
                "taxonomy_file": MetadataValue.path(str(settings.taxonomy_path)),
                "queue_file": MetadataValue.path(str(queue_file)),
                "decisions_file": MetadataValue.path(str(decisions_file)),
                "queue_pending": sum(item["review_key"] not in decided for item in queue),
                "by_status": {f"{k}/{s}": int(n) for k, s, n in by_status.iter_rows()},
            }
        )
        return table

    return [intent_labels, taxonomy_choices, taxonomy_decisions, label_taxonomy]


def build_intent_category_assets(settings: Settings) -> list:
    @asset(
        group_name=GROUP,
        kinds={"duckdb", "sql"},
        ins={**attack_source_ins(settings), "intent_labels": AssetIn(), "label_taxonomy": AssetIn()},
        check_specs=[coverage_check_spec()],
    )
    def prompt_categories(
        context: AssetExecutionContext,
        intent_labels: pl.DataFrame,
        label_taxonomy: pl.DataFrame,
        **sources: pl.DataFrame,
    ):
        """One of the 14 categories for every attack prompt (majority of its mapped intent labels, else its
        source category) with the origin and whether labeler and source agree."""
        table = run_sql(
            "intent/prompt_categories",
            prompts=concat_prompts(sources),
            intent_labels=intent_labels,
            label_taxonomy=label_taxonomy,
        )
        both = table.filter(pl.col("agrees_with_source").is_not_null())
        yield Output(
            table,
            metadata={
                "labeler_source_agreement": round(float(both["agrees_with_source"].mean()), 4) if both.height else None,
                "by_origin": {str(k): int(v) for k, v in table["category_origin"].value_counts().iter_rows()},
            },
        )
        yield coverage_result(context.asset_key, table)

    @asset(group_name=GROUP, kinds={"duckdb", "sql"})
    def intent_distribution(
        context: AssetExecutionContext,
        intent_labels: pl.DataFrame,
        prompt_categories: pl.DataFrame,
        label_taxonomy: pl.DataFrame,
    ) -> pl.DataFrame:
        """Prompts per source x category (a stacked bar chart) and the top 20 raw labels of each labeled source
        (one bar chart per source, bars coloured by category), as the paper's Figures 3-3..3-5 (§3.2); every
        chart is a PNG under <state_dir>/reports/ and shown in the metadata."""
        table = run_sql(
            "intent/intent_distribution",
            intent_labels=intent_labels,
            prompt_categories=prompt_categories,
            label_taxonomy=label_taxonomy,
            params=params_view(top_labels=TOP_LABELS),
        )
        overall, per_source = intent_chart_paths(table, settings.state_dir / "reports")
        charts = [
            stacked_bar_png(
                table.filter(pl.col("kind") == "source_category"),
                "source",
                "key",
                "prompts",
                "Attack prompts per source and category",
                overall,
                stack_order=CATEGORIES,
            )
        ]
        raw = table.filter(pl.col("kind") == "raw_label")
        charts += [
            bar_png(
                raw.filter(pl.col("source") == source),
                "key",
                "prompts",
                "category",
                f"Top {TOP_LABELS} intent labels: {source}",
                path,
                colour_order=CATEGORIES,
            )
            for source, path in per_source.items()
        ]
        context.add_output_metadata(
            {
                "chart": MetadataValue.md("\n\n".join(markdown_image(c) for c in charts)),
                "chart_paths": [str(c) for c in charts],
            }
        )
        return table

    return [prompt_categories, intent_distribution]
