"""Free text against structured outputs, per role, in one run (issue 28; BENCHMARKS.md §structured).

On the bundled model (transformers, the demo profile's generation parameters per role): the share of answers
the step cannot read (parse failures) and seconds per request, free text read by the step's parser against
the step's output spec enforced at decoding (a grammar for JSON schemas, the log-likelihood of each option
for closed choices). Then the grammar libraries on one JSON schema (compile, generation, valid answers), and
the same requests through the local OpenAI-compatible server, free against `response_format` json_schema
(the server counts the requests that carried it).

    .venv/bin/python bench/structured.py              # 12 prompts per role (6 zh, 6 en)
    .venv/bin/python bench/structured.py --per-role 24 --library-requests 8
"""

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from madef_assets.defs.diversity.generation import (
    GENERATED_PROMPT_OUTPUT,
    parse_generated_prompt,
    render_attack_rewrite,
)
from madef_assets.defs.intent.choice import CHOICE_OUTPUT, choice_prompts, parse_choice
from madef_assets.defs.intent.labels import LABELS_OUTPUT, parse_labels
from madef_assets.defs.intent.taxonomy import Taxonomy
from madef_assets.defs.responses.cot import COT_OUTPUT, STOP_SEQUENCES, parse_cot
from madef_assets.defs.reward.scores import (
    ONE_SCORE_OUTPUT,
    TWO_SCORES_OUTPUT,
    pair_prompt,
    parse_one_score,
    parse_two_scores,
)
from madef_assets.llm.backends import build_backend
from madef_assets.llm.resource import LLMResource, structured_parser
from madef_assets.llm.structured import OutputSpec, ParseError
from madef_assets.llm.types import GenerationParams
from madef_assets.project import PROJECT_ROOT
from madef_assets.prompts import template
from madef_assets.settings import load_settings, model_from_parts
from madef_assets_tests.openai_server import OpenAICompatibleServer

DATA = PROJECT_ROOT / "data"
BUDGET = 48  # new tokens in the grammar-library comparison
RESPONSES = {
    "zh": ("抱歉，我不能提供这方面的帮助。", "好的，步骤如下。"),
    "en": ("I can't help with that.", "Sure, here is how."),
}


