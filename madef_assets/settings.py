"""Profile configuration: one YAML file per profile under `config/`.

A profile chooses data paths, sample sizes, limits and the model for each LLM role. Environment
variables override the profile choice and the storage paths:

- `MADEF_PROFILE`: a profile name (`demo`, `production`) or a path to a YAML file;
- `MADEF_STATE_DIR`: the folder for the DuckDB file, converted models, reports and Dagster's state;
- `MADEF_DUCKDB_PATH`: where the tables live (`duckdb_path`): a DuckDB file, or
  `ducklake:postgres:<libpq conninfo>` with `MADEF_DUCKLAKE_DATA_PATH` (`ducklake_data_path`; madef_assets/storage.py);
- `MADEF_DUCKDB_LOCK_WAIT_SECONDS`: how long a connection waits for a DuckDB file another process holds;
- `MADEF_MODELS_DIR`: where bundled and GGUF models are converted (default `<state>/models`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from madef_assets.project import CONFIG_DIR, PANEL_ROLES, PROJECT_ROOT, ROLES, ConfigError, resolve_path

if TYPE_CHECKING:
    from madef_assets.storage import Storage

PATH_OPTIONS = ("answers",)
# ingest.max_file_bytes when the profile sets none: each input file, and each zip archive's members together.
DEFAULT_MAX_FILE_BYTES = 1 << 30
# The generation routes of §3.5 (madef_assets/defs/diversity/routes.py), in the order deficits are split.
AUGMENT_ROUTES = ("keyword_fewshot", "derived_question", "attack_rewrite")


@dataclass(frozen=True)
class SourceFile:
    path: Path
    config_key: str
    lang: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceConfig:
    name: str
    reader: str
    files: tuple[SourceFile, ...]
    known_categories: tuple[str, ...] | None
    columns: dict[str, str]
    description: str
    license: str = "unknown"  # SPDX-like id of the data's terms (madef_assets/defs/selection/card.py); unknown: check
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES  # ingest.max_file_bytes: larger files are refused before reading


@dataclass(frozen=True)
class RoleConfig:
    """One role's model. The judge may be a panel (`models.judge` a list): this is its first member, the
    others are `panel`; label verdicts are the panel's majority, numeric scores the first member's."""

    role: str
    backend: str
    model: str
    params: dict[str, Any]
    options: dict[str, Any]
    panel: tuple[RoleConfig, ...] = ()


@dataclass(frozen=True)
class SelectionConfig:
    perplexity_quantile: float = 0.9
    min_response_safety: float = 0.5
    # A lone candidate (scored alone, `scored_as: single`) has no second answer to be measured against: its own
    # threshold (None: min_response_safety); selection ranks each kind's scores apart.
    min_single_response_safety: float | None = None
    max_instruction_safety: float = 0.8
    per_category_cap: int = 100000


@dataclass(frozen=True)
class MethodConfig:
    """The data-construction method: which sources play which part, sizes, thresholds, gates."""

    attack_sources: tuple[str, ...] = ()
    train_sources: tuple[str, ...] = ()
    eval_sources: tuple[str, ...] = ()
    general_sources: tuple[str, ...] = ()
    label_sample_per_source: int | None = None
    seed: int = 0
    quota_per_category: int = 1000
    # Generation fills each category's deficit to the quota, split over these routes (defs/diversity/routes.py);
    # augment_max_per_category caps the new prompts planned per category (None: the whole deficit).
    augment_routes: tuple[str, ...] = AUGMENT_ROUTES
    augment_max_per_category: int | None = None
    near_duplicate_threshold: float = 0.8
    minhash_permutations: int = 128
    max_parse_failure_rate: float = 0.2
    max_refusal_rate: float = 0.1  # refused or moderated answers, gated apart from parse failures
    rejection_sampling: bool = True  # generated prompts kept only when labeled with their category
    general_sample_size: int = 40000
    general_zh_share: float | None = None  # Chinese share of the general sample (None: languages in proportion)
    sft_total: int | None = None  # target rows of the SFT set, general sample included (None: all that pass)
    contamination_zh_chars: int = 13
    contamination_en_words: int = 8
    # Remove SFT rows that share a long n-gram with an evaluation prompt (and count them) before the gate;
    # false: the gate blocks the whole set instead.
    decontaminate: bool = True
    sft_export_dir: Path | None = None
    sft_formats: tuple[str, ...] = ("alpaca",)
    required_categories: tuple[str, ...] | None = None  # None: all 14; the attack-prompt gate blocks on a missing one
    selection: SelectionConfig = field(default_factory=SelectionConfig)


@dataclass(frozen=True)
class TrainingConfig:
    """LLaMA-Factory fine-tuning: its environment's Python, where checkpoints go, YAML arguments over the
    paper's defaults (madef_assets/defs/training/llamafactory_config.py) and the learning rates to train
    with (§5.1.1's comparison). One rate: one unpartitioned checkpoint in `output_dir`, as before; several:
    one checkpoint per rate (`finetuned_checkpoint` partitioned by `rate_labels`) in `output_dir/<label>`."""

    env_python: Path
    output_dir: Path
    args: dict[str, Any]
    learning_rates: tuple[float, ...] = (6.0e-7,)

    @property
    def rate_labels(self) -> tuple[str, ...]:
        return tuple(rate_label(rate) for rate in self.learning_rates)

    @property
    def partitioned(self) -> bool:
        return len(self.learning_rates) > 1

    def learning_rate(self, label: str) -> float:
        return self.learning_rates[self.rate_labels.index(label)]

    def checkpoint_dir(self, label: str) -> Path:
        return self.output_dir / label if self.partitioned else self.output_dir


def rate_label(rate: float) -> str:
    """A learning rate as a partition key and name suffix: 6e-07 -> `lr6e-7`, 0.0002 -> `lr0.0002`."""
    return "lr" + re.sub(r"e([+-])0*(\d)", r"e\1\2", format(rate, "g"))


@dataclass(frozen=True)
class CandidateConfig:
    """A model under evaluation: a checkpoint asset of this project (`checkpoint:`), or any backend and
    model (a local path, or an OpenAI-compatible endpoint with `base_url`). A `checkpoint: finetuned_checkpoint`
    candidate becomes one candidate per learning rate (`<name>_<rate label>`) when training runs at several."""

    name: str
    checkpoint: str | None
    backend: str
    model: str | None
    options: dict[str, Any]
    rate: str | None = None  # the finetuned_checkpoint partition (rate label) it reads, when trained at several rates


@dataclass(frozen=True)
class EvaluationConfig:
    """Candidates, their generation parameters and each benchmark's data and sample sizes."""

    candidates: tuple[CandidateConfig, ...]
    params: dict[str, Any]
    seed: int
    safetybench: dict[str, Any]
    new_safety: dict[str, Any]
    responsibility: dict[str, Any]
    general: dict[str, Any]
    over_refusal: dict[str, Any]
    llamafactory_eval: dict[str, Any]
    review_dir: Path
    report_dir: Path


@dataclass(frozen=True)
class AutomationConfig:
    """Sensors (source files → new data versions → eager re-materialization) and schedules."""

    sensors_running: bool = True
    source_poll_seconds: int = 60
    evaluate_cron: str = "0 2 * * *"
    evaluate_enabled: bool = False
    rebuild_sft_cron: str = "0 3 * * 0"
    rebuild_sft_enabled: bool = False
    timezone: str = "UTC"


QUALIFICATION_GATES = ("block", "warn")
DEFAULT_LABELER_SOURCES = ("s_eval", "xsafety")
DEFAULT_PKU_GOLD = "data/pku_saferlhf/preference_train.json"


@dataclass(frozen=True)
class QualificationConfig:
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

    gold_dir: Path
    pku_gold_file: Path
    per_model: int | None = None
    pku_pairs: int | None = None
    seed: int = 0
    n_resamples: int = 1000
    min_kappa: float = 0.6
    max_uncertain_rate: float = 0.1
    gate: str = "block"
    gate_reason: str = ""
    labeler_sources: tuple[str, ...] = DEFAULT_LABELER_SOURCES
    labeler_per_category: int | None = None
    labeler_min_kappa: float = 0.6
    labeler_max_uncertain_rate: float = 0.1


GPU_RELEASE_POLICIES = ("per_asset", "per_run")


@dataclass(frozen=True)
class GpuConfig:
    """When loaded local models give their memory back: `per_asset` closes every engine an asset loaded
    when the asset ends; `per_run` keeps them for the next asset of the run. Either way every engine is
    closed before training, which starts only when the GPU has `training_min_free_fraction` free."""

    release: str = "per_run"
    training_min_free_fraction: float = 0.9


SANDBOX_ISOLATIONS = ("bubblewrap", "rlimits")


@dataclass(frozen=True)
class SandboxConfig:
    """How model-written code (HumanEval) runs: `bubblewrap` isolates each program (no network, no host
    files, no new processes; defs/evaluation/sandbox.py), `rlimits` only limits its resources."""

    isolation: str = "bubblewrap"


@dataclass(frozen=True)
class Settings:
    profile: str
    profile_path: Path
    state_dir: Path
    storage: Storage
    models_dir: Path
    max_prompt_chars: int
    max_quarantine_share: float
    sources: dict[str, SourceConfig]
    roles: dict[str, RoleConfig]
    method: MethodConfig
    training: TrainingConfig
    evaluation: EvaluationConfig
    automation: AutomationConfig
    executor: str
    max_concurrent_runs: int  # `madef run`: independent runs (candidates, learning rates) at once
    gpu: GpuConfig
    sandbox: SandboxConfig
    qualification: QualificationConfig
    taxonomy_path: Path
    raw: dict[str, Any]

    @property
    def duckdb_path(self) -> Path:
        """The local DuckDB file (an error for DuckLake storage, which has none)."""
        return self.storage.path


# The data terms a source may name (`sources.<name>.license`): Creative Commons ids, the common permissive
# software licenses, or `unknown` (the combined terms of a set with such rows say "check before use").
LICENSE_ID = re.compile(r"CC-BY(-NC)?(-SA)?-\d\.\d|Apache-2\.0|MIT|BSD-[23]-Clause|unknown")


def parse_license(value: Any, where: str) -> str:
    if not isinstance(value, str) or not LICENSE_ID.fullmatch(value):
        raise ConfigError(
            f"{where}: {value!r} is not a license id madef knows: CC-BY[-NC][-SA]-<version> "
            "(e.g. CC-BY-NC-SA-4.0), Apache-2.0, MIT, BSD-2-Clause, BSD-3-Clause or unknown"
        )
    return value


def _require(mapping: dict, key: str, where: str) -> Any:
    if key not in mapping:
        raise ConfigError(f"{where}: missing key '{key}'")
    return mapping[key]


def profile_path(profile: str) -> Path:
    candidate = Path(profile)
    if candidate.suffix in (".yaml", ".yml"):
        return candidate.resolve()
    path = CONFIG_DIR / f"{profile}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"MADEF_PROFILE={profile!r}: no {path}; known profiles: {known}")
    return path


def parse_settings(raw: dict[str, Any], path: Path, env: dict[str, str]) -> Settings:
    from madef_assets.profile_schema import profile_problems
    from madef_assets.storage import parse_storage

    problems = profile_problems(raw)
    if problems:
        raise ConfigError(f"{path}:\n  " + "\n  ".join(problems))
    base = PROJECT_ROOT
    where = str(path)
    state_dir = resolve_path(env.get("MADEF_STATE_DIR") or raw.get("state_dir", "state"), base)
    storage = parse_storage(
        env.get("MADEF_DUCKDB_PATH") or raw.get("duckdb_path") or state_dir / "madef.duckdb",
        env.get("MADEF_DUCKLAKE_DATA_PATH") or raw.get("ducklake_data_path"),
        env.get("MADEF_DUCKDB_LOCK_WAIT_SECONDS") or raw.get("duckdb_lock_wait_seconds"),
        base,
    )
    models_dir = resolve_path(env.get("MADEF_MODELS_DIR") or raw.get("models_dir") or state_dir / "models", base)
    ingest = raw.get("ingest", {})
    sources = {}
    for name, spec in (raw.get("sources") or {}).items():
        key = f"sources.{name}"
        files = []
        for index, file_spec in enumerate(_require(spec, "files", key)):
            if isinstance(file_spec, str):
                file_spec = {"path": file_spec}
            file_key = f"{key}.files[{index}]"
            extra = {
                k: (resolve_path(v, base) if k in PATH_OPTIONS else v)
                for k, v in file_spec.items()
                if k not in ("path", "lang")
            }
            files.append(
                SourceFile(
                    path=resolve_path(_require(file_spec, "path", file_key), base),
                    config_key=file_key,
                    lang=file_spec.get("lang"),
                    options=extra,
                )
            )
        categories = spec.get("known_categories")
        sources[name] = SourceConfig(
            name=name,
            reader=_require(spec, "reader", key),
            files=tuple(files),
            known_categories=tuple(categories) if categories is not None else None,
            columns=dict(spec.get("columns") or {}),
            description=spec.get("description", ""),
            license=parse_license(spec.get("license", "unknown"), f"{key}.license"),
            max_file_bytes=int(ingest.get("max_file_bytes", DEFAULT_MAX_FILE_BYTES)),
        )
    roles = {}
    models = _require(raw, "models", where)
    for role in ROLES:
        spec = _require(models, role, f"{where}: models")
        if isinstance(spec, list):
            if role not in PANEL_ROLES or not spec:
                raise ConfigError(
                    f"models.{role}: only {', '.join(PANEL_ROLES)} may list several models (a panel), "
                    "and a panel names at least one"
                )
            members = [parse_role(role, member, f"models.{role}[{index}]") for index, member in enumerate(spec)]
            roles[role] = replace(members[0], panel=tuple(members[1:]))
        else:
            roles[role] = parse_role(role, spec, f"models.{role}")
    method = parse_method(raw.get("method") or {}, set(sources), state_dir, base)
    training = parse_training(raw.get("training") or {}, state_dir, base, env)
    return Settings(
        profile=raw.get("profile", path.stem),
        profile_path=path,
        state_dir=state_dir,
        storage=storage,
        models_dir=models_dir,
        max_prompt_chars=int(ingest.get("max_prompt_chars", 8000)),
        max_quarantine_share=float(ingest.get("max_quarantine_share", 0.05)),
        sources=sources,
        roles=roles,
        method=method,
        training=training,
        evaluation=parse_evaluation(
            raw.get("evaluation") or {},
            set(sources),
            state_dir,
            base,
            training.rate_labels if training.partitioned else (),
        ),
        automation=parse_automation(raw.get("automation") or {}),
        **parse_execution(raw.get("execution") or {}),
        gpu=parse_gpu(raw.get("gpu") or {}),
        sandbox=parse_sandbox(raw.get("sandbox") or {}),
        qualification=parse_qualification(raw.get("qualification") or {}, base, set(sources)),
        taxonomy_path=resolve_path(raw.get("taxonomy", "config/taxonomy.yaml"), base),
        raw=raw,
    )


def parse_method(raw: dict[str, Any], source_names: set[str], state_dir: Path, base: Path) -> MethodConfig:
    if "augment_per_route" in raw:
        raise ConfigError(
            "method.augment_per_route: replaced by augment_routes and augment_max_per_category "
            "(generation fills each category's deficit to quota_per_category)"
        )
    known = MethodConfig.__dataclass_fields__
    unknown = set(raw) - set(known)
    if unknown:
        raise ConfigError(f"method: unknown keys {sorted(unknown)}")
    values = dict(raw)
    for key in ("attack_sources", "train_sources", "eval_sources", "general_sources", "sft_formats", "augment_routes"):
        if key in values:
            values[key] = tuple(values[key] or ())
    if values.get("required_categories") is not None:
        values["required_categories"] = tuple(values["required_categories"])
    for key in ("attack_sources", "train_sources", "eval_sources", "general_sources"):
        missing = set(values.get(key, ())) - source_names
        if missing:
            raise ConfigError(f"method.{key}: {sorted(missing)} are not configured under sources")
    overlap = set(values.get("train_sources", ())) & set(values.get("eval_sources", ()))
    if overlap:
        raise ConfigError(f"method: {sorted(overlap)} cannot be both train_sources and eval_sources")
    values["sft_export_dir"] = resolve_path(values.get("sft_export_dir") or state_dir / "sft_dataset", base)
    selection = values.pop("selection", None) or {}
    unknown = set(selection) - set(SelectionConfig.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"method.selection: unknown keys {sorted(unknown)}")
    config = MethodConfig(**values, selection=SelectionConfig(**selection))
    check_volume(config)
    return config


def check_volume(method: MethodConfig) -> None:
    """The volume settings (§3.5) make sense together: known routes, a share in [0, 1], a total that holds the
    general sample."""
    unknown = set(method.augment_routes) - set(AUGMENT_ROUTES)
    if unknown or not method.augment_routes:
        raise ConfigError(
            f"method.augment_routes: one or more of {list(AUGMENT_ROUTES)}, got {list(method.augment_routes)}"
        )
    if method.general_zh_share is not None and not 0 <= method.general_zh_share <= 1:
        raise ConfigError(f"method.general_zh_share must be between 0 and 1 or null, got {method.general_zh_share}")
    if method.sft_total is not None and method.sft_total < method.general_sample_size:
        raise ConfigError(
            f"method.sft_total ({method.sft_total}) must hold general_sample_size ({method.general_sample_size})"
        )


def parse_training(raw: dict[str, Any], state_dir: Path, base: Path, env: dict[str, str]) -> TrainingConfig:
    unknown = set(raw) - {"env_python", "output_dir", "args", "learning_rates"}
    if unknown:
        raise ConfigError(f"training: unknown keys {sorted(unknown)}")
    args = dict(raw.get("args") or {})
    return TrainingConfig(
        env_python=resolve_path(
            env.get("MADEF_TRAIN_PYTHON") or raw.get("env_python") or ".venv-train/bin/python", base
        ),
        output_dir=resolve_path(raw.get("output_dir") or state_dir / "checkpoints" / "finetuned", base),
        args=args,
        learning_rates=parse_learning_rates(raw.get("learning_rates"), args),
    )


def parse_learning_rates(rates: Any, args: dict[str, Any]) -> tuple[float, ...]:
    """`training.learning_rates` (§5.1.1: one checkpoint per rate, compared) or, without it, the one rate of
    `training.args.learning_rate` (default: the paper's 6e-7). Both at once is ambiguous and refused."""
    from madef_assets.defs.training.llamafactory_config import PAPER_DEFAULTS

    if rates is None:
        return (float(args.get("learning_rate", PAPER_DEFAULTS["learning_rate"])),)
    if "learning_rate" in args:
        raise ConfigError("training: give learning_rates or args.learning_rate, not both")
    if (
        not isinstance(rates, list)
        or not rates
        or any(isinstance(r, bool) or not isinstance(r, (int, float)) or r <= 0 for r in rates)
    ):
        raise ConfigError(f"training.learning_rates: a non-empty list of positive numbers, got {rates!r}")
    labels = [rate_label(float(r)) for r in rates]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"training.learning_rates: {rates} repeats a rate")
    return tuple(float(r) for r in rates)


