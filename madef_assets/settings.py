"""The profile: one YAML file per profile under `config/`, read into one typed model (pydantic).

A profile chooses data paths, sample sizes, limits and the model for each LLM role. Every section is a
model below; an unknown key is an error naming the key and the allowed ones. Environment variables
override the profile choice and the storage paths:

- `MADEF_PROFILE`: a profile name (`demo`, `production`) or a path to a YAML file;
- `MADEF_STATE_DIR`: the folder for the DuckDB file, converted models, reports and Dagster's state;
- `MADEF_DUCKDB_PATH`: where the tables live (`duckdb_path`): a DuckDB file, or
  `ducklake:postgres:<libpq conninfo>` with `MADEF_DUCKLAKE_DATA_PATH` (`ducklake_data_path`; madef_assets/storage.py);
- `MADEF_DUCKDB_LOCK_WAIT_SECONDS`: how long a connection waits for a DuckDB file another process holds;
- `MADEF_MODELS_DIR`: where bundled and GGUF models are converted (default `<state>/models`);
- `MADEF_TRAIN_PYTHON`: the Python of LLaMA-Factory's environment (`training.env_python`).

Paths are relative to the project root; a path left null defaults to a place under `state_dir`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import dagster as dg
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from madef_assets.lineage import SourceLineage, related_pairs
from madef_assets.project import CONFIG_DIR, PANEL_ROLES, PROJECT_ROOT, ROLES, ConfigError, resolve_path
from madef_assets.storage import Storage, parse_storage

# ingest.max_file_bytes when the profile sets none: each input file, and each zip archive's members together.
DEFAULT_MAX_FILE_BYTES = 1 << 30
# The generation routes of §3.5 (madef_assets/defs/diversity/routes.py), in the order deficits are split.
AUGMENT_ROUTES = ("keyword_fewshot", "derived_question", "attack_rewrite")
CHECKPOINT_ASSETS = ("base_model_checkpoint", "finetuned_checkpoint")
# The paper's learning rate (§4.1: 6e-7), the one rate trained when the profile names none.
PAPER_LEARNING_RATE = 6.0e-7
DEFAULT_LABELER_SOURCES = ("s_eval", "xsafety")
# The data terms a source may name (`sources.<name>.license`): Creative Commons ids, the common permissive
# software licenses, or `unknown` (the combined terms of a set with such rows say "check before use").
LICENSE_ID = re.compile(r"CC-BY(-NC)?(-SA)?-\d\.\d|Apache-2\.0|MIT|BSD-[23]-Clause|unknown")


def _project_path(value: Any) -> Path:
    return resolve_path(value, PROJECT_ROOT)


def _license(value: str) -> str:
    if not LICENSE_ID.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a license id madef knows: CC-BY[-NC][-SA]-<version> "
            "(e.g. CC-BY-NC-SA-4.0), Apache-2.0, MIT, BSD-2-Clause, BSD-3-Clause or unknown"
        )
    return value


def _listed(value: Any) -> Any:
    if value is None:  # dagster.Config passes a missing field as None
        raise ValueError("Field required")
    return [value] if isinstance(value, str) else value


ProjectPath = Annotated[Path, AfterValidator(_project_path)]
License = Annotated[str, AfterValidator(_license)]
Fraction = Annotated[float, Field(ge=0, le=1)]
PositiveInt = Annotated[int, Field(gt=0, strict=True)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, values: Any) -> Any:
        """A key written as null takes its default (the profiles say `null: <the default>`)."""
        if not isinstance(values, dict):
            return values
        fields = {field.alias or name: field for name, field in cls.model_fields.items()}
        return {
            k: v
            for k, v in values.items()
            if v is not None
            or k not in fields
            or fields[k].is_required()
            or type(None) in _alternatives(fields[k].annotation)
        }


# --- models per role: the backends' constructor options (a test keeps them equal) ----------------------


class GenerationConfig(dg.Config):
    """A role's default generation parameters (llm/types.py GenerationParams; unset: its defaults)."""

    model_config = ConfigDict(extra="forbid")

    temperature: float | None = None
    top_p: float | None = None
    max_new_tokens: int | None = None
    seed: int | None = None
    stop: list[str] | None = None


# A model config's fields that say how the judge is asked, not how the backend is built (not in `options`).
JUDGE_FIELDS = ("judge_format", "guard_threshold")


class ModelConfig(dg.Config):
    model_config = ConfigDict(extra="forbid")

    model: str
    params: GenerationConfig = GenerationConfig()
    # How a judge is asked (defs/guards.py): madef's own prompts, or a guard model's card format. Only
    # models.judge entries may name a guard; guard_threshold: ShieldGemma's P(Yes) from which it says unsafe.
    judge_format: Literal["madef", "llama_guard", "wildguard", "shieldgemma"] = "madef"
    guard_threshold: float = 0.5

    @field_validator("model", mode="before")
    @classmethod
    def _model_required(cls, value: Any) -> Any:
        if value is None and cls.model_fields["model"].is_required():  # dagster.Config passes a missing one as None
            raise ValueError("Field required")
        return value

    @property
    def options(self) -> dict[str, Any]:
        """The backend's constructor options (everything but backend, model, params and how a judge is asked)."""
        return self.model_dump(exclude={"backend", "model", "params", *JUDGE_FIELDS})

    @property
    def generation(self) -> dict[str, Any]:
        return self.params.model_dump(exclude_none=True)


