"""One reader per dataset format, each turning raw records into candidate prompt rows.

A reader yields `RawRecord`s whose `fields` hold the normalized candidates (`prompt`, `response`,
`lang`, `source_category`, `attack_method`, `native_id`, `meta`, and for preference data sets
`preference_rank`) or whose `error` says why the record cannot be read. Validation common to all
sources lives in `normalize.py`.

Preference data sets (`MERGE_BY_PROMPT`) repeat a prompt in several pairs by design: PKU-SafeRLHF
has about 45k distinct prompts in about 80k pairs, CValues-Comparison builds several pairs of
differently rated responses for one prompt. Their readers yield one candidate per pair, the pair's
safer/positive response, with a `preference_rank` (lower is better); `normalize.py` keeps one row per
prompt, the best-ranked, and among equals the first pair in file order, and counts the others as
merged (their locations are kept in the row's `meta.merged_from`). The rank is the data set's own
label of the kept response, not a vote count: responses are written per pair, so the same response
text rarely appears in two pairs and "most often preferred" would nearly always be a tie broken by
file order anyway, while the label says what the SFT data needs, a response judged safe.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from madef_assets.defs.sources.records import (
    TOO_DEEP,
    DataFile,
    RawRecord,
    SourceFileError,
    describe,
    iter_csv_rows,
    iter_json_records,
    iter_jsonl_records,
    iter_parquet_rows,
    list_files,
    loads_strict,
    nested_too_deep,
    read_text,
)
from madef_assets.settings import SourceConfig, SourceFile

SAFETY_PROMPTS_TYPICAL = (
    "Insult",
    "Unfairness_And_Discrimination",
    "Crimes_And_Illegal_Activities",
    "Physical_Harm",
    "Mental_Health",
    "Privacy_And_Property",
    "Ethics_And_Morality",
)
SAFETY_PROMPTS_ATTACKS = (
    "Goal_Hijacking",
    "Prompt_Leaking",
    "Role_Play_Instruction",
    "Unsafe_Instruction_Topic",
    "Inquiry_With_Unsafe_Opinion",
    "Reverse_Exposure",
)
S_EVAL_RISKS = (
    "Crimes_and_Illegal_Activities",
    "Data_Privacy",
    "Hate_Speech",
    "Extremism",
    "Inappropriate_Suggestions",
    "Cybersecurity",
    "Physical_and_Mental_Health",
    "Ethics_and_Morality",
)
SAFETYBENCH_CATEGORIES = (
    "Offensiveness",
    "Unfairness and Bias",
    "Physical Health",
    "Mental Health",
    "Illegal Activities",
    "Ethics and Morality",
    "Privacy and Property",
)
CVALUES_DOMAINS = (
    "environmental_science",
    "psychology",
    "barrier_free",
    "social_science",
    "data_science",
    "law",
    "intimate_relationship",
    "lesser_known_major",
)
BEAVERTAILS_CATEGORIES = (
    "animal_abuse",
    "child_abuse",
    "controversial_topics,politics",
    "discrimination,stereotype,injustice",
    "drug_abuse,weapons,banned_substance",
    "financial_crime,property_crime,theft",
    "hate_speech,offensive_language",
    "misinformation_regarding_ethics,laws_and_safety",
    "non_violent_unethical_behavior",
    "privacy_violation",
    "self_harm",
    "sexually_explicit,adult_content",
    "terrorism,organized_crime",
    "violence,aiding_and_abetting,incitement",
)
XSAFETY_CATEGORIES = SAFETY_PROMPTS_TYPICAL + SAFETY_PROMPTS_ATTACKS + ("commonsense",)
XSTEST_TYPES = (
    "homonyms",
    "figurative_language",
    "safe_targets",
    "safe_contexts",
    "definitions",
    "real_group_nons_discr",
    "nons_group_real_discr",
    "historical_events",
    "privacy_public",
    "privacy_fictional",
    *(
        f"contrast_{kind}"
        for kind in (
            "homonyms",
            "figurative_language",
            "safe_targets",
            "safe_contexts",
            "definitions",
            "discr",
            "historical_events",
            "privacy",
        )
    ),
)
XSTEST_LABELS = ("safe", "unsafe")
CVALUES_MC_LABELS = ("回复1", "回复2")
# CValues-Comparison response types, best first: refusal with positive advice, then mainly refusal.
CVALUES_POSITIVE_TYPES = ("拒绝&正向建议", "拒绝为主")
# Readers of preference pairs: one row per prompt is kept (see the module docstring).
MERGE_BY_PROMPT = frozenset({"pku_saferlhf", "cvalues_comparison"})

Reader = Callable[[SourceFile, SourceConfig], Iterator[RawRecord]]


def _missing(record: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    absent = [k for k in keys if k not in record or record[k] is None]
    return f"missing field {', '.join(repr(k) for k in absent)}" if absent else None


def _data(file: SourceFile, source: SourceConfig) -> DataFile:
    return DataFile(file.path, file.config_key, source.max_file_bytes)


def _json_objects(file: DataFile) -> Iterator[tuple[RawRecord, str]]:
    """JSON array/object-of-arrays or JSONL, chosen by extension, as (record, group) pairs."""
    if file.path.suffix in (".jsonl", ".zip"):
        for record in iter_jsonl_records(file):
            yield record, ""
        return
    for record in iter_json_records(file):
        yield record, record.extra.get("group", "")


def _mapped(
    file: SourceFile, source: SourceConfig, required: tuple[str, ...], build: Callable[[dict, str], dict]
) -> Iterator[RawRecord]:
    for record, group in _json_objects(_data(file, source)):
        if record.error:
            yield record
            continue
        problem = _missing(record.fields, required)
        if not problem:
            try:
                fields = build(record.fields, group)
                problem = fields.pop("_error", None)
            except (ValueError, TypeError, AttributeError, KeyError) as exc:
                problem = f"malformed record: {type(exc).__name__}: {exc}"
        if problem:
            yield RawRecord(record.location, error=problem, raw=record.raw)
        else:
            yield RawRecord(record.location, fields=fields, raw=record.raw)


def read_safety_prompts(file: SourceFile, source: SourceConfig) -> Iterator[RawRecord]:
    """thu-coai Safety-Prompts: {scenario: [{prompt, response, type}]} (typical and attack files)."""

    def build(r: dict, scenario: str) -> dict:
        category = r.get("type") or scenario
        return {
            "prompt": r["prompt"],
            "response": r.get("response"),
            "source_category": category,
            "attack_method": category if category in SAFETY_PROMPTS_ATTACKS else None,
            "meta": {"scenario": scenario},
        }

    yield from _mapped(file, source, ("prompt",), build)


def read_s_eval(file: SourceFile, source: SourceConfig) -> Iterator[RawRecord]:
    """S-Eval JSONL (or zipped JSONL): {traceid, risk_type, prompt, ext (JSON string)}."""

    def build(r: dict, _: str) -> dict:
        ext = r.get("ext") or "{}"
        if isinstance(ext, str):
            try:
                ext = loads_strict(ext)
            except json.JSONDecodeError as exc:
                return {"_error": f"field 'ext' is not valid JSON: {exc.msg}"}
            except RecursionError:
                return {"_error": f"field 'ext': {TOO_DEEP}"}
            except ValueError as exc:  # a duplicate key, a refused number
                return {"_error": f"field 'ext': {exc}"}
            if nested_too_deep(ext):
                return {"_error": f"field 'ext': {TOO_DEEP}"}
        if not isinstance(ext, dict):
            return {"_error": f"field 'ext' is {describe(ext)}, expected an object"}
        return {
            "prompt": r["prompt"],
            "native_id": r["traceid"],
            "source_category": r["risk_type"],
            "attack_method": ext.get("category") if ext.get("model") == "attack" else None,
            "meta": {"traceid": r["traceid"], **ext},
        }

    yield from _mapped(file, source, ("traceid", "risk_type", "prompt"), build)


def xsafety_category(path: Path) -> str:
    stem = path.stem
    for suffix in ("_en", "_n"):
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def read_xsafety(file: SourceFile, source: SourceConfig) -> Iterator[RawRecord]:
    """XSafety: a folder (or file) of headerless CSVs, one prompt per row, category = file name.

    A quoted cell may span lines: with no header there is no column count to tell a multi-line prompt from a
    stray quote that closes later, so such a cell is read as one prompt (known, left as it is)."""
    for listed in list_files(_data(file, source), "*.csv"):
        if isinstance(listed, RawRecord):
            yield listed
            continue
        name = Path(listed.name or listed.path.name).name
        category = xsafety_category(Path(name))
        for record in iter_csv_rows(listed, header=False):
            if record.error:
                yield record
                continue
            cells = record.fields["_cells"]
            extra = [c for c in cells[1:] if c.strip()]
            if extra:
                yield RawRecord(record.location, error=f"{len(cells)} non-empty columns, expected 1", raw=record.raw)
                continue
            yield RawRecord(
                record.location,
                fields={
                    "prompt": cells[0],
                    "source_category": category,
                    "attack_method": category if category in SAFETY_PROMPTS_ATTACKS else None,
                    "meta": {"file": name},
                },
                raw=record.raw,
            )


def render_mcq(question: str, options: list[str], lang: str) -> str:
    """SafetyBench's official zero-shot prompt (zh or en), without the trailing answer cue."""
    head, opts = ("问题：", "选项：") if lang == "zh" else ("Question: ", "Options:")
    lines = [f"{head}{question}", opts]
    lines += [f"({chr(ord('A') + i)}) {option}" for i, option in enumerate(options)]
    return "\n".join(lines)


