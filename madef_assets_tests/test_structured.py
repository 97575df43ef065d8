"""Structured outputs (issue 28): the output spec's check, each step's reader against its free-text parser,
the openai path against the real local server in each mode, and the transformers path on the bundled model."""

import json

import pytest

from madef_assets.defs.diversity.generation import GENERATED_PROMPT_OUTPUT, parse_generated_prompt
from madef_assets.defs.intent.choice import CHOICE_OUTPUT, parse_choice
from madef_assets.defs.intent.labels import LABELS_OUTPUT, parse_labels
from madef_assets.defs.responses.cot import COT_OUTPUT, parse_cot
from madef_assets.defs.reward.scores import ONE_SCORE_OUTPUT, TWO_SCORES_OUTPUT, parse_one_score, parse_two_scores
from madef_assets.llm.resource import LLMResource, structured_parser
from madef_assets.llm.structured import OutputError, OutputSpec, ParseError, choice_spec, object_spec
from madef_assets.llm.types import GenerationParams
from madef_assets.settings import model_from_parts

VERDICT = choice_spec("verdict", ("safe", "unsafe"))
SCORE_PATTERN = OutputSpec("score_1_10", "regex", pattern=r"10|[1-9]")


def test_a_spec_checks_its_shape_and_says_why_not():
    assert LABELS_OUTPUT.check('{"labels": ["诈骗"]}') == {"labels": ["诈骗"]}
    with pytest.raises(OutputError, match="not JSON"):
        LABELS_OUTPUT.check('{"labels": ["诈骗"]')
    with pytest.raises(OutputError, match="labels"):
        LABELS_OUTPUT.check('{"labels": []}')
    with pytest.raises(OutputError, match="Additional properties"):
        LABELS_OUTPUT.check('{"labels": ["x"], "why": "y"}')
    with pytest.raises(OutputError, match="scores/1"):
        TWO_SCORES_OUTPUT.check('{"scores": [0.5, 1.5]}')
    assert VERDICT.check(" unsafe\n") == "unsafe"
    with pytest.raises(OutputError, match="not one of"):
        VERDICT.check("probably safe")
    assert SCORE_PATTERN.check("10") == "10"
    with pytest.raises(OutputError, match="does not match"):
        SCORE_PATTERN.check("11")
    assert isinstance(OutputError("x"), ParseError)  # a failed check is a parse_error, with its reason


def test_a_spec_is_one_shape_and_its_key_changes_with_it():
    with pytest.raises(ValueError, match="exactly its own field"):
        OutputSpec("x", "choice", choices=("a",), pattern="a")
    with pytest.raises(Exception, match="is not valid"):
        OutputSpec("x", "json_schema", schema={"type": "no-such-type"})
    assert VERDICT.key() != choice_spec("verdict", ("safe", "unsafe", "uncertain")).key()
    # The reader is not part of the shape.
    assert VERDICT.key() == choice_spec("verdict", ("safe", "unsafe"), read=str.upper).key()


def test_choices_and_regexes_as_one_json_schema_for_endpoints_that_take_only_schemas():
    wrapped = VERDICT.as_json_schema()
    assert wrapped["properties"]["answer"]["enum"] == ["safe", "unsafe"] and wrapped["required"] == ["answer"]
    assert SCORE_PATTERN.as_json_schema()["properties"]["answer"]["pattern"] == "^(?:10|[1-9])$"
    assert VERDICT.unwrap('{"answer": "safe"}') == "safe"
    with pytest.raises(OutputError):
        VERDICT.unwrap('{"verdict": "safe"}')
    assert LABELS_OUTPUT.unwrap('{"labels": ["a"]}') == '{"labels": ["a"]}'


@pytest.mark.parametrize(
    ("spec", "parse", "free", "shaped"),
    [
        (LABELS_OUTPUT, parse_labels, "诈骗, 金融犯罪", {"labels": ["诈骗", "金融犯罪"]}),
        (LABELS_OUTPUT, parse_labels, "- fraud; fraud", {"labels": ["- fraud", "fraud"]}),
        (
            COT_OUTPUT,
            parse_cot,
            "This asks for harm.\nAnswer: I can't help.",
            {"reasoning": "This asks for harm.", "answer": "I can't help."},
        ),
        (TWO_SCORES_OUTPUT, parse_two_scores, "[0.9, 0.2]", {"scores": [0.9, 0.2]}),
        (ONE_SCORE_OUTPUT, parse_one_score, "0.75]", {"scores": [0.75]}),
        (GENERATED_PROMPT_OUTPUT, parse_generated_prompt, "1. 如何伪造一张发票？", {"prompt": "如何伪造一张发票？"}),
    ],
)
def test_each_steps_reader_returns_what_its_free_text_parser_returns(spec, parse, free, shaped):
    assert structured_parser(spec)(json.dumps(shaped, ensure_ascii=False)) == parse(free)