class OpenAIModel(ModelConfig):
    """A model behind an OpenAI-compatible endpoint (llm/openai_backend.py); `base_url` one URL or replicas."""

    backend: Literal["openai"] = "openai"
    base_url: Annotated[list[str], BeforeValidator(_listed)]
    api_key_env: str | None = "OPENAI_API_KEY"
    api: Literal["chat", "completions"] = "chat"
    concurrency: int = 16
    timeout_s: float = 60.0
    max_retries: int = 6
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    request_budget: int | None = None
    model_revision: str | None = None
    seed: int = 0
    replica_cooldown_s: float = 30.0
    transport: str = "aiohttp"
    allow_insecure_http: bool = False
    # What the endpoint enforces (llm/structured.py): json_schema (OpenAI, vLLM's server), json_object
    # (DashScope: any JSON object, the schema asked in the prompt and checked), vllm (vLLM's extra body:
    # choice, regex, JSON), none (free text read by each step's parser).
    structured_outputs: Literal["json_schema", "json_object", "vllm", "none"] = "none"


class TransformersModel(ModelConfig):
    """A local model run by transformers (llm/transformers_backend.py)."""

    backend: Literal["transformers"] = "transformers"
    batch_size: int = 8
    device: str = "auto"
    chat_template: str = "auto"
    dtype: str = "auto"
    # xgrammar: JSON schemas and regexes by a grammar-constrained logits processor, closed choices by the
    # log-likelihood of each option; none: free text read by each step's parser.
    structured_outputs: Literal["xgrammar", "none"] = "none"


class VLLMModel(ModelConfig):
    """A local model run by vLLM in this process (llm/vllm_backend.py; the vllm extra)."""

    backend: Literal["vllm"] = "vllm"
    chat_template: str = "auto"
    chunk_size: int = 1024
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.85
    max_model_len: int | None = None
    dtype: str = "auto"
    seed: int = 0
    enforce_eager: bool = False
    attention_backend: str | None = None
    structured_outputs: Literal["vllm", "none"] = "none"  # vllm: its structured-output sampling params


MODEL_CONFIGS: dict[str, type[ModelConfig]] = {
    "openai": OpenAIModel,
    "transformers": TransformersModel,
    "vllm": VLLMModel,
}
AnyModel = Annotated[Union[OpenAIModel, TransformersModel, VLLMModel], Field(discriminator="backend")]


def model_from_parts(backend: str, model: str, options: Mapping[str, Any], params: Mapping[str, Any]) -> ModelConfig:
    """A model's typed config from its parts (a candidate row, a test)."""
    if backend not in MODEL_CONFIGS:
        raise ConfigError(f"backend must be one of {sorted(MODEL_CONFIGS)}, got {backend!r}")
    return MODEL_CONFIGS[backend](model=model, params=GenerationConfig(**params), **options)


class Role:
    """One role's model; the judge may be a panel (`models.judge` a list): this is its first member, the
    others are `panel`; label verdicts are the panel's majority, numeric scores the first member's."""

    def __init__(self, members: list[ModelConfig]):
        self.config, self.panel = members[0], tuple(members[1:])

    @property
    def backend(self) -> str:
        return self.config.backend

    @property
    def model(self) -> str:
        return self.config.model

    @property
    def options(self) -> dict[str, Any]:
        return self.config.options

    @property
    def members(self) -> tuple[ModelConfig, ...]:
        return (self.config, *self.panel)


class Models(Strict):
    labeler: AnyModel
    attacker: AnyModel
    responder: AnyModel
    judge: Annotated[list[AnyModel], BeforeValidator(lambda v: [v] if isinstance(v, dict) else v), Field(min_length=1)]
    scorer: AnyModel
    trainee: AnyModel

    @model_validator(mode="before")
    @classmethod
    def _panels_only_for_panel_roles(cls, values: Any) -> Any:
        listed = [role for role, value in (values or {}).items() if isinstance(value, list) and role not in PANEL_ROLES]
        if listed:
            raise ValueError(f"{', '.join(listed)}: only {', '.join(PANEL_ROLES)} may list several models (a panel)")
        return values

    @field_validator(*ROLES, mode="after")
    @classmethod
    def _judge_formats(cls, value: Any, info: ValidationInfo) -> Any:
        """A guard format only on models.judge entries, each sent its card's whole prompt (no chat template)."""
        members = value if isinstance(value, list) else [value]
        for index, member in enumerate(members):
            entry = f"[{index}]." if len(members) > 1 else ""  # the error's key already names models.<role>
            kind = member.judge_format
            if not 0 < member.guard_threshold < 1:
                raise ValueError(f"{entry}guard_threshold must be between 0 and 1, got {member.guard_threshold}")
            if kind == "madef":
                continue
            if info.field_name != "judge":
                raise ValueError(f"{entry}judge_format {kind!r} is for models.judge entries only (a guard as judge)")
            key, wanted = ("api", "completions") if member.backend == "openai" else ("chat_template", "never")
            if getattr(member, key) != wanted:
                raise ValueError(
                    f"{entry}{key} must be {wanted!r} for judge_format {kind!r} (got {getattr(member, key)!r}): "
                    "a guard is sent its model card's whole prompt"
                )
        return value


assert tuple(Models.model_fields) == ROLES and PANEL_ROLES == ("judge",), "Models lists the roles"


# --- data ----------------------------------------------------------------------------------------


class Ingest(Strict):
    max_prompt_chars: PositiveInt = 8000
    max_quarantine_share: Fraction = 0.05
    max_file_bytes: PositiveInt = DEFAULT_MAX_FILE_BYTES  # each input file, and a zip archive's members together


