"""What a receiver of the SFT set needs to know: the combined license terms of its rows and the dataset card
(Hugging Face form: YAML header, then what is in it, where it came from, how it was selected)."""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl
import yaml

from madef_assets.defs.reward.scores import RESPONSE_SAFETY_TEMPLATES
from madef_assets.defs.selection.export import CARD, LICENSES
from madef_assets.prompts import family_version
from madef_assets.reports import markdown_table
from madef_assets.settings import MethodConfig, Settings

PARQUET = "data/train-00000-of-00001.parquet"  # under export.DATA_DIR
UNKNOWN_TERMS = "unknown: check before use"
PERMISSIVE = ("Apache-2.0", "MIT", "BSD-2-Clause", "BSD-3-Clause")
CC = re.compile(r"CC-BY(?P<nc>-NC)?(?P<sa>-SA)?-(?P<version>\d\.\d)")
# The templates whose prompts built the set: intent labels, augmentation, responses and the reward features.
SFT_TEMPLATES = (
    "intent_label",
    "attack_rewrite",
    "derive_question",
    "safe_response",
    "instruction_safety",
)


@dataclass(frozen=True)
class CombinedTerms:
    terms: str  # e.g. "CC-BY-NC-SA-4.0", "permissive (attribution): Apache-2.0, MIT", UNKNOWN_TERMS
    reason: str
    hub_license: str | list[str]  # the card's `license:` (Hugging Face ids)


def combine_licenses(licenses: Mapping[str, str]) -> CombinedTerms:
    """The terms of a set whose rows come from these sources (source → license id): the strictest. An unknown
    or unrecognised license makes the whole set unknown; NC and SA of any Creative Commons source propagate
    (the set is CC BY[-NC][-SA] at the highest version present); otherwise attribution-only terms remain."""
    if not licenses:
        return CombinedTerms(UNKNOWN_TERMS, "no rows", "unknown")
    unknown = sorted(s for s, lic in licenses.items() if not (CC.fullmatch(lic) or lic in PERMISSIVE))
    if unknown:
        return CombinedTerms(UNKNOWN_TERMS, f"no known license for {', '.join(unknown)}", "unknown")
    cc = {source: CC.fullmatch(lic) for source, lic in licenses.items() if CC.fullmatch(lic)}
    nc = sorted(s for s, m in cc.items() if m["nc"])
    sa = sorted(s for s, m in cc.items() if m["sa"])
    if nc or sa:
        version = max(m["version"] for m in cc.values())
        terms = f"CC-BY{'-NC' if nc else ''}{'-SA' if sa else ''}-{version}"
        why = [
            f"{word} from {', '.join(f'{s} ({licenses[s]})' for s in names)}"
            for word, names in (("non-commercial", nc), ("share-alike", sa))
            if names
        ]
        return CombinedTerms(terms, "; ".join(why), terms.lower())
    ids = sorted(set(licenses.values()))
    return CombinedTerms(
        f"permissive (attribution): {', '.join(ids)}",
        "every source allows commercial use with attribution; keep each source's notice",
        [i.lower() for i in ids],
    )


def licenses_table(rows: pl.DataFrame, source_licenses: Mapping[str, str]) -> pl.DataFrame:
    """Every source with rows in the set (its `source` column): license and rows contributed."""
    counts = rows.group_by("source").len().sort("source")
    return pl.DataFrame(
        {
            "source": counts["source"],
            "license": [source_licenses.get(s, "unknown") for s in counts["source"]],
            "rows": counts["len"].cast(pl.Int64),
        }
    )


def size_category(rows: int) -> str:
    """Hugging Face's size_categories bucket."""
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < limit:
            return name
    return "1M<n<10M"


def card_header(rows: pl.DataFrame, terms: CombinedTerms) -> dict:
    return {
        "license": terms.hub_license,
        "language": sorted(set(rows["lang"].drop_nulls())),
        "size_categories": [size_category(rows.height)],
        "task_categories": ["text-generation"],
        "tags": ["safety", "alignment", "sft"],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": PARQUET}]}],
    }