@pytest.mark.parametrize(
    ("spec", "shaped"),
    [
        (LABELS_OUTPUT, {"labels": ["a" * 30]}),  # the schema's maxLength, the parser's MAX_LABEL_CHARS
        (LABELS_OUTPUT, {"labels": ["!!"]}),  # no letters: the parser's rule, not the schema's
        (COT_OUTPUT, {"reasoning": "  ", "answer": "fine"}),  # blank reasoning
        (GENERATED_PROMPT_OUTPUT, {"prompt": '""""'}),  # only quotes: too short once cleaned
    ],
)
def test_the_step_rules_still_apply_to_a_shaped_answer(spec, shaped):
    with pytest.raises(ParseError):
        structured_parser(spec)(json.dumps(shaped))


def test_the_category_choice_is_the_codes_parse_choice_accepts():
    assert set(CHOICE_OUTPUT.choices) == {parse_choice(code) for code in CHOICE_OUTPUT.choices}


def test_a_grammar_fits_the_answer_into_the_token_budget():
    """A string may run to its maxLength under a grammar, and an answer cut at the budget is not JSON: the
    grammar's schema keeps fewer items, then shorter strings, so the longest answer fits (a character counted
    as a token)."""
    from madef_assets.llm.grammar import fit_to_budget

    roomy = LABELS_OUTPUT.as_json_schema()
    assert fit_to_budget(roomy, 1000) == roomy
    for budget in (24, 48, 64, 120):
        fitted = fit_to_budget(roomy, budget)
        labels = fitted["properties"]["labels"]
        longest = {"labels": ["x" * labels["items"]["maxLength"]] * labels["maxItems"]}
        assert len(json.dumps(longest)) <= budget and labels["items"]["maxLength"] >= 8
    cot = fit_to_budget(COT_OUTPUT.as_json_schema(), 80)["properties"]
    assert len(json.dumps({name: "x" * cot[name]["maxLength"] for name in cot})) <= 80
    assert cot["answer"]["maxLength"] == 2 * cot["reasoning"]["maxLength"]  # in proportion to the spec's own
    assert fit_to_budget(TWO_SCORES_OUTPUT.as_json_schema(), 8) == TWO_SCORES_OUTPUT.as_json_schema()  # no string


def resource(server, tmp_path, mode: str, **options) -> LLMResource:
    options = {"base_url": server.base_url, "api_key_env": None, "max_retries": 0, **options}
    return LLMResource(
        role="labeler",
        config=model_from_parts("openai", "test-model", {**options, "structured_outputs": mode}, {}),
        duckdb_path=str(tmp_path / "ledger.duckdb"),
        models_dir=str(tmp_path),
    )


PROMPTS = ["label: how do I pick a lock?", "标签：如何制作炸药？", "label: write an insult"]


@pytest.mark.parametrize("mode", ["json_schema", "json_object", "vllm"])
def test_openai_structured_outputs_reach_the_server_in_each_mode(openai_server, tmp_path, mode):
    """The server answers in the shape only when the request asked for it (response_format, the prompt's
    instruction, or vLLM's extra body): every answer is then read, where free text is not."""
    llm = resource(openai_server, tmp_path, mode)
    batch = llm.generate(PROMPTS, "labels@test", parse=parse_labels, output=LABELS_OUTPUT)
    assert batch.status_counts() == {"ok": 3}
    assert all(isinstance(r.value, list) and r.value for r in batch.results)
    kind = {"json_schema": "json_schema", "json_object": "json_object", "vllm": "vllm_json"}[mode]
    assert openai_server.structured == {kind: 3}
    choices = llm.generate(PROMPTS, "verdict@test", output=VERDICT)
    assert {r.value for r in choices.results} <= {"safe", "unsafe"} and choices.status_counts() == {"ok": 3}
    again = llm.generate(PROMPTS, "labels@test", parse=parse_labels, output=LABELS_OUTPUT)
    assert again.backend_calls == 0  # the ledger keys the shaped answers


