"""docker/ and deploy/: validated without a container engine (none runs here): the compose files by
docker-compose's own schema check, the Dagster instance YAML by Dagster's, the executors' run config
against the jobs' config schema."""

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml
from dagster import DagsterInvalidConfigError, validate_run_config

from madef_assets.compat import dagster_instance_config
from madef_assets.definitions import MAIN_JOB, build_definitions
from madef_assets.project import CONFIG_DIR, PROJECT_ROOT, ConfigError
from madef_assets.settings import load_settings

DOCKER = PROJECT_ROOT / "docker"
DEPLOY = PROJECT_ROOT / "deploy"
COMPOSE = DOCKER / "docker-compose.yaml"
COMPOSE_ENV = {"DAGSTER_POSTGRES_PASSWORD": "test-only"}


def compose_config(tmp_path, *files, profile: str | None = None) -> subprocess.CompletedProcess:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (scripts/install_test_tools.sh installs Debian's)")
    args = [binary, *(a for f in files for a in ("-f", str(f))), *(["--profile", profile] if profile else []), "config"]
    return subprocess.run(
        args, env={**os.environ, **COMPOSE_ENV}, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )


def test_compose_files_pass_docker_compose_config(tmp_path):
    plain = compose_config(tmp_path, COMPOSE)
    assert plain.returncode == 0, plain.stderr
    assert yaml.safe_load(plain.stdout)["services"]["vllm"]["profiles"] == ["gpu"]  # started only with --profile gpu
    gpu = compose_config(tmp_path, COMPOSE, DOCKER / "docker-compose.gpu.yaml", profile="gpu")
    assert gpu.returncode == 0, gpu.stderr
    services = yaml.safe_load(gpu.stdout)["services"]
    assert services["user_code"]["environment"]["MADEF_PROFILE"] == "production"
    assert services["user_code"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    worker, user_code = services["celery_worker"], services["user_code"]  # the worker runs the user code's steps
    assert (worker["environment"], worker["deploy"]) == (user_code["environment"], user_code["deploy"])
    evaluation = yaml.safe_load(compose_config(tmp_path, COMPOSE, profile="gpu-eval").stdout)["services"]
    for name in ("vllm", "vllm-attacker", "vllm-base", "vllm-tuned"):  # one GPU shared: each is told its share
        server = (services | evaluation)[name]["command"]
        assert "--gpu-memory-utilization" in server and "--max-model-len" in server, name
    assert evaluation["vllm-tuned"]["profiles"] == ["gpu-eval"]
    # the production attacker is the open model served beside the responder, not a moderated API
    production = load_settings("production", env={})
    attacker = production.roles["attacker"]
    assert attacker.options["base_url"] == ["http://vllm-attacker:8000/v1"] and attacker.options["api_key_env"] is None
    assert services["vllm-attacker"]["profiles"] == ["gpu"] and "attacker" in services["vllm-attacker"]["command"]
    # the validator is real: a misspelt key is refused
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["webserver"]["comand"] = broken["services"]["webserver"].pop("command")
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
    refused = compose_config(tmp_path, tmp_path / "broken.yaml")
    assert refused.returncode != 0 and "comand" in refused.stderr


def test_compose_wires_postgres_grpc_and_secrets_consistently():
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert set(services) == {
        *("postgres", "user_code", "webserver", "daemon", "redis", "celery_worker"),
        *("vllm", "vllm-attacker", "vllm-base", "vllm-tuned"),
    }
    workspace = yaml.safe_load((DOCKER / "workspace.yaml").read_text())["load_from"][0]["grpc_server"]
    assert workspace["host"] == "user_code"
    command = services["user_code"]["command"]
    assert command[command.index("-p") + 1] == str(workspace["port"]) and "madef_assets.definitions" in command
    for name in ("webserver", "daemon"):
        mounts = services[name]["volumes"]
        assert "./dagster.yaml:/opt/dagster/home/dagster.yaml:ro" in mounts and any(
            "workspace.yaml" in m for m in mounts
        ), name
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["vllm"]["profiles"] == ["gpu"] and services["vllm-base"]["profiles"] == ["gpu-eval"]
    text = COMPOSE.read_text()
    assert re.search(r"PASSWORD: \$\{DAGSTER_POSTGRES_PASSWORD:\?", text), (
        "the password comes from the environment only"
    )
    for dockerfile_copy in re.findall(r"^COPY (\S+) ", (DOCKER / "Dockerfile").read_text(), re.M):
        assert (PROJECT_ROOT / dockerfile_copy).exists(), dockerfile_copy
    assert {"app", "train"} == set(re.findall(r"^FROM \S+ AS (\w+)", (DOCKER / "Dockerfile").read_text(), re.M))


def test_compose_celery_workers_run_the_user_code_on_its_state_and_broker(tmp_path):
    """The workers run the user code's image and environment on the same state volume and Dagster instance,
    reading deploy/celery/run_config.yaml, whose broker is the compose `redis` service."""
    services = yaml.safe_load(compose_config(tmp_path, COMPOSE).stdout)["services"]
    worker, user_code = services["celery_worker"], services["user_code"]
    assert worker["image"] == user_code["image"] and worker["environment"] == user_code["environment"]
    command = worker["command"]
    assert command[:5] == ["dagster-celery", "worker", "start", "-A", "dagster_celery.app"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in worker["volumes"]}
    assert mounts[command[command.index("-y") + 1]] == str(DEPLOY / "celery" / "run_config.yaml")
    assert mounts["/app/state"] == "madef-state" and worker["environment"]["MADEF_STATE_DIR"] == "/app/state"
    assert mounts["/opt/dagster/home/dagster.yaml"] == str(DOCKER / "dagster.yaml")
    assert worker["environment"]["MADEF_CELERY_BROKER_URL"].startswith("redis://redis:6379/")
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "redis-cli" in services["redis"]["healthcheck"]["test"]


def test_instance_yaml_is_valid_dagster_config(monkeypatch):
    monkeypatch.setenv("DAGSTER_POSTGRES_DB", "dagster")
    monkeypatch.setenv("DAGSTER_POSTGRES_USER", "dagster")
    monkeypatch.setenv("DAGSTER_POSTGRES_PASSWORD", "test-only")
    config, _ = dagster_instance_config(str(DOCKER), "dagster.yaml")
    assert "postgres" in config["storage"] and config["concurrency"]["pools"]["default_limit"] == 1
    # a killed celery worker's step never ends: the daemon frees its failed run's pool slots
    assert config["run_monitoring"]["free_slots_after_run_end_seconds"] > 0
    from dagster_postgres import PostgresRunStorage  # the class the instance will load is installed

    assert PostgresRunStorage


def test_instance_validator_is_real(tmp_path):
    (tmp_path / "dagster.yaml").write_text(
        "run_coordinator:\n  module: dagster.core.run_coordinator\n  class: QueuedRunCoordinator\n"
        "  config:\n    max_concurrent_runs: 4\nconcurrency:\n  runs:\n    max_concurrent_runs: 2\n"
    )
    with pytest.raises(DagsterInvalidConfigError):
        dagster_instance_config(str(tmp_path), "dagster.yaml")


@pytest.mark.parametrize(
    "executor, run_config",
    [("k8s", DEPLOY / "k8s" / "run_config.yaml"), ("celery", DEPLOY / "celery" / "run_config.yaml")],
)
def test_scale_out_executors_accept_their_run_config(tmp_path, monkeypatch, executor, run_config):
    monkeypatch.setenv("MADEF_CELERY_BROKER_URL", "redis://redis:6379/0")  # deploy/celery reads them
    monkeypatch.setenv("MADEF_CELERY_BACKEND_URL", "redis://redis:6379/1")
    raw = yaml.safe_load((CONFIG_DIR / "demo.yaml").read_text())
    raw["execution"] = {"executor": executor}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True))
    job = build_definitions(
        load_settings(str(tmp_path / "p.yaml"), env={"MADEF_STATE_DIR": str(tmp_path)})
    ).resolve_job_def(MAIN_JOB)
    assert job.executor_def.name == executor
    validate_run_config(job, yaml.safe_load(run_config.read_text()))
    with pytest.raises(DagsterInvalidConfigError):
        validate_run_config(job, {"execution": {"config": {"no_such_option": 1}}})