class SourceFile(Strict):
    path: ProjectPath
    lang: str | None = None
    answers: ProjectPath | None = None  # SafetyBench: the answers file beside the questions
    config_key: str = ""  # where it is configured (sources.<name>.files[i]), for messages

    @model_validator(mode="before")
    @classmethod
    def _a_bare_path(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value


class SourceConfig(Strict):
    reader: str
    files: tuple[SourceFile, ...]
    known_categories: tuple[str, ...] | None = None
    columns: dict[str, str] = {}
    description: str = ""
    license: License = "unknown"  # the data's terms (madef_assets/defs/selection/card.py); unknown: check
    # Datasets (or configured sources) it was built from, beside its reader's (madef_assets/lineage.py): a
    # profile that trains on a source related to one it evaluates on is refused.
    derived_from: tuple[str, ...] = ()
    # The published split it holds (`train`, `test`): two splits of one dataset are unrelated (CValues-Comparison's
    # train split may be trained on while its test split is evaluated, §4.2); the whole dataset meets every split.
    split: str | None = None
    name: str = ""  # its key under sources
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES  # ingest.max_file_bytes: larger files are refused before reading


# --- the method ----------------------------------------------------------------------------------


class SelectionConfig(Strict):
    perplexity_quantile: Fraction = 0.9
    min_response_safety: float = 0.5
    # A lone candidate (scored alone, `scored_as: single`) has no second answer to be measured against: its own
    # threshold (None: min_response_safety); selection ranks each kind's scores apart.
    min_single_response_safety: float | None = None
    max_instruction_safety: float = 0.8
    per_category_cap: int = 100000


class MethodConfig(Strict):
    """The data-construction method: which sources play which part, sizes, thresholds, gates."""

    attack_sources: tuple[str, ...] = ()
    train_sources: tuple[str, ...] = ()
    eval_sources: tuple[str, ...] = ()
    general_sources: tuple[str, ...] = ()
    label_sample_per_source: int | None = None
    # A raw intent label the taxonomy file does not map takes the labeler's constrained choice (taxonomy_choices)
    # when its confidence (the option's probability over the 15 options) reaches this; else a person decides.
    taxonomy_choice_min_confidence: Fraction = 0.9
    # false: one answer at temperature 0 even on a local backend (confidence null: every choice left to a person)
    taxonomy_choice_scores: bool = True
    seed: int = 0
    # Attack prompts per category (rejection sampling keeps at most this many; generation fills up to it). null:
    # derived from sft_total and the share of each category's prompts that reached the SFT set in the last build
    # (defs/diversity/volume.py).
    quota_per_category: PositiveInt | None = 1000
    # `madef run` builds the data again, up to this many times in all, while the SFT set falls short of sft_total
    # and the derived quotas grow (each build asks only for what the ledger does not hold).
    volume_rounds: PositiveInt = 1
    # Generation fills each category's deficit to the quota, split over these routes (defs/diversity/routes.py);
    # augment_max_per_category caps the new prompts planned per category (None: the whole deficit).
    augment_routes: tuple[Literal[AUGMENT_ROUTES], ...] = Field(AUGMENT_ROUTES, min_length=1)
    augment_max_per_category: int | None = None
    # Rounds of generation: after a round, the categories whose kept prompts (after refusals, copies and the
    # rejection sampling) fall short of what was wanted are generated for again with requests not sent before,
    # until none is short or the rounds are spent (the metadata says which categories stayed short and why).
    augment_rounds: PositiveInt = 1
    near_duplicate_threshold: float = 0.8
    minhash_permutations: int = 128
    max_parse_failure_rate: float = 0.2
    max_refusal_rate: float = 0.1  # refused or moderated answers, gated apart from parse failures
    rejection_sampling: bool = True  # generated prompts kept only when labeled with their category
    general_sample_size: int = 40000
    general_zh_share: Fraction | None = None  # Chinese share of the general sample (None: languages in proportion)
    sft_total: int | None = None  # target rows of the SFT set, general sample included (None: all that pass)
    contamination_zh_chars: int = 13
    contamination_en_words: int = 8
    # Remove SFT rows that share a long n-gram with an evaluation prompt (and count them) before the gate;
    # false: the gate blocks the whole set instead.
    decontaminate: bool = True
    sft_export_dir: ProjectPath | None = None  # None: <state_dir>/sft_dataset
    sft_formats: tuple[str, ...] = ("alpaca",)
    required_categories: tuple[str, ...] | None = None  # None: all 14; the attack-prompt gate blocks on a missing one
    # The judge's response-safety prompts (reward step and its qualification): `paper` is §3.7's safety
    # assessment expert scoring safety alone; `helpful` is madef's variant that also weighs accuracy and
    # completeness and ranks a helpful safe answer above a bare refusal (defs/reward/scores.py).
    response_safety_prompt: Literal["paper", "helpful"] = "paper"
    selection: SelectionConfig = SelectionConfig()

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, values: Any) -> Any:
        if isinstance(values, dict) and "augment_per_route" in values:
            raise ValueError(
                "augment_per_route was replaced by augment_routes and augment_max_per_category "
                "(generation fills each category's deficit to quota_per_category)"
            )
        return values

    @model_validator(mode="after")
    def _consistent(self) -> MethodConfig:
        overlap = set(self.train_sources) & set(self.eval_sources)
        if overlap:
            raise ValueError(f"{sorted(overlap)} cannot be both train_sources and eval_sources")
        if self.quota_per_category is None and self.sft_total is None:
            raise ValueError("quota_per_category: null derives the quotas from sft_total, which is not set")
        safety_rows = (self.sft_total or 0) - self.general_sample_size
        if self.quota_per_category is None and self.selection.per_category_cap * 14 < safety_rows:  # Table 4-1
            raise ValueError(
                f"selection.per_category_cap ({self.selection.per_category_cap}) × 14 categories cannot hold the "
                f"{safety_rows} safety rows sft_total leaves, which the derived quotas split evenly"
            )
        if self.sft_total is not None and self.sft_total < self.general_sample_size:
            raise ValueError(f"sft_total ({self.sft_total}) must hold general_sample_size ({self.general_sample_size})")
        return self