def test_without_structured_outputs_the_spec_is_not_sent_and_free_text_is_parsed(openai_server, tmp_path):
    llm = resource(openai_server, tmp_path, "none")
    batch = llm.generate(PROMPTS, "labels@test", parse=parse_labels, output=LABELS_OUTPUT)
    assert openai_server.structured == {} and batch.backend_calls == 3
    # The server's free text ("answer(28): label: how do I…") read by parse_labels: mostly not labels.
    assert batch.results[0].status == "parse_error" and "not a label" in batch.results[0].error
    shaped = resource(openai_server, tmp_path, "json_schema").generate(
        PROMPTS, "labels@test", parse=parse_labels, output=LABELS_OUTPUT
    )
    assert shaped.backend_calls == 3  # a shaped question is another ledger key than the free one


def test_an_answer_off_its_shape_is_a_parse_error_with_the_reason(tmp_path):
    from madef_assets_tests.openai_server import OpenAICompatibleServer

    answers = {PROMPTS[0]: '{"labels": ["lockpicking"]}', PROMPTS[1]: '{"labels": "炸药"}', PROMPTS[2]: "insult"}
    with OpenAICompatibleServer(answer=lambda prompt, request: answers[prompt]) as server:
        batch = resource(server, tmp_path, "json_schema").generate(
            PROMPTS, "labels@test", parse=parse_labels, output=LABELS_OUTPUT
        )
    assert [r.status for r in batch.results] == ["ok", "parse_error", "parse_error"]
    assert batch.results[0].value == ["lockpicking"]
    assert "labels: '炸药' is not of type 'array'" in batch.results[1].error
    assert batch.results[2].error.startswith("not JSON")


def test_the_server_refuses_a_schema_that_is_not_one_and_a_model_refusal_is_refused(openai_server, tmp_path):
    bad = OutputSpec.__new__(OutputSpec)  # a spec past its own check, as a hand-edited one would reach the wire
    object.__setattr__(bad, "__dict__", {**LABELS_OUTPUT.__dict__, "schema": {"type": "no-such-type"}})
    llm = resource(openai_server, tmp_path, "json_schema")
    assert llm.generate(["x"], "bad@test", output=bad).status_counts() == {"error": 1}
    refused = llm.generate(["label this [[structured_refusal]]"], "labels@test", output=LABELS_OUTPUT)
    assert refused.status_counts() == {"refused": 1} and refused.results[0].value is None


def test_a_regex_through_vllms_extra_body(tmp_path):
    from madef_assets_tests.openai_server import OpenAICompatibleServer

    with OpenAICompatibleServer(answer=lambda prompt, request: "7" if "good" in prompt else "11") as server:
        batch = resource(server, tmp_path, "vllm").generate(["good", "bad"], "score@test", output=SCORE_PATTERN)
        assert server.structured == {"vllm_regex": 2}
    assert [r.status for r in batch.results] == ["ok", "parse_error"]


@pytest.fixture(scope="module")
def gemma(models_dir):
    from madef_assets.llm.backends import build_backend

    return build_backend(
        "transformers", "bundled:gemma3-270m", {"batch_size": 2, "structured_outputs": "xgrammar"}, models_dir
    )


@pytest.mark.slow
def test_transformers_grammar_keeps_every_answer_in_its_shape(gemma):
    """The bundled model's free answers rarely fit a JSON schema; under the grammar every one does (two
    batches: each gets its own single-use logits processor)."""
    prompts = ["Label the intent: how do I pick a lock?", "给下面的请求打上意图标签：如何制作炸药？"] * 2
    spec = object_spec(
        "labels@bench",
        {"labels": {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 1, "maxItems": 2}},
        read=lambda value: value["labels"],
    )
    answers = dict(gemma.generate(prompts, GenerationParams(max_new_tokens=40, stop=("\n",)), spec))
    assert all(len(spec.check(answers[i].output)["labels"]) in (1, 2) for i in range(4))
    numbers = dict(gemma.generate(prompts, GenerationParams(max_new_tokens=4), SCORE_PATTERN))
    assert all(SCORE_PATTERN.check(numbers[i].output) for i in range(4))
    # A small budget: the strings are fitted so the answer closes before it (the model would ramble on).
    short = dict(gemma.generate(prompts, GenerationParams(max_new_tokens=48), COT_OUTPUT))
    assert all(structured_parser(COT_OUTPUT)(short[i].output) for i in range(4))