def test_madef_run_gives_celery_runs_the_deploy_run_config():
    """`madef run` configures the celery executor as deploy/celery/run_config.yaml does (and the workers read)."""
    from madef_assets.definitions import EXECUTOR_RUN_CONFIG

    deployed = yaml.safe_load((DEPLOY / "celery" / "run_config.yaml").read_text())
    assert deployed == {"execution": {"config": EXECUTOR_RUN_CONFIG["celery"]}}


def test_unknown_executor_is_a_config_error(tmp_path):
    raw = yaml.safe_load((CONFIG_DIR / "demo.yaml").read_text())
    raw["execution"] = {"executor": "ray"}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True))
    with pytest.raises(ConfigError, match="execution.executor"):
        load_settings(str(tmp_path / "p.yaml"), env={})


@pytest.mark.parametrize(
    "gpu, message",
    [
        ({"release": "per_step"}, "gpu.release: Input should be 'per_asset' or 'per_run'"),
        ({"relase": "per_asset"}, "gpu.relase: unknown key; allowed: release, training_min_free_fraction"),
        (
            {"training_min_free_fraction": 1.5},
            "gpu.training_min_free_fraction: Input should be less than or equal to 1",
        ),
    ],
)
def test_gpu_policy_errors_name_the_key(tmp_path, gpu, message):
    raw = yaml.safe_load((CONFIG_DIR / "demo.yaml").read_text())
    raw["gpu"] = gpu
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True))
    with pytest.raises(ConfigError, match=message):
        load_settings(str(tmp_path / "p.yaml"), env={})


def test_production_serves_the_responder_and_candidates():
    settings = load_settings("production", env={})
    assert settings.roles["responder"].backend == "openai" and settings.gpu.release in ("per_asset", "per_run")
    for candidate in settings.evaluation.candidates:
        assert candidate.backend == "openai" and candidate.checkpoint is not None
        assert candidate.options["api"] == "chat" and candidate.options["raw_api"] == "completions"