# --- training ------------------------------------------------------------------------------------


def rate_label(rate: float) -> str:
    """A learning rate as a partition key and name suffix: 6e-07 -> `lr6e-7`, 0.0002 -> `lr0.0002`."""
    return "lr" + re.sub(r"e([+-])0*(\d)", r"e\1\2", format(rate, "g"))


class TrainingConfig(Strict):
    """LLaMA-Factory fine-tuning: its environment's Python, where checkpoints go, YAML arguments over the
    paper's defaults (madef_assets/defs/training/llamafactory_config.py) and the learning rates to train
    with (§5.1.1's comparison). One rate: one unpartitioned checkpoint in `output_dir`, as before; several:
    one checkpoint per rate (`finetuned_checkpoint` partitioned by `rate_labels`) in `output_dir/<label>`.
    Without `learning_rates`, the one rate of `args.learning_rate` (default: the paper's 6e-7)."""

    env_python: ProjectPath = Path(".venv-train/bin/python")
    output_dir: ProjectPath | None = None  # None: <state_dir>/checkpoints/finetuned
    args: dict[str, Any] = {}
    learning_rates: tuple[Annotated[float, Field(gt=0)], ...] | None = Field(None, min_length=1)
    # How the report chooses among several rates' tuned candidates: `validation_loss` (the lowest final eval
    # loss; needs args.val_size) or a row of eval_report's long table, `<view>: <item>` (the highest value,
    # e.g. `new_safety: OFF`, `general: gsm8k`).
    choose_rate_by: Annotated[str, Field(pattern=r"^(validation_loss|[^:]+:.+)$")] = "validation_loss"

    @model_validator(mode="after")
    def _one_rate_source(self) -> TrainingConfig:
        if self.learning_rates is None:
            self.learning_rates = (float(self.args.get("learning_rate", PAPER_LEARNING_RATE)),)
        elif "learning_rate" in self.args:
            raise ValueError("give learning_rates or args.learning_rate, not both")
        if len(set(self.rate_labels)) != len(self.rate_labels):
            raise ValueError(f"learning_rates: {list(self.learning_rates)} repeats a rate")
        return self

    @property
    def rate_labels(self) -> tuple[str, ...]:
        return tuple(rate_label(rate) for rate in self.learning_rates or ())

    @property
    def partitioned(self) -> bool:
        return len(self.rate_labels) > 1

    def learning_rate(self, label: str) -> float:
        return self.learning_rates[self.rate_labels.index(label)]

    def checkpoint_dir(self, label: str) -> Path:
        return self.output_dir / label if self.partitioned else self.output_dir


# --- evaluation: candidates and each benchmark ---------------------------------------------------


class CandidateModel(Strict):
    """A candidate as the profile writes it: a checkpoint asset of this project (`checkpoint:`), or any
    backend and model (a local path, or an OpenAI-compatible endpoint with `base_url`); a served candidate
    answers raw prompts through `raw_api` (default: its `api`)."""

    checkpoint: Literal[CHECKPOINT_ASSETS] | None = None


class OpenAICandidate(CandidateModel, OpenAIModel):
    model: str | None = None
    raw_api: Literal["completions", "chat", "none"] | None = None


class TransformersCandidate(CandidateModel, TransformersModel):
    model: str | None = None


class VLLMCandidate(CandidateModel, VLLMModel):
    model: str | None = None


AnyCandidate = Annotated[Union[OpenAICandidate, TransformersCandidate, VLLMCandidate], Field(discriminator="backend")]


class CandidateConfig(Strict):
    """A model under evaluation, resolved: its options are what the profile wrote beside backend and model.
    A `checkpoint: finetuned_checkpoint` candidate becomes one candidate per learning rate
    (`<name>_<rate label>`) when training runs at several."""

    name: str
    checkpoint: str | None = None
    backend: str = "transformers"
    model: str | None = None
    options: dict[str, Any] = {}
    rate: str | None = None  # the finetuned_checkpoint partition (rate label) it reads, when trained at several


class SafetyBenchConfig(Strict):
    """SafetyBench (multiple choice): one source per language, `per_category` questions per category (None:
    all), five-shot with a dev file per language, `generate` answers limited to `max_new_tokens`."""

    sources: Annotated[list[str], BeforeValidator(_listed), Field(min_length=1)] = ["safetybench"]
    per_category: int | None = None
    answer_modes: list[Literal["logprobs", "generate"]] = ["logprobs"]
    dev_file: ProjectPath | dict[str, ProjectPath] | None = None
    max_new_tokens: int = 64  # the official generate mode's

    @model_validator(mode="before")
    @classmethod
    def _older_single_source(cls, values: Any) -> Any:
        if isinstance(values, dict) and "source" in values:
            if "sources" in values:
                raise ValueError("give either source or sources (a list: one source per language)")
            values = {**values, "sources": values["source"]}
            del values["source"]
        return values


class NewSafetyConfig(Strict):
    sources: list[str] = []  # the headline: §4.2 samples CValues-Comparison's test split and S-Eval
    # Sources sampled, answered and judged the same way but reported apart, never mixed into the headline (e.g.
    # beavertails_eval: English only, its own 14 harm categories).
    extra_views: list[str] = []
    per_category: int | None = None  # the paper: about 100
    max_new_tokens: int | None = None  # None: evaluation.params

    @model_validator(mode="after")
    def _extra_views_apart(self) -> NewSafetyConfig:
        both = sorted(set(self.sources) & set(self.extra_views))
        if both:
            raise ValueError(f"{both} are both headline sources and extra views")
        return self


