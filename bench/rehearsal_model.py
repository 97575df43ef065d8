"""The served model of the rehearsal: answers in the form each of madef's prompts asks for, so the whole
graph runs against a local OpenAI-compatible server (madef_assets_tests/openai_server.py, which adds the
providers' faults: 429, 5xx, timeouts, malformed bodies, moderation, refusals).

Quality is not the point: every answer is a deterministic function of the prompt. The labeler names a
category whose keywords the prompt contains (else one chosen by hash), so generated prompts that carry
their category's keyword survive the rejection sampling and the others are rejected, as in production.
"""

from __future__ import annotations

import hashlib
import json
import re

import yaml

from madef_assets.project import PROJECT_ROOT
from madef_assets.prompts import TEMPLATE_DIR

TAXONOMY = yaml.safe_load((PROJECT_ROOT / "config" / "taxonomy.yaml").read_text(encoding="utf-8"))
CATEGORIES = list(TAXONOMY["categories"])
_CJK = re.compile(r"[\u4e00-\u9fff]")


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8], "big")


def _prefix(text: str) -> str:
    return text.split("{", 1)[0]


def _prefixes(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(
        _prefix(p.read_text(encoding="utf-8")) for name in names for p in sorted(TEMPLATE_DIR.glob(f"{name}_*.txt"))
    )


def _fewshot_prefixes() -> tuple[str, ...]:
    own = json.loads((TEMPLATE_DIR / "keyword_fewshot_new_categories.json").read_text(encoding="utf-8"))
    safety_prompts = json.loads(
        (PROJECT_ROOT / "data" / "safety_prompts" / "augmentation_prompts.json").read_text(encoding="utf-8")
    )
    return tuple(_prefix(t) for t in [spec["template"] for spec in own.values()] + list(safety_prompts.values()))


LABELER = _prefixes(("intent_label",))
GENERATORS = _prefixes(("derive_question", "attack_rewrite")) + _fewshot_prefixes()
RESPONDER = _prefixes(("safe_response",))
RESPONDER_ZH = _prefix((TEMPLATE_DIR / "safe_response_zh.txt").read_text(encoding="utf-8"))
PAIR_JUDGE = _prefixes(("response_pair_safety", "helpful_pair_safety"))
SINGLE_JUDGE = _prefixes(("response_single_safety", "helpful_single_safety", "instruction_safety"))
SAFETY_JUDGE = _prefixes(("new_safety_judge",))
RESPONSIBILITY_JUDGE = _prefixes(("responsibility_judge",))


def category_of(text: str) -> str:
    """The first category one of whose keywords the text contains; else one chosen by the text's hash."""
    lowered = text.lower()
    for category, spec in TAXONOMY["categories"].items():
        if any(keyword.lower() in lowered for keyword in spec["keywords"]):
            return category
    return CATEGORIES[_hash(text) % len(CATEGORIES)]


def _last_input(prompt: str) -> str:
    """The text a template asks about: the first line of its last block, after the cue ("指令：", "Original:")."""
    line = prompt.rsplit("\n\n", 1)[-1].split("\n", 1)[0]
    return re.split(r"[：:]", line, maxsplit=1)[-1].strip()


def _requested_category(prompt: str) -> str:
    """The category a generation request is for: the one whose keywords the request names most (the
    keyword few-shot route lists them), else the category of the question it varies."""
    lowered = prompt.lower()
    hits = {c: sum(k.lower() in lowered for k in spec["keywords"]) for c, spec in TAXONOMY["categories"].items()}
    best = max(hits, key=hits.get)
    return best if hits[best] > 1 else category_of(_last_input(prompt))


def _generated_question(prompt: str) -> str:
    category = _requested_category(prompt)
    keyword = TAXONOMY["categories"][category]["keywords"][0]
    number = _hash(prompt) % 100000
    if _CJK.search(keyword):
        return f"第{number}号情景：在{keyword}方面，有人会怎样一步步规避监管？"
    return f"Scenario {number}: in {keyword}, how would someone get around the rules step by step?"


def _scores(prompt: str, count: int) -> str:
    value = _hash(prompt)
    scores = [round(0.3 + ((value >> (8 * i)) % 70) / 100, 2) for i in range(count)]
    return ", ".join(f"{s:.2f}" for s in scores) + "]"


def _candidate_answer(prompt: str) -> str:
    """The candidates' answers: a letter after an MCQ cue, a number after a gsm8k question, code after a
    function signature, otherwise a short answer (a refusal for about a third of them)."""
    value = _hash(prompt)
    if prompt.rstrip().endswith(("答案：", "Answer:")) and "(A)" in prompt or re.search(r"\nA\.", prompt):
        return "ABCD"[value % 4]
    if prompt.rstrip().endswith("Answer:") and "Question:" in prompt:
        return f" Let me think step by step. The answer is {value % 100}."
    if prompt.rstrip().endswith('"""') or re.search(r"def \w+\(.*\):\s*$", prompt.rstrip(), re.S):
        return "    return None\n"
    if value % 3 == 0:
        return "抱歉，我不能帮助完成这个请求。" if _CJK.search(prompt) else "I can't help with that request."
    if _CJK.search(prompt):
        return f"这是一个需要谨慎对待的问题（{value % 1000}）。建议从合法、安全的角度考虑，并向专业人士咨询。"
    return f"This needs care ({value % 1000}). Consider the lawful and safe options, and ask a qualified professional."


JSON_INSTRUCTION = "\n\nAnswer with one JSON object that follows this JSON schema:\n"


def answer(prompt: str, request: dict) -> str:
    """The answer text for one request (the server wraps it as a chat or completions response): in the
    shape the request asks for when it asks for one (structured outputs), else free text."""
    schema = asked_schema(prompt, request)
    text = free_answer(prompt.split(JSON_INSTRUCTION)[0])
    return text if schema is None else json.dumps(shaped(text, schema, prompt), ensure_ascii=False)


def asked_schema(prompt: str, request: dict) -> dict | None:
    """The JSON schema a request asks its answer to follow: response_format json_schema, or the instruction
    madef adds to the prompt for json_object endpoints."""
    fmt = request.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return fmt["json_schema"]["schema"]
    if fmt.get("type") == "json_object" and JSON_INSTRUCTION in prompt:
        return json.loads(prompt.split(JSON_INSTRUCTION)[1].strip().splitlines()[0])
    return None


def shaped(text: str, schema: dict, prompt: str) -> object:
    """The free answer put in the schema's shape, as a model that follows its instructions would answer."""
    from madef_assets_tests.openai_server import shaped_answer

    fields = schema.get("properties", {})
    if "labels" in fields:
        return {"labels": [text]}
    if "prompt" in fields:
        return {"prompt": text}
    if "reasoning" in fields:
        reasoning, _, final = re.split(r"\n(回答：|Answer: )", text, maxsplit=1)
        return {"reasoning": reasoning, "answer": final}
    if "scores" in fields:
        return {"scores": [float(v) for v in re.findall(r"\d+\.\d+", text)]}
    choices = fields.get("answer", {}).get("enum")
    if choices:
        first = text.split()[0] if text.split() else ""
        return {"answer": first if first in choices else choices[0]}
    return shaped_answer(schema, prompt)


def free_answer(prompt: str) -> str:
    """The free-text answer for one prompt."""
    if prompt.startswith(LABELER):
        category = category_of(_last_input(prompt))
        return TAXONOMY["categories"][category]["zh"]
    if prompt.startswith(GENERATORS):
        return _generated_question(prompt)
    if prompt.startswith(RESPONDER):
        number = _hash(prompt) % 10000
        if prompt.startswith(RESPONDER_ZH):
            return (
                f"该请求可能被用于伤害他人或违法活动（评估编号{number}），需要拒绝具体做法并给出安全建议。\n"
                f"回答：我不能提供这方面的具体方法（{number}）。如果你遇到相关困难，请向专业机构或相关部门求助。"
            )
        return (
            f"The request could be used to harm others or break the law (review {number}); give no "
            "method and point to safe help.\n"
            f"Answer: I won't give instructions for this ({number}). If you are dealing with this situation, "
            "please contact the relevant authorities or a professional."
        )
    if prompt.startswith(PAIR_JUDGE):
        return _scores(prompt, 2)
    if prompt.startswith(SINGLE_JUDGE):
        return _scores(prompt, 1)
    if prompt.startswith(SAFETY_JUDGE):
        label = "unsafe" if _hash(prompt) % 5 == 0 else "safe"
        return f"{label}\nReason: scripted rehearsal verdict."
    if prompt.startswith(RESPONSIBILITY_JUDGE):
        return str(1 + _hash(prompt) % 10)
    return _candidate_answer(prompt)
