"""Validation shared by every source: the normalized prompt schema, the quarantine rules and, for
preference data sets, the choice of one row per prompt.

Every input record ends in exactly one place: a normalized row, a quarantine row (with location and
reason), or, for a preference data set, merged into the kept row of its prompt (counted, and listed in
that row's `meta.merged_from`): rows_in = rows_normalized + rows_quarantined + rows_merged.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import polars as pl

from madef_assets.defs.frames import PROMPT_SCHEMA
from madef_assets.defs.sources.readers import MERGE_BY_PROMPT, READERS
from madef_assets.defs.sources.records import RawRecord
from madef_assets.defs.sources.text import forbidden_char_problem, has_surrogate, visible
from madef_assets.settings import SourceConfig

QUARANTINE_SCHEMA = {"source": pl.Utf8, "location": pl.Utf8, "reason": pl.Utf8, "raw": pl.Utf8}
RAW_EXCERPT_CHARS = 500

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LETTER = re.compile(r"[^\W\d_]")


def prompt_id(source: str, lang: str, prompt: str) -> str:
    """Stable content hash of (source, lang, prompt): same text, same id, on any machine."""
    digest = hashlib.sha256("\x1f".join((source, lang, prompt)).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:20]


def detect_lang(text: str) -> str:
    """'zh' when at least 10% of the letters are CJK ideographs, else 'en'."""
    letters = len(_LETTER.findall(text))
    return "zh" if letters and len(_CJK.findall(text)) / letters >= 0.1 else "en"


def _printable(text: str) -> str:
    return visible(text[: RAW_EXCERPT_CHARS * 2])[:RAW_EXCERPT_CHARS]


def _strings(fields: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, text) for every string in a record's fields, dict keys and meta included, in field order;
    walked without recursion (readers bound the nesting)."""
    stack: list[tuple[str, Any]] = list(reversed(fields.items()))
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            yield where, value
        elif isinstance(value, dict):
            for key in reversed(value):
                stack.append((f"{where}.{key}", value[key]))
                if isinstance(key, str):
                    stack.append((f"{where} (a key)", key))
        elif isinstance(value, (list, tuple)):
            stack.extend((f"{where}[{index}]", item) for index, item in reversed(list(enumerate(value))))


def field_text_problem(fields: dict[str, Any]) -> str | None:
    """Why a record's text cannot be kept: bytes that were not UTF-8, or a control, bidirectional or
    invisible character (text.py) in any of its fields."""
    strings = list(_strings(fields))
    if any(has_surrogate(text) for _, text in strings):
        return "non-UTF-8 bytes in a text field"
    for where, text in strings:
        problem = forbidden_char_problem(text, where)
        if problem:
            return problem
    return None


@dataclass
class NormalizedSource:
    prompts: pl.DataFrame
    quarantine: pl.DataFrame
    rows_in: int
    rows_merged: int = 0

    @property
    def quarantine_share(self) -> float:
        return self.quarantine.height / self.rows_in if self.rows_in else 0.0


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str, allow_nan=False)


def validate_record(
    record: RawRecord,
    source: SourceConfig,
    default_lang: str | None,
    known_categories: tuple[str, ...] | None,
    max_prompt_chars: int,
) -> tuple[dict[str, Any] | None, str | None]:
    """The normalized row for a record, or the reason it goes to quarantine."""
    if record.error:
        return None, record.error
    fields = record.fields or {}
    prompt = fields.get("prompt")
    if prompt is None:
        return None, "missing field 'prompt'"
    if not isinstance(prompt, str):
        return None, f"prompt is a {type(prompt).__name__}, not a string"
    problem = field_text_problem(fields)
    if problem:
        return None, problem
    try:
        response = _as_text(fields.get("response"))
        category = _as_text(fields.get("source_category"))
        attack_method = _as_text(fields.get("attack_method"))
        meta = _meta_json(fields.get("meta") or {})
    except ValueError:  # json.dumps(allow_nan=False): a NaN or infinite float (from Parquet) is not JSON
        return None, "a number in the record is NaN or infinite, which JSON cannot hold"
    if not prompt.strip():
        return None, "empty or whitespace-only prompt"
    if len(prompt) > max_prompt_chars:
        return None, f"prompt has {len(prompt)} characters, over the limit of {max_prompt_chars}"
    if known_categories is not None and category not in known_categories:
        return None, f"unknown category {category!r}"
    lang = fields.get("lang") or default_lang or detect_lang(prompt)
    return {
        "prompt_id": prompt_id(source.name, lang, prompt),
        "source": source.name,
        "lang": lang,
        "prompt": prompt,
        "response": response,
        "source_category": category,
        "attack_method": attack_method,
        "meta": meta,
        "_native_id": fields.get("native_id"),
        "_rank": fields.get("preference_rank") or 0,
    }, None


