"""The typed profile (madef_assets/settings.py): one model per section, read once."""

import inspect

import pytest
import yaml

from madef_assets.llm.openai_backend import OpenAIBackend
from madef_assets.llm.transformers_backend import TransformersBackend
from madef_assets.llm.vllm_backend import VLLMBackend
from madef_assets.project import CONFIG_DIR, ConfigError
from madef_assets.settings import MODEL_CONFIGS, load_settings, parse_section, parse_settings


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
    options = {name: field.default for name, field in fields.items() if name not in ("backend", "model", "params")}
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