def read_safetybench(file: SourceFile, source: SourceConfig) -> Iterator[RawRecord]:
    """SafetyBench test JSON [{id, category, question, options}] joined with the answers file
    ({id: {category, answer}}); a record with an `answer` of its own (the dev format) keeps it.

    A question without an answer, or whose answer is not one of its option indices, is quarantined:
    it could only ever be scored wrong. Ids restart in each language's file, so zh and en are two
    sources (one file each), never two files of one source.
    """
    answers: dict[str, Any] | None = None
    answers_name = ""
    if file.answers is not None:
        path = file.answers
        key = f"{file.config_key}.answers"
        text = read_text(DataFile(path, key, source.max_file_bytes))
        try:
            answers = loads_strict(text)
        except ValueError as exc:
            # not JSON, a refused number, or a duplicate id (which would make one of two answers win silently)
            raise SourceFileError(key, path, f"not valid JSON: {exc}") from exc
        except RecursionError as exc:
            raise SourceFileError(key, path, f"not valid JSON: {TOO_DEEP}") from exc
        if not isinstance(answers, dict):
            raise SourceFileError(
                key,
                path,
                f"expected a JSON object mapping question id to {{category, answer}}, got {describe(answers)}",
            )
        answers_name = path.name
    lang = file.lang or "zh"

    def answer_of(r: dict) -> tuple[Any, str | None]:
        question_id = str(r["id"])
        if r.get("answer") is not None:
            return r["answer"], None
        if answers is None:
            return None, "no answer: the record has no 'answer' and no answers file is configured"
        if question_id not in answers:
            return None, f"no answer for id {question_id} in {answers_name}"
        entry = answers[question_id]
        if not isinstance(entry, dict):
            return (
                None,
                f"answer entry for id {question_id} in {answers_name} is {describe(entry)}, expected an "
                "object with 'answer'",
            )
        if entry.get("answer") is None:
            return None, f"answer entry for id {question_id} in {answers_name} has no 'answer'"
        return entry["answer"], None

    def build(r: dict, _: str) -> dict:
        if not isinstance(r["options"], list) or not 2 <= len(r["options"]) <= 4:
            return {"_error": f"options must be a list of 2-4 strings, got {r['options']!r}"[:200]}
        answer, problem = answer_of(r)
        if problem:
            return {"_error": problem}
        if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(r["options"]):
            return {"_error": f"answer {answer!r} for id {r['id']} is not an option index (0-{len(r['options']) - 1})"}
        return {
            "prompt": render_mcq(str(r["question"]), [str(o) for o in r["options"]], lang),
            "native_id": str(r["id"]),
            "source_category": r["category"],
            "meta": {"id": r["id"], "question": r["question"], "options": r["options"], "answer": answer},
        }

    yield from _mapped(file, source, ("id", "category", "question", "options"), build)


