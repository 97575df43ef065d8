"""Validation shared by every source: the normalized prompt schema and the quarantine rules."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import polars as pl

from madef_assets.defs.sources.readers import READERS
from madef_assets.defs.sources.records import RawRecord
from madef_assets.settings import SourceConfig

PROMPT_SCHEMA = {
    "prompt_id": pl.Utf8,
    "source": pl.Utf8,
    "lang": pl.Utf8,
    "prompt": pl.Utf8,
    "response": pl.Utf8,
    "source_category": pl.Utf8,
    "attack_method": pl.Utf8,
    "meta": pl.Utf8,
}
QUARANTINE_SCHEMA = {"source": pl.Utf8, "location": pl.Utf8, "reason": pl.Utf8, "raw": pl.Utf8}
RAW_EXCERPT_CHARS = 500

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LETTER = re.compile(r"[^\W\d_]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def prompt_id(source: str, lang: str, prompt: str) -> str:
    """Stable content hash of (source, lang, prompt): same text, same id, on any machine."""
    digest = hashlib.sha256("\x1f".join((source, lang, prompt)).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:20]


def detect_lang(text: str) -> str:
    """'zh' when at least 10% of the letters are CJK ideographs, else 'en'."""
    letters = len(_LETTER.findall(text))
    return "zh" if letters and len(_CJK.findall(text)) / letters >= 0.1 else "en"


def _printable(text: str) -> str:
    return _SURROGATE.sub("\ufffd", text)[:RAW_EXCERPT_CHARS]


@dataclass
class NormalizedSource:
    prompts: pl.DataFrame
    quarantine: pl.DataFrame
    rows_in: int

    @property
    def quarantine_share(self) -> float:
        return self.quarantine.height / self.rows_in if self.rows_in else 0.0


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


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
    response = _as_text(fields.get("response"))
    category = _as_text(fields.get("source_category"))
    if any(_SURROGATE.search(v) for v in (prompt, response, category) if v):
        return None, "non-UTF-8 bytes in a text field"
    if not prompt.strip():
        return None, "empty or whitespace-only prompt"
    if len(prompt) > max_prompt_chars:
        return None, f"prompt has {len(prompt)} characters, over the limit of {max_prompt_chars}"
    if known_categories is not None and category not in known_categories:
        return None, f"unknown category {category!r}"
    lang = fields.get("lang") or default_lang or detect_lang(prompt)
    attack_method = _as_text(fields.get("attack_method"))
    meta = fields.get("meta") or {}
    return {
        "prompt_id": prompt_id(source.name, lang, prompt),
        "source": source.name,
        "lang": lang,
        "prompt": prompt,
        "response": response,
        "source_category": category,
        "attack_method": attack_method,
        "meta": json.dumps(meta, ensure_ascii=False, default=str, sort_keys=True),
        "_native_id": fields.get("native_id"),
    }, None


def normalize_records(
    records: Iterable[tuple[RawRecord, str | None]],
    source: SourceConfig,
    known_categories: tuple[str, ...] | None,
    max_prompt_chars: int,
) -> NormalizedSource:
    rows: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    first_seen_id: dict[str, str] = {}
    first_seen_prompt: dict[str, str] = {}
    rows_in = 0
    for record, default_lang in records:
        rows_in += 1
        row, reason = validate_record(record, source, default_lang, known_categories, max_prompt_chars)
        if row is not None:
            native_id = row.pop("_native_id")
            if native_id is not None and native_id in first_seen_id:
                reason = f"duplicate id {native_id!r} (first at {first_seen_id[native_id]})"
            elif row["prompt_id"] in first_seen_prompt:
                reason = f"duplicate prompt (first at {first_seen_prompt[row['prompt_id']]})"
            else:
                if native_id is not None:
                    first_seen_id[native_id] = record.location
                first_seen_prompt[row["prompt_id"]] = record.location
                rows.append(row)
                continue
        rejected.append(
            {"source": source.name, "location": record.location, "reason": reason, "raw": _printable(record.raw)}
        )
    return NormalizedSource(
        prompts=pl.DataFrame(rows, schema=PROMPT_SCHEMA),
        quarantine=pl.DataFrame(rejected, schema=QUARANTINE_SCHEMA),
        rows_in=rows_in,
    )


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

    return normalize_records(records(), source, known, max_prompt_chars)
