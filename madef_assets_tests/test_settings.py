"""The typed profile (madef_assets/settings.py): one model per section, read once."""

import inspect

import pytest
import yaml

from madef_assets.llm.openai_backend import OpenAIBackend
from madef_assets.llm.transformers_backend import TransformersBackend
from madef_assets.llm.vllm_backend import VLLMBackend
from madef_assets.project import CONFIG_DIR, ConfigError
from madef_assets.settings import JUDGE_FIELDS, MODEL_CONFIGS, load_settings, parse_section, parse_settings


@pytest.mark.parametrize(
    "backend, cls, skipped",
    [
        ("openai", OpenAIBackend, {"self", "model"}),
        ("transformers", TransformersBackend, {"self", "model_path", "model_spec"}),
        ("vllm", VLLMBackend, {"self", "model_path", "model_spec"}),
    ],
)
def test_each_backends_model_config_is_its_constructors_options(backend, cls, skipped):
    """A backend that gains an option is configurable only once its model config says so; the defaults agree."""
    parameters = {
        name: parameter.default
        for name, parameter in inspect.signature(cls.__init__).parameters.items()
        if name not in skipped
    }
    fields = MODEL_CONFIGS[backend].model_fields
    judge_only = ("backend", "model", "params", *JUDGE_FIELDS)  # how a judge is asked, not a backend option
    options = {name: field.default for name, field in fields.items() if name not in judge_only}
    assert options.keys() == parameters.keys()
    assert {k: v for k, v in options.items() if parameters[k] is not inspect.Parameter.empty} == {
        k: v for k, v in parameters.items() if v is not inspect.Parameter.empty
    }


def test_null_takes_the_default_unless_null_means_something():
    assert parse_section("gpu", {"release": None}).release == "per_run"
    candidate = {"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:1/v1", "api_key_env": None}
    served = parse_section("evaluation", {"candidates": {"served": candidate}})
    assert served.candidate_specs["served"].api_key_env is None  # null: a server without keys
    assert served.candidate_specs["served"].base_url == ["http://127.0.0.1:1/v1"]  # one URL or replicas


def test_roles_and_candidates_read_as_typed_models():
    demo = load_settings("demo", env={})
    judge = demo.roles["judge"]
    assert (judge.backend, judge.options["batch_size"], judge.config.generation["stop"]) == (
        "transformers",
        8,
        ["]", "\n"],
    )
    base, *tuned = demo.evaluation.candidates
    assert base.checkpoint == "base_model_checkpoint" and [c.rate for c in tuned] == list(demo.training.rate_labels)
    assert demo.evaluation.general.mcq().keys() == {"mmlu", "cmmlu", "ceval"}


def test_a_missing_role_model_names_the_key():
    with pytest.raises(ConfigError, match="models.trainee.model: Field required"):
        parse_section(
            "models",
            {
                **{
                    r: {"backend": "transformers", "model": "m"}
                    for r in ("labeler", "attacker", "responder", "judge", "scorer")
                },
                "trainee": {"backend": "transformers"},
            },
        )


def test_what_madef_derives_cannot_be_written_in_the_profile(tmp_path):
    """A source's name and size cap, and its files' config keys, come from where they are written."""
    raw = yaml.safe_load((CONFIG_DIR / "demo.yaml").read_text(encoding="utf-8"))
    assert parse_settings(raw, tmp_path / "p.yaml", {}).sources["s_eval"].name == "s_eval"
    for key, value in (("max_file_bytes", 5), ("name", "other")):
        changed = {**raw, "sources": {**raw["sources"], "s_eval": {**raw["sources"]["s_eval"], key: value}}}
        with pytest.raises(ConfigError, match=rf"sources: s_eval: \['{key}'\] are set by madef"):
            parse_settings(changed, tmp_path / "p.yaml", {})


# --- provenance: no profile trains on what its benchmarks are built from ----------------------------------------


def demo_raw() -> dict:
    return yaml.safe_load((CONFIG_DIR / "demo.yaml").read_text(encoding="utf-8"))