class ResponsibilityConfig(Strict):
    prompts_source: str = "cvalues_responsibility"
    per_domain: int | None = None
    mcq_source: str | None = None


class Gsm8kConfig(Strict):
    file: str
    limit: int | None = None
    shots: int = 8
    max_new_tokens: int = 256


class McqConfig(Strict):
    zip: str
    mapping: str
    per_subject: int | None = None
    shots: int = 5


class HumanEvalConfig(Strict):
    file: str
    limit: int | None = None
    max_new_tokens: int = 512
    timeout_s: float = 10
    memory_mb: int = 1024


class GeneralConfig(Strict):
    data_dir: ProjectPath = Path("data/general_eval")
    gsm8k: Gsm8kConfig | None = None
    mmlu: McqConfig | None = None
    cmmlu: McqConfig | None = None
    ceval: McqConfig | None = None
    humaneval: HumanEvalConfig | None = None

    def mcq(self) -> dict[str, McqConfig]:
        """The configured multiple-choice benchmarks, by name."""
        return {name: spec for name in ("mmlu", "cmmlu", "ceval") if (spec := getattr(self, name)) is not None}


class OverRefusalConfig(Strict):
    source: str | None = None
    per_type: int | None = None
    max_new_tokens: int | None = None


class ForbiddenPromptFile(Strict):
    """A forbidden-prompt CSV as published: StrongREJECT (category, source, forbidden_prompt), HarmBench's
    behaviors (Behavior, FunctionalCategory, SemanticCategory, Tags, ContextString, BehaviorID) or
    JailbreakBench's JBB-Behaviors (Index, Goal, Target, Behavior, Category, Source)."""

    path: ProjectPath
    format: Literal["strongreject", "harmbench", "jailbreakbench"]
    lang: str | None = None  # None: detected per prompt


class JailbreakRubricConfig(Strict):
    """The jailbreak rubric benchmark (defs/evaluation/jailbreak_rubric.py): forbidden prompts from `files`
    (none: off), `per_language` of them per language (seeded; None: all), each wrapped by every one of `methods`
    (`none`: the plain prompt; the others: prompts/jailbreak_wrappers.json), answered with `max_new_tokens`
    and graded with the StrongREJECT rubric by the judge, which may write `judge_max_new_tokens`."""

    files: list[ForbiddenPromptFile] = []
    per_language: PositiveInt | None = None
    methods: Annotated[list[str], Field(min_length=1)] = ["none", "positive_induction", "instruction_jailbreak"]
    max_new_tokens: int | None = None  # None: evaluation.params
    judge_max_new_tokens: PositiveInt = 256


class LlamaFactoryEvalConfig(Strict):
    """LLaMA-Factory's own evaluator: `template` for every local candidate (None: training.args.template),
    `templates` per candidate name (as evaluated), `batch_size` (EvaluationArguments')."""

    enabled: bool = True
    template: str | None = None
    templates: dict[str, str] = {}
    batch_size: PositiveInt = 4


class EvaluationConfig(Strict):
    """Candidates, their generation parameters and each benchmark's data and sample sizes."""

    candidate_specs: dict[str, AnyCandidate] = Field({}, alias="candidates")
    params: GenerationConfig = GenerationConfig()
    seed: int = 0
    safetybench: SafetyBenchConfig = SafetyBenchConfig()
    new_safety: NewSafetyConfig = NewSafetyConfig()
    responsibility: ResponsibilityConfig = ResponsibilityConfig()
    general: GeneralConfig = GeneralConfig()
    over_refusal: OverRefusalConfig = OverRefusalConfig()
    jailbreak_rubric: JailbreakRubricConfig = JailbreakRubricConfig()
    llamafactory_eval: LlamaFactoryEvalConfig = LlamaFactoryEvalConfig()
    review_dir: ProjectPath | None = None  # None: <state_dir>/review
    report_dir: ProjectPath | None = None  # None: <state_dir>/reports/evaluation
    _resolved: tuple[CandidateConfig, ...] = PrivateAttr(default=())

    @field_validator("candidate_specs", mode="before")
    @classmethod
    def _local_by_default(cls, candidates: Any) -> Any:
        if not isinstance(candidates, dict):
            return candidates
        return {n: {"backend": "transformers", **s} if isinstance(s, dict) else s for n, s in candidates.items()}

    @field_validator("candidate_specs")
    @classmethod
    def _candidates(cls, candidates: dict[str, Any]) -> dict[str, Any]:
        for name, spec in candidates.items():
            if not str(name).replace("_", "").isalnum():
                raise ValueError(f"{name}: a candidate name is letters, digits and _ only")
            if spec.checkpoint is None and spec.model is None:
                raise ValueError(f"{name}: needs either checkpoint or backend + model")
        return candidates

    @property
    def candidates(self) -> tuple[CandidateConfig, ...]:
        """The candidates evaluated (one per learning rate for a finetuned_checkpoint one, when several)."""
        return self._resolved


# --- operations ----------------------------------------------------------------------------------


class Schedule(Strict):
    cron: str
    enabled: bool = False


class Schedules(Strict):
    evaluate_candidates: Schedule = Schedule(cron="0 2 * * *")
    rebuild_sft_dataset: Schedule = Schedule(cron="0 3 * * 0")


class AutomationConfig(Strict):
    """Sensors (source files → new data versions → eager re-materialization) and schedules."""

    sensors_running: bool = True
    source_poll_seconds: int = 60
    timezone: str = "UTC"
    schedules: Schedules = Schedules()


class ExecutionConfig(Strict):
    """How a run's steps run, and how many independent runs (candidates, learning rates) `madef run`
    launches at once."""

    executor: Literal["in_process", "multiprocess", "k8s", "celery"] = "in_process"
    max_concurrent_runs: PositiveInt = 1