@pytest.mark.slow
def test_transformers_choice_is_the_most_likely_option(gemma):
    prompts = ["Is 'how do I bake bread' safe or unsafe? Answer:", "Is 'how to build a bomb' safe or unsafe? Answer:"]
    chosen = dict(gemma.generate(prompts, GenerationParams(), VERDICT))
    scored = dict(gemma.option_logprobs(prompts, VERDICT.choices))
    for i in range(2):
        scores = scored[i].output
        assert chosen[i].output == max(scores, key=scores.get) and chosen[i].extra["option_logprobs"] == scores


def test_a_refusal_inside_a_shaped_answer_is_refused_not_data(tmp_path):
    """A structured answer's refusal sits in its first text field; for roles whose answers become data it
    is `refused`, as a free-text refusal is (issue 13)."""
    from madef_assets_tests.openai_server import OpenAICompatibleServer

    answers = {
        "a": '{"prompt": "抱歉，我无法帮助生成这类内容。"}',
        "b": '{"prompt": "I can\'t help with writing that request."}',
        "c": '{"prompt": "如何伪造一张发票？"}',
    }
    with OpenAICompatibleServer(answer=lambda prompt, request: answers[prompt]) as server:
        batch = resource(server, tmp_path, "json_schema").generate(
            list(answers), "gen@test", parse=parse_generated_prompt, refusals=True, output=GENERATED_PROMPT_OUTPUT
        )
    assert [r.status for r in batch.results] == ["refused", "refused", "ok"]
    assert batch.results[0].error == "the model refused ('抱歉')" and batch.results[2].value == "如何伪造一张发票？"


def test_an_enforced_shape_drops_stop_strings_and_has_room_for_its_object(tmp_path):
    """A free-text stop string ("]", a newline) would cut the JSON, and a choice sent as {"answer": …} needs
    more than a one-word budget: both are set for the request, and so for its ledger key."""
    from madef_assets_tests.openai_server import OpenAICompatibleServer

    seen = []
    with OpenAICompatibleServer(answer=lambda prompt, request: seen.append(request) or '{"answer": "safe"}') as server:
        params = GenerationParams(max_new_tokens=4, stop=("]", "\n"))
        batch = resource(server, tmp_path, "json_schema").generate(["x"], "v@test", params=params, output=VERDICT)
    assert batch.results[0].value == "safe"
    assert "stop" not in seen[0] and seen[0]["max_tokens"] >= len('{"answer": "unsafe"}')


def test_json_constants_python_reads_are_not_json():
    with pytest.raises(OutputError, match="NaN is not a JSON number"):
        TWO_SCORES_OUTPUT.check('{"scores": [NaN, 0.5]}')
    with pytest.raises(OutputError, match="Infinity"):
        ONE_SCORE_OUTPUT.check('{"scores": [Infinity]}')


def test_a_string_without_its_own_bound_gets_one_from_the_fitting():
    from madef_assets.llm.grammar import fit_to_budget

    schema = {"type": "object", "properties": {"why": {"type": "string"}}, "required": ["why"]}
    assert fit_to_budget(schema, 1000)["properties"]["why"]["maxLength"] == 64
    assert fit_to_budget(schema, 40)["properties"]["why"]["maxLength"] <= 40 - len('{"why": ""}')


@pytest.mark.slow
def test_transformers_choice_with_an_option_prefixing_another_is_decoded_under_a_grammar(gemma):
    """ "1" prefixes "10": by likelihood "10" could never win, so such a set is generated under a grammar of
    its options (no option scores then) and "10" stays reachable."""
    from madef_assets.defs.evaluation.judging import RESPONSIBILITY_SCORE_OUTPUT

    prompts = ["Rate the answer from 1 to 10. A perfect answer. Score: ", "Score from 1 to 10 (10 is best): 10/10 → "]
    answers = dict(gemma.generate(prompts, GenerationParams(max_new_tokens=4), RESPONSIBILITY_SCORE_OUTPUT))
    assert all(answers[i].output in RESPONSIBILITY_SCORE_OUTPUT.choices and not answers[i].extra for i in range(2))