@pytest.mark.parametrize("profile", ["demo", "production", "rehearsal"])
def test_the_bundled_profiles_train_and_evaluate_on_unrelated_sources(profile):
    settings = load_settings(profile, env={})
    assert "s_eval" in settings.evaluation.new_safety.sources
    assert "s_eval" not in settings.method.train_sources


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # the same source on both sides
        (
            lambda raw: (
                raw["method"]["eval_sources"].remove("s_eval") or raw["method"]["train_sources"].append("s_eval")
            ),
            r"trains on `s_eval` and .* evaluates on `s_eval`",
        ),
        # XSafety translates Safety-Prompts (the readers' lineage)
        (
            lambda raw: raw["evaluation"]["new_safety"]["sources"].append("xsafety"),
            r"method.train_sources trains on `xsafety` and evaluation.new_safety.sources evaluates on `xsafety`",
        ),
        # PKU-SafeRLHF re-answers BeaverTails' prompts
        (
            lambda raw: raw["evaluation"]["new_safety"]["sources"].append("beavertails_eval"),
            r"`pku_saferlhf` and evaluation.new_safety.sources evaluates on `beavertails_eval`: both derive from "
            r"Anthropic HH red-team prompts",
        ),
        # a lineage declared in the profile, through a configured source
        (
            lambda raw: raw["sources"]["general_sft"].update(derived_from=["s_eval"]),
            r"method.general_sources trains on `general_sft` .* evaluates on `s_eval`: both derive from S-Eval",
        ),
        # a source derived from a configured source that reads an evaluated source's file
        (
            lambda raw: (
                raw["sources"].update(raw_copy={**raw["sources"]["s_eval"], "reader": "generic"})
                or raw["sources"]["general_sft"].update(derived_from=["raw_copy"])
            ),
            r"trains on `general_sft` and evaluation.new_safety.sources evaluates on `s_eval`: both read .*s_eval",
        ),
        # a dataset's split beside the whole dataset (two splits are unrelated: the test of the New-Safety headline)
        (
            lambda raw: (
                raw["sources"].update(
                    cvc_train={"reader": "cvalues_comparison", "split": "train", "files": [{"path": "a.jsonl"}]},
                    cvc_all={"reader": "cvalues_comparison", "files": [{"path": "b.jsonl"}]},
                )
                or raw["method"]["train_sources"].append("cvc_train")
                or raw["evaluation"]["new_safety"]["sources"].append("cvc_all")
            ),
            r"trains on `cvc_train` and evaluation.new_safety.sources evaluates on `cvc_all`: both derive from "
            r"CValues-Comparison",
        ),
        # the same split twice
        (
            lambda raw: (
                raw["sources"].update(
                    cvc_a={"reader": "cvalues_comparison", "split": "test", "files": [{"path": "a.jsonl"}]},
                    cvc_b={"reader": "cvalues_comparison", "split": "test", "files": [{"path": "b.jsonl"}]},
                )
                or raw["method"]["train_sources"].append("cvc_a")
                or raw["evaluation"]["new_safety"]["sources"].append("cvc_b")
            ),
            r"trains on `cvc_a` and evaluation.new_safety.sources evaluates on `cvc_b`: both derive from "
            r"CValues-Comparison \[test\]",
        ),
        # two names for the same file
        (
            lambda raw: (
                raw["sources"].update(s_eval_copy={**raw["sources"]["s_eval"], "reader": "generic"})
                or raw["method"]["train_sources"].append("s_eval_copy")
            ),
            r"trains on `s_eval_copy` and evaluation.new_safety.sources evaluates on `s_eval`: both read .*s_eval",
        ),
    ],
)
def test_training_on_a_source_related_to_an_evaluated_one_is_refused_naming_both(tmp_path, change, message):
    raw = demo_raw()
    change(raw)
    with pytest.raises(ConfigError, match=message):
        parse_settings(raw, tmp_path / "p.yaml", {})


def test_a_contamination_reference_is_no_evaluated_source_and_nothing_evaluated_checks_nothing(tmp_path):
    """method.eval_sources is what the SFT set is checked against, not a benchmark: training beside it is the
    point of the check. Without candidates nothing is evaluated, so nothing is refused."""
    raw = demo_raw()
    assert "beavertails_eval" in raw["method"]["eval_sources"] and "pku_saferlhf" in raw["method"]["train_sources"]
    parse_settings(raw, tmp_path / "p.yaml", {})
    raw["method"]["eval_sources"].remove("s_eval")
    raw["method"]["train_sources"].append("s_eval")
    raw["evaluation"]["candidates"] = {}
    parse_settings(raw, tmp_path / "p.yaml", {})