def render_card(rows: pl.DataFrame, licenses: pl.DataFrame, terms: CombinedTerms, provenance: Mapping) -> str:
    """The dataset card. `rows`: the exported rows (category, lang, source, route); `provenance`: roles
    (role → model), templates (hashes), thresholds, contamination (dict), verdict (sentence or None)."""
    mix = rows.group_by("category", "lang", "source", "route").len("rows").sort("category", "lang", "source", "route")
    header = yaml.safe_dump(card_header(rows, terms), allow_unicode=True, sort_keys=False)
    verdict = provenance.get("verdict") or "no qualification verdict recorded"
    lines = [
        f"---\n{header}---",
        "",
        "# madef safety-alignment SFT set",
        "",
        f"{rows.height} instruction/response pairs (safety rows selected by perplexity, response safety and "
        "instruction safety, plus a general-instruction sample), as Parquet (`data/`) and as LLaMA-Factory JSON "
        "(`dataset_info.json`, dataset `madef_sft`). Columns: prompt_id, instruction, input, output, category, lang, "
        "source, route, perplexity, response_safety, instruction_safety (null for general rows).",
        "",
        "## License",
        "",
        f"**Combined terms of the whole set: {terms.terms}** ({terms.reason}). Generated rows carry "
        "the terms of the source they were derived from; the strictest terms of any row apply to the set.",
        "",
        markdown_table(licenses),
        "",
        "## Qualification",
        "",
        verdict,
        "",
        "## Contents by category, language, source and route",
        "",
        markdown_table(mix),
        "",
        "## Models",
        "",
        markdown_table(pl.DataFrame(list(provenance["roles"].items()), schema=["role", "model"], orient="row")),
        "",
        "## Prompt templates",
        "",
        *[f"- `{version}`" for version in provenance["templates"]],
        "",
        "## Selection thresholds",
        "",
        *[f"- {k}: {v}" for k, v in provenance["thresholds"].items()],
        "",
        "## Contamination check",
        "",
        *[f"- {k}: {v}" for k, v in provenance["contamination"].items()],
        "",
    ]
    return "\n".join(lines)


def response_safety_templates(method: MethodConfig) -> tuple[str, str]:
    """The reward step's response-safety templates as the profile chose them."""
    templates = RESPONSE_SAFETY_TEMPLATES[method.response_safety_prompt]
    return templates.pair, templates.single


def provenance(
    settings: Settings, references: Mapping[str, list], decontamination: Mapping, verdict: str | None
) -> dict:
    """What the card says about how the set was made: models, template hashes, thresholds, contamination."""
    method = settings.method
    roles = {
        role: ", ".join(f"{m.backend}:{m.model}" for m in (config, *config.panel))
        for role, config in settings.roles.items()
    }
    thresholds = {
        **method.selection.model_dump(),
        "sft_total": method.sft_total,
        "general_sample_size": method.general_sample_size,
        "decontaminate": method.decontaminate,
    }
    contamination = {
        "result": "passed (no SFT prompt shares a long n-gram with the reference)",
        "reference prompts": sum(len(texts) for texts in references.values()),
        "references": ", ".join(sorted(references)),
        "rows removed by decontamination": decontamination.get("rows_removed", "decontamination off"),
    }
    return {
        "roles": roles,
        "templates": [family_version(name) for name in (*SFT_TEMPLATES, *response_safety_templates(method))],
        "thresholds": thresholds,
        "contamination": contamination,
        "verdict": verdict,
    }


def shared_files(rows: pl.DataFrame, licenses: pl.DataFrame, terms: CombinedTerms, card: str) -> dict[str, bytes]:
    """The files beside the LLaMA-Factory JSON: the card, the licenses table (with the combined terms as its
    last row, source `(whole set)`) and the Parquet rows."""
    parquet = io.BytesIO()
    rows.write_parquet(parquet)
    combined = pl.DataFrame({"source": ["(whole set)"], "license": [terms.terms], "rows": [rows.height]})
    table = io.BytesIO()
    pl.concat([licenses, combined]).write_csv(table)
    return {CARD: card.encode("utf-8"), LICENSES: table.getvalue(), PARQUET: parquet.getvalue()}