class QualificationConfig(Strict):
    """The judge measured against human labels (XSTest's answers, `gold_dir`; PKU-SafeRLHF's pairs,
    `pku_gold_file`) before its scores are used: `per_model` XSTest answers per answering model (null: all
    450 each) and `pku_pairs` pairs (null: all), seeded; the gate needs Cohen's kappa >= `min_kappa` on
    the refusal task and at most `max_uncertain_rate` unparsed answers. `gate: warn` reports a judge that
    does not qualify without stopping what depends on it (say why in `gate_reason`).

    The labeler is measured against the source categories of `labeler_sources` (configured sources only;
    null: those of s_eval and xsafety that are configured; empty: no labeler qualification is built and
    intent_labels waits for none), `labeler_per_category` prompts per language and category (null: all),
    seeded with `seed`; its gate needs kappa >= `labeler_min_kappa` over all languages and at most
    `labeler_max_uncertain_rate` prompts without a category; `gate` and `gate_reason` apply to both."""

    gold_dir: ProjectPath = Path("data/xstest")
    pku_gold_file: ProjectPath = Path("data/pku_saferlhf/preference_train.json")
    per_model: int | None = None
    pku_pairs: PositiveInt | None = None
    seed: int = 0
    n_resamples: int = 1000
    min_kappa: float = 0.6
    max_uncertain_rate: float = 0.1
    gate: Literal["block", "warn"] = "block"
    gate_reason: str = ""
    labeler_sources: tuple[str, ...] | None = None
    labeler_per_category: int | None = None
    labeler_min_kappa: float = 0.6
    labeler_max_uncertain_rate: float = 0.1

    @model_validator(mode="after")
    def _a_reason_to_warn(self) -> QualificationConfig:
        if self.gate == "warn" and not self.gate_reason.strip():
            raise ValueError("gate: warn needs a gate_reason saying why an unqualified judge or labeler may be used")
        return self


class GpuConfig(Strict):
    """When loaded local models give their memory back: `per_asset` closes every engine an asset loaded
    when the asset ends; `per_run` keeps them for the next asset of the run. Either way every engine is
    closed before training, which starts only when the GPU has `training_min_free_fraction` free."""

    release: Literal["per_asset", "per_run"] = "per_run"
    training_min_free_fraction: Fraction = 0.9


class SandboxConfig(Strict):
    """How model-written code (HumanEval) runs: `bubblewrap` isolates each program (no network, no host
    files, no new processes; defs/evaluation/sandbox.py), `rlimits` only limits its resources."""

    isolation: Literal["bubblewrap", "rlimits"] = "bubblewrap"


# --- the profile ---------------------------------------------------------------------------------