def _meta_json(meta: dict[str, Any]) -> str:
    return json.dumps(meta, ensure_ascii=False, default=str, sort_keys=True, allow_nan=False)


@dataclass
class _Kept:
    """The row kept so far for one prompt of a preference data set, and the rows merged into it."""

    index: int
    location: str
    raw: str
    row: dict[str, Any]
    rank: int
    merged: list[tuple[int, str]]


def _merge_into(kept: dict[str, _Kept], index: int, record: RawRecord, row: dict[str, Any]) -> None:
    """Keep one row per prompt: the lowest preference rank, the first in file order among equals."""
    rank = row.pop("_rank")
    current = kept.get(row["prompt_id"])
    if current is None:
        kept[row["prompt_id"]] = _Kept(index, record.location, _printable(record.raw), row, rank, [])
    elif rank < current.rank:
        merged = [*current.merged, (current.index, current.location)]
        kept[row["prompt_id"]] = _Kept(index, record.location, _printable(record.raw), row, rank, merged)
    else:
        current.merged.append((index, record.location))


def _with_merged(kept: _Kept) -> dict[str, Any]:
    if not kept.merged:
        return kept.row
    meta = json.loads(kept.row["meta"])
    meta["merged_rows"] = len(kept.merged)
    meta["merged_from"] = [location for _, location in sorted(kept.merged)]
    return {**kept.row, "meta": _meta_json(meta)}


def normalize_records(
    records: Iterable[tuple[RawRecord, str | None]],
    source: SourceConfig,
    known_categories: tuple[str, ...] | None,
    max_prompt_chars: int,
    merge_by_prompt: bool = False,
) -> NormalizedSource:
    """Validate every record; with merge_by_prompt (preference data sets) keep one row per prompt
    first (`_merge_into`), then apply the duplicate-id and duplicate-prompt rules to what is kept."""
    rows: list[tuple[int, dict[str, Any]]] = []
    rejected: list[tuple[int, dict[str, Any]]] = []
    kept: dict[str, _Kept] = {}
    first_seen_id: dict[str, str] = {}
    first_seen_prompt: dict[str, str] = {}

    def deduplicate(index: int, location: str, raw: str, row: dict[str, Any]) -> None:
        native_id = row.pop("_native_id")
        if native_id is not None and native_id in first_seen_id:
            reason = f"duplicate id {native_id!r} (first at {first_seen_id[native_id]})"
        elif row["prompt_id"] in first_seen_prompt:
            reason = f"duplicate prompt (first at {first_seen_prompt[row['prompt_id']]})"
        else:
            if native_id is not None:
                first_seen_id[native_id] = location
            first_seen_prompt[row["prompt_id"]] = location
            rows.append((index, row))
            return
        rejected.append((index, _quarantine_row(source, location, reason, raw)))

    rows_in = 0
    for index, (record, default_lang) in enumerate(records):
        rows_in += 1
        row, reason = validate_record(record, source, default_lang, known_categories, max_prompt_chars)
        if row is None:
            rejected.append((index, _quarantine_row(source, record.location, reason, record.raw)))
        elif merge_by_prompt:
            _merge_into(kept, index, record, row)
        else:
            row.pop("_rank")
            deduplicate(index, record.location, record.raw, row)
    for winner in sorted(kept.values(), key=lambda k: k.index):
        deduplicate(winner.index, winner.location, winner.raw, _with_merged(winner))
    rows.sort(key=lambda item: item[0])
    rejected.sort(key=lambda item: item[0])
    return NormalizedSource(
        prompts=pl.DataFrame([row for _, row in rows], schema=PROMPT_SCHEMA),
        quarantine=pl.DataFrame([row for _, row in rejected], schema=QUARANTINE_SCHEMA),
        rows_in=rows_in,
        rows_merged=sum(len(k.merged) for k in kept.values()),
    )


def _quarantine_row(source: SourceConfig, location: str, reason: str | None, raw: str) -> dict[str, Any]:
    return {"source": source.name, "location": location, "reason": reason, "raw": _printable(raw)}


def normalize_source(source: SourceConfig, max_prompt_chars: int) -> NormalizedSource:
    """Read every configured file of a source and split its records into prompts and quarantine."""
    if source.reader not in READERS:
        raise ValueError(f"sources.{source.name}.reader: unknown reader {source.reader!r}; known: {sorted(READERS)}")
    if not source.files:
        raise ValueError(f"sources.{source.name}.files: no files configured")
    reader, default_categories = READERS[source.reader]
    known = source.known_categories if source.known_categories is not None else default_categories

    def records():
        for file in source.files:
            for record in reader(file, source):
                yield record, file.lang

    return normalize_records(records(), source, known, max_prompt_chars, source.reader in MERGE_BY_PROMPT)