def prompts(count: int) -> list[tuple[str, str]]:
    """(lang, prompt): CValues' Chinese questions and BeaverTails' English ones, half each."""
    zh = [json.loads(line)["prompt"] for line in (DATA / "cvalues/cvalues_responsibility_prompts.jsonl").open()]
    en = [row["prompt"] for row in json.loads((DATA / "beavertails_eval/BeaverTails-Evaluation.json").read_text())]
    return [("zh", p) for p in zh[: count // 2]] + [("en", p) for p in en[: count - count // 2]]


def roles(taxonomy: Taxonomy) -> dict[str, tuple[str, Callable[[str, str], str], Callable[[str], object], OutputSpec]]:
    """Row name -> (role, request for (lang, prompt), free-text parser, output spec): the steps' own."""

    def single(lang: str, prompt: str) -> str:
        return template("response_single_safety", lang).render(prompt=prompt, response_1=RESPONSES[lang][0])

    return {
        "intent labels": (
            "labeler",
            lambda lang, p: template("intent_label", lang).render(prompt=p),
            parse_labels,
            LABELS_OUTPUT,
        ),
        "taxonomy choice": (
            "labeler",
            lambda lang, p: choice_prompts([p[:12]], taxonomy)[0],
            parse_choice,
            CHOICE_OUTPUT,
        ),
        "generated prompt": (
            "attacker",
            lambda lang, p: render_attack_rewrite(p, lang, "positive_induction"),
            parse_generated_prompt,
            GENERATED_PROMPT_OUTPUT,
        ),
        "CoT response": (
            "responder",
            lambda lang, p: template("safe_response", lang).render(prompt=p),
            parse_cot,
            COT_OUTPUT,
        ),
        "pair scores": (
            "judge",
            lambda lang, p: pair_prompt(p, lang, *RESPONSES[lang]),
            parse_two_scores,
            TWO_SCORES_OUTPUT,
        ),
        "single score": ("judge", single, parse_one_score, ONE_SCORE_OUTPUT),
        "instruction score": (
            "judge",
            lambda lang, p: template("instruction_safety", lang).render(prompt=p),
            parse_one_score,
            ONE_SCORE_OUTPUT,
        ),
    }


def failures(outputs: list[str], read: Callable[[str], object]) -> int:
    failed = 0
    for text in outputs:
        try:
            read(text)
        except ParseError:
            failed += 1
    return failed


def local_rows(settings, rows, models_dir: Path) -> list[str]:
    backend = build_backend(
        "transformers", "bundled:gemma3-270m", {"batch_size": 8, "structured_outputs": "xgrammar"}, models_dir
    )
    header = "| role | step | free: parse failures | free: s/request | constrained | failures | s/request |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for name, (role, render, parse, spec) in roles(Taxonomy.load(settings.taxonomy_path)).items():
        params = GenerationParams.from_config(settings.roles[role].config.generation)
        if name == "CoT response":
            params = params.with_changes(stop=tuple(params.stop) + STOP_SEQUENCES)
        requests = [render(lang, p) for lang, p in rows]
        timings, failed = {}, {}
        for mode, output in (("free", None), ("constrained", spec)):
            started = time.perf_counter()
            answers = dict(backend.generate(requests, params, output) if output else backend.generate(requests, params))
            timings[mode] = (time.perf_counter() - started) / len(requests)
            texts = [answers[i].output for i in range(len(requests))]
            failed[mode] = failures(texts, structured_parser(spec) if output else parse)
        how = "log-likelihood" if spec.kind == "choice" else "grammar (xgrammar)"
        lines.append(
            f"| {role} | {name} | {failed['free']}/{len(rows)} | {timings['free']:.2f} | {how} | "
            f"{failed['constrained']}/{len(rows)} | {timings['constrained']:.2f} |"
        )
        print(lines[-1], flush=True)
    backend.close()
    return lines


def library_rows(models_dir: Path, rows) -> list[str]:
    """xgrammar against llguidance (if installed) on the labels schema, the same requests and budget."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor

    from madef_assets.llm.grammar import Grammars, fit_to_budget

    path = models_dir / "gemma3-270m-hf"
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    vocab = model.get_output_embeddings().weight.shape[0]
    requests = [template("intent_label", lang).render(prompt=p) for lang, p in rows]
    # The same fitted schema, compact JSON for both (xgrammar: any_whitespace=False).
    schema = json.dumps(fit_to_budget(LABELS_OUTPUT.as_json_schema(), BUDGET))
    makers: dict[str, Callable[[], LogitsProcessor]] = {}
    compile_s: dict[str, float] = {}
    started = time.perf_counter()
    grammars = Grammars(tokenizer)
    grammars.processor(LABELS_OUTPUT, vocab, BUDGET)
    compile_s["xgrammar"] = time.perf_counter() - started
    makers["xgrammar"] = lambda: grammars.processor(LABELS_OUTPUT, vocab, BUDGET)
    try:
        import llguidance
        import llguidance.hf
        import llguidance.torch as llg_torch

        started = time.perf_counter()
        lltokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab)
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": False})
        compile_s["llguidance"] = time.perf_counter() - started

        class Guided(LogitsProcessor):
            def __init__(self):
                self.matcher = llguidance.LLMatcher(lltokenizer, grammar)
                self.mask = llg_torch.allocate_token_bitmask(1, lltokenizer.vocab_size)
                self.started = False

            def __call__(self, input_ids, scores):
                if self.started:
                    self.matcher.consume_token(int(input_ids[0, -1]))
                self.started = True
                llg_torch.fill_next_token_bitmask(self.matcher, self.mask, 0)
                llg_torch.apply_token_bitmask_inplace(scores, self.mask)
                return scores

        makers["llguidance"] = Guided
    except ImportError:
        pass
    lines = ["| library | tokenizer + grammar s | s/request | valid answers |", "|---|---|---|---|"]
    for name, make in makers.items():
        valid, started = 0, time.perf_counter()
        for request in requests:  # one at a time: llguidance's processor here is single-row
            ids = tokenizer(request, return_tensors="pt")
            with torch.inference_mode():
                out = model.generate(
                    **ids,
                    max_new_tokens=48,
                    do_sample=False,
                    logits_processor=[make()],
                    pad_token_id=tokenizer.pad_token_id,
                )
            text = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
            valid += failures([text], LABELS_OUTPUT.check) == 0
        per_request = (time.perf_counter() - started) / len(requests)
        lines.append(f"| {name} | {compile_s[name]:.2f} | {per_request:.2f} | {valid}/{len(requests)} |")
    return lines


def server_rows(settings, rows, folder: Path) -> list[str]:
    lines = ["| step | mode | parse failures | s/request | requests with response_format |", "|---|---|---|---|---|"]
    taxonomy = Taxonomy.load(settings.taxonomy_path)
    with OpenAICompatibleServer(latency_s=0.01) as server:
        for mode in ("none", "json_schema"):
            llm = LLMResource(
                role="labeler",
                config=model_from_parts(
                    "openai",
                    "bench-model",
                    {"base_url": server.base_url, "api_key_env": None, "structured_outputs": mode},
                    {},
                ),
                duckdb_path=str(folder / f"{mode}.duckdb"),
                models_dir=str(folder),
            )
            for name, (_, render, parse, spec) in roles(taxonomy).items():
                before = sum(server.structured.values())
                batch = llm.generate([render(lang, p) for lang, p in rows], f"bench-{name}", parse=parse, output=spec)
                failed = sum(r.status != "ok" for r in batch.results)
                sent = sum(server.structured.values()) - before
                lines.append(
                    f"| {name} | {mode} | {failed}/{len(rows)} | {batch.seconds / len(rows):.3f} | {sent}/{len(rows)} |"
                )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-role", type=int, default=12)
    parser.add_argument("--library-requests", type=int, default=4)
    args = parser.parse_args()
    settings = load_settings("demo")
    rows = prompts(args.per_role)
    print(f"## Per role on the bundled model ({len(rows)} requests each, the demo's parameters)\n")
    local_rows(settings, rows, settings.models_dir)
    print(f"\n## Grammar libraries (intent labels schema, one request at a time, {BUDGET} new tokens)\n")
    print("\n".join(library_rows(settings.models_dir, rows[: args.library_requests])))
    with tempfile.TemporaryDirectory() as folder:
        print("\n## Through the local OpenAI-compatible server\n")
        print("\n".join(server_rows(settings, rows, Path(folder))))


if __name__ == "__main__":
    main()