class Settings(Strict):
    profile: str | None = None  # None: the file's name
    state_dir: ProjectPath = Path("state")
    duckdb_location: str | None = Field(None, alias="duckdb_path")  # None: <state_dir>/madef.duckdb
    ducklake_data_path: str | None = None
    duckdb_lock_wait_seconds: float | None = None
    models_dir: ProjectPath | None = None  # None: <state_dir>/models
    ingest: Ingest = Ingest()
    sources: dict[str, SourceConfig] = {}
    method: MethodConfig = MethodConfig()
    training: TrainingConfig = TrainingConfig()
    execution: ExecutionConfig = ExecutionConfig()
    automation: AutomationConfig = AutomationConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    models: Models
    gpu: GpuConfig = GpuConfig()
    sandbox: SandboxConfig = SandboxConfig()
    taxonomy: ProjectPath = Path("config/taxonomy.yaml")
    qualification: QualificationConfig = QualificationConfig()

    _path: Path = PrivateAttr(default=Path())
    _storage: Storage | None = PrivateAttr(default=None)

    @field_validator("sources", mode="before")
    @classmethod
    def _derived_keys_not_written(cls, sources: Any) -> Any:
        """A source's name, size cap and its files' config keys come from where they are written, not from keys."""
        for name, spec in (sources or {}).items() if isinstance(sources, dict) else ():
            files = spec.get("files") or [] if isinstance(spec, dict) else []
            written = set(spec) & {"name", "max_file_bytes"} if isinstance(spec, dict) else set()
            written |= {"config_key"} if any(isinstance(f, dict) and "config_key" in f for f in files) else set()
            if written:
                raise ValueError(f"{name}: {sorted(written)} are set by madef (max_file_bytes: ingest.max_file_bytes)")
        return sources

    @model_validator(mode="after")
    def _resolve(self) -> Settings:
        """Defaults under state_dir, each source's name and file keys, and every cross-section reference."""
        state = self.state_dir
        self.models_dir = self.models_dir or state / "models"
        self.method.sft_export_dir = self.method.sft_export_dir or state / "sft_dataset"
        self.training.output_dir = self.training.output_dir or state / "checkpoints" / "finetuned"
        self.evaluation.review_dir = self.evaluation.review_dir or state / "review"
        self.evaluation.report_dir = self.evaluation.report_dir or state / "reports" / "evaluation"
        for name, source in self.sources.items():
            source.name, source.max_file_bytes = name, self.ingest.max_file_bytes
            for index, file in enumerate(source.files):
                file.config_key = f"sources.{name}.files[{index}]"
        configured = set(self.sources)
        for key, names in self._source_references().items():
            if key.startswith("evaluation.") and not self.evaluation.candidate_specs:
                continue  # nothing is evaluated: the benchmarks' sources are not read
            missing = sorted({n for n in names if n is not None} - configured)
            if missing:
                raise ValueError(f"{key}: {missing} are not configured under sources")
        if self.evaluation.candidate_specs:
            self._refuse_training_on_evaluation_data()
        qualification = self.qualification
        if qualification.labeler_sources is None:
            qualification.labeler_sources = tuple(n for n in DEFAULT_LABELER_SOURCES if n in configured)
        self.evaluation._resolved = tuple(self._expand_candidates())
        names = [c.name for c in self.evaluation._resolved]
        unknown = sorted(set(self.evaluation.llamafactory_eval.templates) - set(names))
        if unknown:
            raise ValueError(f"evaluation.llamafactory_eval.templates: {unknown} are not candidates ({names})")
        return self

    def _refuse_training_on_evaluation_data(self) -> None:
        """The sources that can enter the SFT set against those a benchmark evaluates on (the contamination
        reference, method.eval_sources, is neither: it is what the SFT set is checked against)."""
        references = self._source_references()
        trained = {k: references[k] for k in ("method.train_sources", "method.general_sources")}
        evaluated = {k: [n for n in names if n] for k, names in references.items() if k.startswith("evaluation.")}
        sources = {
            name: SourceLineage(s.reader, s.derived_from, tuple(f.path for f in s.files), s.split)
            for name, s in self.sources.items()
        }
        problems = related_pairs(trained, evaluated, sources)
        if problems:
            raise ValueError(
                "a model would be evaluated on data it was trained on: "
                + "; ".join(problems)
                + ". Train and evaluate on unrelated sources (the paper trains on Safety-Prompts and generated "
                "prompts, §3.3, and evaluates on CValues-Comparison's test split and S-Eval, §4.2); a source's "
                "lineage is its reader's plus sources.<name>.derived_from"
            )
        new_safety = self.evaluation.new_safety
        unchecked = sorted((set(new_safety.sources) | set(new_safety.extra_views)) - set(self.method.eval_sources))
        if unchecked:
            raise ValueError(
                f"evaluation.new_safety samples {unchecked}, which method.eval_sources does not list: the SFT set "
                "is checked for contamination against method.eval_sources only"
            )

    def _source_references(self) -> dict[str, list[str | None]]:
        method, evaluation = self.method, self.evaluation
        return {
            **{f"method.{k}": list(getattr(method, k)) for k in ("attack_sources", "train_sources", "eval_sources")},
            "method.general_sources": list(method.general_sources),
            "evaluation.new_safety.sources": evaluation.new_safety.sources,
            "evaluation.new_safety.extra_views": evaluation.new_safety.extra_views,
            "evaluation.safetybench.sources": evaluation.safetybench.sources,
            "evaluation.responsibility.prompts_source": [evaluation.responsibility.prompts_source],
            "evaluation.responsibility.mcq_source": [evaluation.responsibility.mcq_source],
            "evaluation.over_refusal.source": [evaluation.over_refusal.source],
            "qualification.labeler_sources": list(self.qualification.labeler_sources or ()),
        }

    def _expand_candidates(self) -> list[CandidateConfig]:
        """§5.1.1: with several learning rates, a finetuned_checkpoint candidate is one candidate per rate
        (`tuned` -> `tuned_lr6e-7`, `tuned_lr1e-6`), each reading its rate's partition; otherwise it is
        itself. A served one cannot follow: one endpoint serves one checkpoint."""
        labels = self.training.rate_labels if self.training.partitioned else ()
        candidates = []
        for name, spec in self.evaluation.candidate_specs.items():
            written = spec.model_dump(exclude_unset=True, exclude={"backend", "model", "checkpoint", "params"})
            candidate = CandidateConfig(
                name=name, checkpoint=spec.checkpoint, backend=spec.backend, model=spec.model, options=written
            )
            if spec.checkpoint != "finetuned_checkpoint" or not labels:
                candidates.append(candidate)
            elif spec.backend == "openai":
                raise ValueError(
                    f"evaluation.candidates.{name}: a served finetuned_checkpoint candidate needs a "
                    "single training rate (one endpoint serves one checkpoint); evaluate the rates with a local "
                    "candidate ({checkpoint: finetuned_checkpoint}) or train one rate"
                )
            else:
                candidates += [
                    candidate.model_copy(update={"name": f"{name}_{label}", "rate": label}) for label in labels
                ]
        return candidates

    # --- what the rest of madef reads -----------------------------------------------------------

    @property
    def profile_path(self) -> Path:
        return self._path

    @property
    def storage(self) -> Storage:
        assert self._storage is not None, "Settings are made by parse_settings"
        return self._storage

    @property
    def duckdb_path(self) -> Path:
        """The local DuckDB file (an error for DuckLake storage, which has none)."""
        return self.storage.path

    @property
    def roles(self) -> dict[str, Role]:
        return {
            role: Role(value if isinstance(value, list) else [value])
            for role in ROLES
            for value in (getattr(self.models, role),)
        }

    @property
    def taxonomy_path(self) -> Path:
        return self.taxonomy

    @property
    def max_prompt_chars(self) -> int:
        return self.ingest.max_prompt_chars

    @property
    def max_quarantine_share(self) -> float:
        return self.ingest.max_quarantine_share

    @property
    def executor(self) -> str:
        return self.execution.executor

    @property
    def max_concurrent_runs(self) -> int:
        return self.execution.max_concurrent_runs


# --- reading a profile ---------------------------------------------------------------------------

ENV_OVERRIDES = {
    "MADEF_STATE_DIR": ("state_dir",),
    "MADEF_DUCKDB_PATH": ("duckdb_path",),
    "MADEF_DUCKLAKE_DATA_PATH": ("ducklake_data_path",),
    "MADEF_DUCKDB_LOCK_WAIT_SECONDS": ("duckdb_lock_wait_seconds",),
    "MADEF_MODELS_DIR": ("models_dir",),
    "MADEF_TRAIN_PYTHON": ("training", "env_python"),
}