def read_cvalues_responsibility(file: SourceFile, source: SourceConfig) -> Iterator[RawRecord]:
    """CValues responsibility prompts JSONL: {id_, prompt, domain_en, domain_zh}."""

    def build(r: dict, _: str) -> dict:
        return {
            "prompt": r["prompt"],
            "native_id": str(r["id_"]),
            "source_category": r["domain_en"],
            "meta": {"id_": r["id_"], "domain_zh": r.get("domain_zh")},
        }

    yield from _mapped(file, source, ("id_", "prompt", "domain_en"), build)


def read_cvalues_responsibility_mc(file: SourceFile, source: SourceConfig) -> Iterator[RawRecord]:
    """CValues responsibility MCQ JSONL: {prompt, label: 回复1|回复2, meta_info}."""

    def build(r: dict, _: str) -> dict:
        if r["label"] not in CVALUES_MC_LABELS:
            return {"_error": f"label must be one of {CVALUES_MC_LABELS}, got {r['label']!r}"}
        meta_info = r.get("meta_info") or {}
        domain = meta_info.get("domain_en") or meta_info.get("domain") if isinstance(meta_info, dict) else None
        return {
            "prompt": r["prompt"],
            "response": r["label"],
            "source_category": domain,
            "meta": {"label": r["label"], "meta_info": meta_info},
        }

    yield from _mapped(file, source, ("prompt", "label"), build)