def test_k8s_shares_one_rwx_volume_and_ducklake_and_asks_gpus_only_for_gpu_steps():
    """Issue 25: every pod (code server, run, step) mounts the same ReadWriteMany claim at the state folder
    and reaches the tables through DuckLake; only steps in a GPU device's pool request a GPU."""
    claim = yaml.safe_load((DEPLOY / "k8s" / "shared-volume.yaml").read_text())
    assert claim["kind"] == "PersistentVolumeClaim" and claim["spec"]["accessModes"] == ["ReadWriteMany"]
    name = claim["metadata"]["name"]
    values = yaml.safe_load((DEPLOY / "k8s" / "values.yaml").read_text())
    deployment = values["dagster-user-deployments"]["deployments"][0]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    step = yaml.safe_load((DEPLOY / "k8s" / "run_config.yaml").read_text())["execution"]["config"]
    env = {}
    for volumes, mounts, variables in (
        (deployment["volumes"], deployment["volumeMounts"], [f"{e['name']}={e['value']}" for e in deployment["env"]]),
        (launcher["volumes"], launcher["volumeMounts"], launcher["envVars"]),
        (step["volumes"], step["volume_mounts"], step["env_vars"]),
    ):
        assert [v["persistentVolumeClaim"]["claimName"] for v in volumes] == [name]
        variables = dict(v.split("=", 1) for v in variables)
        assert variables["MADEF_STATE_DIR"] == mounts[0]["mountPath"] == "/app/state"
        assert variables["MADEF_DUCKLAKE_DATA_PATH"].startswith("/app/state/")
        env = variables
    assert "resources" not in deployment and "step_k8s_config" not in step  # no GPU for every pod
    # the storage the pods are given is one madef accepts (the conninfo comes from the secret)
    settings = load_settings(
        "production", env={**env, "MADEF_DUCKDB_PATH": "ducklake:postgres:host=pg dbname=madef user=madef"}
    )
    assert settings.storage.is_ducklake
    definitions = build_definitions(load_settings("production", env={"MADEF_STATE_DIR": "/tmp/unused"}))
    asked = {}
    for node in definitions.resolve_job_def(MAIN_JOB).graph.node_defs:
        k8s = json.loads(node.tags.get("dagster-k8s/config", "{}"))  # op tags are stored as JSON
        gpu = k8s.get("container_config", {}).get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
        asked[node.name] = (node.pool, gpu == 1)
    assert asked["finetuned_checkpoint"] == ("device/cuda0", True)
    for op, (pool, gpu) in asked.items():
        assert gpu == bool(pool and pool.startswith("device/cuda")), op
    assert sum(gpu for _, gpu in asked.values()) < len(asked) / 4


def test_helm_values_point_at_the_code_location():
    values = yaml.safe_load((DEPLOY / "k8s" / "values.yaml").read_text())
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "madef_assets.definitions"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert not any("TOKEN" in str(e.get("value", "")) for e in deployment["env"])  # secrets by reference only


def test_a_misspelt_key_or_role_option_names_the_key_and_the_allowed_ones(tmp_path):
    """Issue 13: the profile is checked by a schema; a misspelt role option was dropped silently before."""
    raw = yaml.safe_load((CONFIG_DIR / "production.yaml").read_text())
    raw["models"]["labeler"]["concurency"] = 32
    raw["models"]["scorer"]["batch_sise"] = 8
    raw["evaluation"]["candidates"]["tuned"]["raw_api"] = "embeddings"
    raw["modles"] = {}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True))
    with pytest.raises(ConfigError) as error:
        load_settings(str(tmp_path / "p.yaml"), env={})
    message = str(error.value)
    assert (
        "models.labeler.concurency: unknown key; allowed: allow_insecure_http, api, api_key_env" in message
        and "concurrency" in message
    )
    assert "models.scorer.batch_sise: unknown key; allowed:" in message and "batch_size" in message
    assert "evaluation.candidates.tuned.raw_api" in message and "modles: unknown top-level key" in message


def test_an_unset_api_key_fails_at_start_with_the_variables_name(monkeypatch, tmp_path):
    from dagster import build_init_resource_context

    from madef_assets.llm.openai_backend import OpenAIBackend
    from madef_assets.resources import llm_resource

    monkeypatch.delenv("DASHSCOPE_API_KEY", raising=False)
    settings = load_settings("production", env={"MADEF_STATE_DIR": str(tmp_path)})
    with pytest.raises(ValueError, match="DASHSCOPE_API_KEY"):
        llm_resource(settings, "labeler").setup_for_execution(build_init_resource_context())
    with pytest.raises(ValueError, match="environment variable DASHSCOPE_API_KEY"):
        OpenAIBackend("qwen-turbo", "https://dashscope.example/v1", api_key_env="DASHSCOPE_API_KEY")
    monkeypatch.setenv("DASHSCOPE_API_KEY", "a-key")
    llm_resource(settings, "labeler").setup_for_execution(build_init_resource_context())