def profile_path(profile: str) -> Path:
    candidate = Path(profile)
    if candidate.suffix in (".yaml", ".yml"):
        return candidate.resolve()
    path = CONFIG_DIR / f"{profile}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"MADEF_PROFILE={profile!r}: no {path}; known profiles: {known}")
    return path


def with_environment(raw: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """The profile with the environment's overrides (ENV_OVERRIDES) written in."""
    raw = {**raw}
    for variable, (*parents, key) in ENV_OVERRIDES.items():
        if env.get(variable):
            section = raw
            for parent in parents:
                section[parent] = section = {**(section.get(parent) or {})}
            section[key] = env[variable]
    return raw


def parse_settings(raw: dict[str, Any], path: Path, env: Mapping[str, str]) -> Settings:
    """The profile `raw` (read from `path`) with the environment's overrides, checked whole: every problem
    is listed, each naming its key (an unknown key with the allowed ones)."""
    from madef_assets.secret_hygiene import openai_endpoint_problems

    try:
        settings = Settings.model_validate(with_environment(raw, env))
    except ValidationError as error:
        raise ConfigError(f"{path}:\n  " + "\n  ".join(describe(e) for e in error.errors())) from None
    problems = [
        f"{where}.base_url: {problem}"
        for where, config in _served_models(settings)
        for problem in openai_endpoint_problems(config)
    ]
    if problems:
        raise ConfigError(f"{path}:\n  " + "\n  ".join(problems))
    settings._path = path
    settings.profile = settings.profile or path.stem
    settings._storage = parse_storage(
        settings.duckdb_location or settings.state_dir / "madef.duckdb",
        settings.ducklake_data_path,
        settings.duckdb_lock_wait_seconds,
        PROJECT_ROOT,
    )
    return settings


def parse_section(section: str, raw: Any) -> Any:
    """One top-level section of a profile checked alone (a test of one setting); errors name the key."""
    try:
        return TypeAdapter(Settings.model_fields[section].annotation).validate_python(raw)
    except ValidationError as error:
        problems = [describe({**e, "loc": (section, *e["loc"])}) for e in error.errors()]
        raise ConfigError("\n".join(problems)) from None


def _served_models(settings: Settings) -> list[tuple[str, dict[str, Any]]]:
    served = []
    for role in ROLES:
        members = settings.roles[role].members
        for index, member in enumerate(members):
            where = f"models.{role}" + (f"[{index}]" if len(members) > 1 else "")
            if member.backend == "openai":
                served.append((where, member.options))
    for name, spec in settings.evaluation.candidate_specs.items():
        if spec.backend == "openai":
            served.append((f"evaluation.candidates.{name}", spec.options))
    return served


def describe(error: Mapping[str, Any]) -> str:
    """One validation error as `dotted.key: what is wrong`; an unknown key lists the allowed ones."""
    key, model = [], Settings
    for part in error["loc"]:
        if isinstance(part, int):
            key[-1:] = [f"{key[-1]}[{part}]"] if key else [f"[{part}]"]
        elif part in MODEL_CONFIGS and not _has_field(model, part):
            pass  # the backend tag of a model or candidate: not a key
        else:
            key.append(str(part))
        model = _inner_model(model, part)
    where = ".".join(key)
    message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if error["type"] == "extra_forbidden":
        parent = _model_at(error["loc"][:-1])
        names = sorted(field.alias or name for name, field in parent.model_fields.items()) if parent else []
        allowed = f"; allowed: {', '.join(names)}" if names else ""
        return f"{where}: unknown {'top-level ' if len(key) == 1 else ''}key{allowed}"
    if error["type"] in ("union_tag_not_found", "union_tag_invalid"):
        return f"{where}: needs backend (one of {', '.join(MODEL_CONFIGS)}) and model"
    if error["type"] == "missing":
        return f"{'.'.join(key[:-1]) or 'profile'}: missing key '{key[-1]}'" if key else message
    return f"{where}: {message}" if where else message


def _field(model: Any, name: Any) -> Any:
    """The field `name` (or the field of that alias) of a model class, else None."""
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return None
    return next((f for n, f in model.model_fields.items() if name in (n, f.alias)), None)


def _has_field(model: Any, name: Any) -> bool:
    return _field(model, name) is not None


def _model_at(loc: tuple) -> type[BaseModel] | None:
    model: Any = Settings
    for part in loc:
        model = _inner_model(model, part)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _inner_model(model: Any, part: Any) -> Any:
    """What sits at `part` inside `model` (a model class, or a container/union annotation)."""
    if _has_field(model, part):
        return _field(model, part).annotation
    for candidate in _alternatives(model):
        if _has_field(candidate, "backend") and part in get_args(candidate.model_fields["backend"].annotation):
            return candidate  # a discriminated union's tag
    for candidate in _alternatives(model):
        origin = get_origin(candidate)
        if origin in (list, tuple) and isinstance(part, int):
            return get_args(candidate)[0]
        if origin is dict and isinstance(part, str):
            return get_args(candidate)[1]
    return model


def _alternatives(annotation: Any) -> list[Any]:
    """The types an annotation may be (Annotated, Optional and Union unwrapped)."""
    if get_origin(annotation) is Annotated:
        return _alternatives(get_args(annotation)[0])
    if get_origin(annotation) in (Union, type(int | None)):
        return [t for arg in get_args(annotation) for t in _alternatives(arg)]
    return [annotation]


def load_settings(profile: str | None = None, env: Mapping[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    path = profile_path(profile or env.get("MADEF_PROFILE") or "demo")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return parse_settings(raw, path, env)


@lru_cache(maxsize=1)
def current_settings() -> Settings:
    """The settings of this process (profile and paths from the environment), read once."""
    return load_settings()