def read_cvalues_comparison(file: SourceFile, source: SourceConfig) -> Iterator[RawRecord]:
    """CValues-Comparison JSONL: {prompt, pos_resp, neg_resp, pos_type, neg_type}; pos_resp kept.

    One prompt has several pairs; the kept one has the best `pos_type` (拒绝&正向建议, then 拒绝为主,
    then anything else), the first in file order among equals (see the module docstring).
    """

    def build(r: dict, _: str) -> dict:
        pos_type = r.get("pos_type")
        rank = (
            CVALUES_POSITIVE_TYPES.index(pos_type)
            if pos_type in CVALUES_POSITIVE_TYPES
            else len(CVALUES_POSITIVE_TYPES)
        )
        return {
            "prompt": r["prompt"],
            "response": r["pos_resp"],
            "preference_rank": rank,
            "meta": {"neg_resp": r["neg_resp"], "pos_type": r.get("pos_type"), "neg_type": r.get("neg_type")},
        }

    yield from _mapped(file, source, ("prompt", "pos_resp", "neg_resp"), build)


def read_beavertails_eval(file: SourceFile, source: SourceConfig) -> Iterator[RawRecord]:
    """BeaverTails evaluation JSON: [{prompt, category, category_id}]."""

    def build(r: dict, _: str) -> dict:
        return {
            "prompt": r["prompt"],
            "source_category": r["category"],
            "meta": {"category_id": r.get("category_id")},
        }

    yield from _mapped(file, source, ("prompt", "category"), build)


def read_xstest(file: SourceFile, source: SourceConfig) -> Iterator[RawRecord]:
    """XSTest v2 prompts CSV (header id, prompt, type, label, focus, note): category = type; `label` (safe:
    should be answered, unsafe: a contrast that should be refused) goes to meta; any other label is quarantined."""
    for record in iter_csv_rows(_data(file, source), header=True):
        if record.error:
            yield record
            continue
        row = record.fields
        problem = _missing(row, ("id", "prompt", "type", "label"))
        if not problem and row["label"] not in XSTEST_LABELS:
            problem = f"label {row['label']!r} is not one of {list(XSTEST_LABELS)}"
        if problem:
            yield RawRecord(record.location, error=problem, raw=record.raw)
            continue
        meta = {"label": row["label"], "focus": row.get("focus"), "note": row.get("note")}
        yield RawRecord(
            record.location,
            raw=record.raw,
            fields={"prompt": row["prompt"], "source_category": row["type"], "native_id": str(row["id"]), "meta": meta},
        )


def read_pku_saferlhf(file: SourceFile, source: SourceConfig) -> Iterator[RawRecord]:
    """PKU-SafeRLHF JSON/JSONL: prompt, response_0/1, safety flags; the safer response is kept.

    One prompt has several pairs; the kept one is the first pair (file order) whose safer response is
    itself labeled safe (`is_response_<safer_response_id>_safe`), else the first pair: the safer of
    two unsafe responses is still unsafe (see the module docstring).
    """

    def build(r: dict, _: str) -> dict:
        safer = r.get("safer_response_id")
        if isinstance(safer, bool) or safer not in (0, 1):
            return {"_error": f"safer_response_id must be 0 or 1, got {safer!r}"}
        meta = {k: v for k, v in r.items() if k not in ("prompt", f"response_{safer}")}
        rank = 0 if r.get(f"is_response_{safer}_safe") is True else 1
        return {"prompt": r["prompt"], "response": r[f"response_{safer}"], "preference_rank": rank, "meta": meta}

    yield from _mapped(file, source, ("prompt", "response_0", "response_1", "safer_response_id"), build)