def parse_sandbox(raw: dict[str, Any]) -> SandboxConfig:
    if set(raw) - {"isolation"}:
        raise ConfigError(f"sandbox: unknown keys {sorted(set(raw) - {'isolation'})}; allowed: ['isolation']")
    isolation = raw.get("isolation", SandboxConfig.isolation)
    if isolation not in SANDBOX_ISOLATIONS:
        raise ConfigError(f"sandbox.isolation must be one of {SANDBOX_ISOLATIONS}, got {isolation!r}")
    return SandboxConfig(isolation)


def parse_gpu(raw: dict[str, Any]) -> GpuConfig:
    unknown = set(raw) - set(GpuConfig.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"gpu: unknown keys {sorted(unknown)}; allowed: {sorted(GpuConfig.__dataclass_fields__)}")
    config = GpuConfig(**raw)
    if config.release not in GPU_RELEASE_POLICIES:
        raise ConfigError(f"gpu.release must be one of {GPU_RELEASE_POLICIES}, got {config.release!r}")
    if not 0 <= config.training_min_free_fraction <= 1:
        raise ConfigError(
            f"gpu.training_min_free_fraction must be between 0 and 1, got {config.training_min_free_fraction}"
        )
    return config


def parse_role(role: str, spec: dict[str, Any], where: str) -> RoleConfig:
    return RoleConfig(
        role=role,
        backend=_require(spec, "backend", where),
        model=str(_require(spec, "model", where)),
        params=dict(spec.get("params") or {}),
        options={k: v for k, v in spec.items() if k not in ("backend", "model", "params")},
    )


def parse_qualification(raw: dict[str, Any], base: Path, sources: set[str]) -> QualificationConfig:
    allowed = set(QualificationConfig.__dataclass_fields__)
    unknown = set(raw) - allowed
    if unknown:
        raise ConfigError(f"qualification: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    labeler_sources = raw.get("labeler_sources")
    if labeler_sources is None:
        labeler_sources = [name for name in DEFAULT_LABELER_SOURCES if name in sources]
    elif set(labeler_sources) - sources:
        raise ConfigError(
            f"qualification.labeler_sources: {sorted(set(labeler_sources) - sources)} are not configured sources"
        )
    config = QualificationConfig(
        **{
            **raw,
            "gold_dir": resolve_path(raw.get("gold_dir") or "data/xstest", base),
            "pku_gold_file": resolve_path(raw.get("pku_gold_file") or DEFAULT_PKU_GOLD, base),
            "labeler_sources": tuple(labeler_sources),
        }
    )
    pairs = config.pku_pairs
    if pairs is not None and (isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 1):
        raise ConfigError(f"qualification.pku_pairs must be a positive integer or null (all pairs), got {pairs!r}")
    if config.gate not in QUALIFICATION_GATES:
        raise ConfigError(f"qualification.gate must be one of {QUALIFICATION_GATES}, got {config.gate!r}")
    if config.gate == "warn" and not config.gate_reason.strip():
        raise ConfigError(
            "qualification.gate: warn needs a gate_reason saying why an unqualified judge or labeler may be used"
        )
    return config


EXECUTORS = ("in_process", "multiprocess", "k8s", "celery")


def parse_execution(raw: dict[str, Any]) -> dict[str, Any]:
    """`execution.executor` (how a run's steps run) and `execution.max_concurrent_runs` (how many independent
    runs `madef run` launches at once; default 1)."""
    if set(raw) - {"executor", "max_concurrent_runs"}:
        raise ConfigError(f"execution: unknown keys {sorted(set(raw) - {'executor', 'max_concurrent_runs'})}")
    executor = raw.get("executor", "in_process")
    if executor not in EXECUTORS:
        raise ConfigError(f"execution.executor: one of {EXECUTORS}, got {executor!r}")
    runs = raw.get("max_concurrent_runs", 1)
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ConfigError(f"execution.max_concurrent_runs: a positive integer, got {runs!r}")
    return {"executor": executor, "max_concurrent_runs": runs}


def parse_automation(raw: dict[str, Any]) -> AutomationConfig:
    unknown = set(raw) - {"sensors_running", "source_poll_seconds", "schedules", "timezone"}
    if unknown:
        raise ConfigError(f"automation: unknown keys {sorted(unknown)}")
    values = {k: v for k, v in raw.items() if k != "schedules"}
    for name, prefix in (("evaluate_candidates", "evaluate"), ("rebuild_sft_dataset", "rebuild_sft")):
        spec = (raw.get("schedules") or {}).get(name) or {}
        if set(spec) - {"cron", "enabled"}:
            raise ConfigError(f"automation.schedules.{name}: unknown keys {sorted(set(spec) - {'cron', 'enabled'})}")
        if "cron" in spec:
            values[f"{prefix}_cron"] = str(spec["cron"])
        if "enabled" in spec:
            values[f"{prefix}_enabled"] = bool(spec["enabled"])
    unknown_schedules = set(raw.get("schedules") or {}) - {"evaluate_candidates", "rebuild_sft_dataset"}
    if unknown_schedules:
        raise ConfigError(f"automation.schedules: unknown schedules {sorted(unknown_schedules)}")
    return AutomationConfig(**values)


CHECKPOINT_ASSETS = ("base_model_checkpoint", "finetuned_checkpoint")
EVALUATION_SECTIONS = {
    "safetybench": {"sources", "source", "per_category", "answer_modes", "dev_file", "max_new_tokens"},
    "new_safety": {"sources", "per_category", "max_new_tokens"},
    "responsibility": {"prompts_source", "per_domain", "mcq_source"},
    "general": {"data_dir", "gsm8k", "mmlu", "cmmlu", "ceval", "humaneval"},
    "over_refusal": {"source", "per_type", "max_new_tokens"},
    "llamafactory_eval": {"enabled", "template", "templates", "batch_size"},
}


def parse_evaluation(
    raw: dict[str, Any], source_names: set[str], state_dir: Path, base: Path, rate_labels: tuple[str, ...] = ()
) -> EvaluationConfig:
    """The evaluation section; `rate_labels` (several learning rates) expands each finetuned_checkpoint
    candidate into one per rate."""
    unknown = set(raw) - {"candidates", "params", "seed", "review_dir", "report_dir", *EVALUATION_SECTIONS}
    if unknown:
        raise ConfigError(f"evaluation: unknown keys {sorted(unknown)}")
    candidates = []
    for name, spec in (raw.get("candidates") or {}).items():
        where = f"evaluation.candidates.{name}"
        if not str(name).replace("_", "").isalnum():
            raise ConfigError(f"{where}: a candidate name is letters, digits and _ only")
        checkpoint = spec.get("checkpoint")
        if checkpoint is not None and checkpoint not in CHECKPOINT_ASSETS:
            raise ConfigError(f"{where}.checkpoint: one of {CHECKPOINT_ASSETS}, got {checkpoint!r}")
        if checkpoint is None and "model" not in spec:
            raise ConfigError(f"{where}: needs either checkpoint or backend + model")
        candidates += expand_candidate(
            CandidateConfig(
                name=str(name),
                checkpoint=checkpoint,
                backend=spec.get("backend", "transformers"),
                model=None if spec.get("model") is None else str(spec["model"]),
                options={k: v for k, v in spec.items() if k not in ("checkpoint", "backend", "model")},
            ),
            rate_labels,
        )
    sections = {}
    for section, keys in EVALUATION_SECTIONS.items():
        values = dict(raw.get(section) or {})
        if set(values) - keys:
            raise ConfigError(f"evaluation.{section}: unknown keys {sorted(set(values) - keys)}")
        sections[section] = values
    bench = sections["safetybench"]
    if "source" in bench and "sources" in bench:
        raise ConfigError("evaluation.safetybench: give either source or sources (a list: one source per language)")
    if "source" in bench:  # the older single-source form
        bench["sources"] = bench.pop("source")
    if "sources" in bench:
        bench["sources"] = [bench["sources"]] if isinstance(bench["sources"], str) else list(bench["sources"] or [])
        if not bench["sources"]:
            raise ConfigError("evaluation.safetybench.sources: name at least one source (one per language)")
    for key, names in (
        ("new_safety.sources", sections["new_safety"].get("sources", [])),
        ("safetybench.sources", bench.get("sources", [])),
        ("responsibility.prompts_source", [sections["responsibility"].get("prompts_source")]),
        ("responsibility.mcq_source", [sections["responsibility"].get("mcq_source")]),
        ("over_refusal.source", [sections["over_refusal"].get("source")]),
    ):
        missing = {n for n in names if n is not None} - source_names
        if missing:
            raise ConfigError(f"evaluation.{key}: {sorted(missing)} are not configured under sources")
    general = sections["general"]
    general["data_dir"] = resolve_path(general.get("data_dir", "data/general_eval"), base)
    check_llamafactory_eval(sections["llamafactory_eval"], [c.name for c in candidates])
    if isinstance(bench.get("dev_file"), dict):  # one dev file per language: {zh: dev_zh.json, en: dev_en.json}
        bench["dev_file"] = {str(lang): resolve_path(path, base) for lang, path in bench["dev_file"].items()}
    elif bench.get("dev_file"):
        bench["dev_file"] = resolve_path(bench["dev_file"], base)
    return EvaluationConfig(
        candidates=tuple(candidates),
        params=dict(raw.get("params") or {}),
        seed=int(raw.get("seed", 0)),
        **sections,
        review_dir=resolve_path(raw.get("review_dir") or state_dir / "review", base),
        report_dir=resolve_path(raw.get("report_dir") or state_dir / "reports" / "evaluation", base),
    )


def check_llamafactory_eval(section: dict[str, Any], candidate_names: list[str]) -> None:
    """evaluation.llamafactory_eval: `enabled` (default true), `template` (LLaMA-Factory template name for every
    local candidate; default training.args.template), `templates` (per candidate name, as evaluated),
    `batch_size`."""
    unknown = set(section.get("templates") or {}) - set(candidate_names)
    if unknown:
        raise ConfigError(
            f"evaluation.llamafactory_eval.templates: {sorted(unknown)} are not candidates ({candidate_names})"
        )
    batch_size = section.get("batch_size", 4)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"evaluation.llamafactory_eval.batch_size: a positive integer, got {batch_size!r}")


def expand_candidate(candidate: CandidateConfig, rate_labels: tuple[str, ...]) -> list[CandidateConfig]:
    """§5.1.1: with several learning rates, a finetuned_checkpoint candidate is one candidate per rate
    (`tuned` -> `tuned_lr6e-7`, `tuned_lr1e-6`), each reading its rate's partition; otherwise it is itself.
    A served one cannot follow: one endpoint serves one checkpoint."""
    if candidate.checkpoint != "finetuned_checkpoint" or not rate_labels:
        return [candidate]
    if candidate.backend == "openai":
        raise ConfigError(
            f"evaluation.candidates.{candidate.name}: a served finetuned_checkpoint candidate needs a "
            "single training rate (one endpoint serves one checkpoint); evaluate the rates with a local "
            "candidate ({checkpoint: finetuned_checkpoint}) or train one rate"
        )
    return [replace(candidate, name=f"{candidate.name}_{label}", rate=label) for label in rate_labels]


def load_settings(profile: str | None = None, env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    path = profile_path(profile or env.get("MADEF_PROFILE") or "demo")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return parse_settings(raw, path, env)


@lru_cache(maxsize=1)
def current_settings() -> Settings:
    """The settings of this process (profile and paths from the environment), read once."""
    return load_settings()