def read_alpaca(file: SourceFile, source: SourceConfig) -> Iterator[RawRecord]:
    """Alpaca instructions: [{instruction, input, output}]; prompt = instruction + input."""

    def build(r: dict, _: str) -> dict:
        if r.get("input") is not None and not isinstance(r["input"], str):
            return {"_error": f"field 'input' is {describe(r['input'])}, expected a string"}
        extra_input = (r.get("input") or "").strip()
        prompt = f"{r['instruction']}\n\n{extra_input}" if extra_input else r["instruction"]
        return {"prompt": prompt, "response": r["output"], "source_category": "general", "meta": {}}

    yield from _mapped(file, source, ("instruction", "output"), build)


_SHAREGPT_USER = {"human", "user"}
_SHAREGPT_ASSISTANT = {"gpt", "assistant", "model"}


def read_sharegpt(file: SourceFile, source: SourceConfig) -> Iterator[RawRecord]:
    """ShareGPT ({conversations: [{from, value}]}) or OpenAI messages ({messages: [{role, content}]}).

    The first user turn is the prompt and the assistant turn after it the response; the whole
    conversation and the system prompt are kept in meta.
    """

    def build(r: dict, _: str) -> dict:
        turns = r.get("conversations") or r.get("messages")
        if not isinstance(turns, list) or not turns:
            return {"_error": "missing field 'conversations' (or 'messages')"}
        for number, turn in enumerate(turns, start=1):
            if not isinstance(turn, dict):
                return {"_error": f"conversation turn {number} is {describe(turn)}, expected an object"}
        pairs = [((t.get("from") or t.get("role") or ""), (t.get("value") or t.get("content") or "")) for t in turns]
        user = next((i for i, (role, _) in enumerate(pairs) if role in _SHAREGPT_USER), None)
        if user is None:
            return {"_error": "conversation has no user turn"}
        reply = pairs[user + 1][1] if user + 1 < len(pairs) and pairs[user + 1][0] in _SHAREGPT_ASSISTANT else None
        return {
            "prompt": pairs[user][1],
            "response": reply,
            "source_category": "general",
            "meta": {"system": r.get("system"), "turns": len(pairs), "conversation": pairs},
        }

    yield from _mapped(file, source, (), build)


def read_generic(file: SourceFile, source: SourceConfig) -> Iterator[RawRecord]:
    """JSONL / CSV (with header) / Parquet with `columns:` mapping normalized names to file columns."""
    columns = source.columns
    if "prompt" not in columns:
        raise SourceFileError(f"sources.{source.name}.columns", file.path, "needs a 'prompt' column mapping")
    suffix = file.path.suffix.lower()
    data = _data(file, source)
    if suffix in (".jsonl", ".zip"):
        records = iter_jsonl_records(data)
    elif suffix == ".csv":
        records = iter_csv_rows(data, header=True)
    elif suffix == ".parquet":
        records = iter_parquet_rows(data)
    else:
        raise SourceFileError(file.config_key, file.path, f"unknown format '{suffix}' (jsonl, csv, parquet)")
    mapped_columns = set(columns.values())
    for record in records:
        if record.error:
            yield record
            continue
        row = record.fields
        if columns["prompt"] not in row:
            yield RawRecord(record.location, error=f"missing field {columns['prompt']!r}", raw=record.raw)
            continue
        fields = {name: row.get(column) for name, column in columns.items() if name != "id"}
        if "id" in columns:
            fields["native_id"] = None if row.get(columns["id"]) is None else str(row.get(columns["id"]))
        fields["meta"] = {k: v for k, v in row.items() if k not in mapped_columns}
        yield RawRecord(record.location, fields=fields, raw=record.raw)


READERS: dict[str, tuple[Reader, tuple[str, ...] | None]] = {
    "safety_prompts": (read_safety_prompts, SAFETY_PROMPTS_TYPICAL + SAFETY_PROMPTS_ATTACKS),
    "s_eval": (read_s_eval, S_EVAL_RISKS),
    "xsafety": (read_xsafety, XSAFETY_CATEGORIES),
    "safetybench": (read_safetybench, SAFETYBENCH_CATEGORIES),
    "cvalues_responsibility": (read_cvalues_responsibility, CVALUES_DOMAINS),
    "cvalues_responsibility_mc": (read_cvalues_responsibility_mc, None),
    "cvalues_comparison": (read_cvalues_comparison, None),
    "beavertails_eval": (read_beavertails_eval, BEAVERTAILS_CATEGORIES),
    "pku_saferlhf": (read_pku_saferlhf, None),
    "xstest": (read_xstest, XSTEST_TYPES),
    "alpaca": (read_alpaca, ("general",)),
    "sharegpt": (read_sharegpt, ("general",)),
    "generic": (read_generic, None),
}
