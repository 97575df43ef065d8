"""Secrets stay out of stored text, profiles' endpoints and child processes (issue 24, part 7)."""

import secrets
import subprocess
import sys
from pathlib import Path

import dagster_pipes
import pytest
import yaml
from dagster import (
    AssetExecutionContext,
    DagsterInstance,
    Output,
    PipesSubprocessClient,
    asset,
    materialize_to_memory,
)

from madef_assets.defs.training.assets import PIPES_SCRIPT
from madef_assets.pipes_client import CredentialFreePipesClient
from madef_assets.project import CONFIG_DIR, ConfigError
from madef_assets.resources import build_resources
from madef_assets.secret_hygiene import (
    MASK,
    child_env,
    endpoint_problem,
    is_loopback_host,
    is_secret_name,
    mask_secrets,
)
from madef_assets.settings import load_settings

# --- the masker -----------------------------------------------------------------------------------------

KEY = "sk-proj-" + "Ab3dE6gH9jK2mN5pQ8sT1vW4yZ7"


@pytest.mark.parametrize(
    "text, secret",
    [
        (f"Incorrect API key provided: {KEY}.", KEY),
        ("Incorrect API key provided: sk-proj-Ab3d****************************yZ7.", "Ab3d"),
        ("Incorrect API key provided: gsk_ab********************yz12.", "gsk_ab"),
        ("header Authorization: Bearer q8Zr2LmX0pWv7Tn4", "q8Zr2LmX0pWv7Tn4"),
        ("sent Basic dXNlcjpodW50ZXIy to the proxy", "dXNlcjpodW50ZXIy"),
        ("connect to https://alice:hunter2@example.com/v1 failed", "hunter2"),
        ("connect to https://ghtoken123@example.com/v1 failed", "ghtoken123"),
        ("GET https://h/v1?key=AIzaSyA1234567890abcdefghijklmnopqrst&api-version=2024", "AIzaSyA1234567890"),
        ('{"api_key": "plainwords", "max_tokens": 512}', "plainwords"),
        ("x-api-key: opensesame", "opensesame"),
        ("password=letmein now", "letmein"),
        ("AWS key AKIAIOSFODNN7EXAMPLE leaked", "AKIAIOSFODNN7EXAMPLE"),
        ("hf token hf_AbCdEfGhIjKlMnOpQrStUvWx", "hf_AbCdEfGhIjKl"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N", "eyJzdWIiOiIxMjM0"),
        ("digest 0123456789abcdef0123456789abcdef0123 here", "0123456789abcdef0123"),
        ("token aGVsbG8gd29ybGQgdGhpcyBpcyBhIHNlY3JldCBrZXk9PQ== sent", "aGVsbG8gd29ybGQgdGhp"),
    ],
)
def test_key_like_strings_are_masked(text, secret):
    masked = mask_secrets(text)
    assert secret not in masked and MASK in masked
    assert mask_secrets(masked) == masked  # masking twice changes nothing


@pytest.mark.parametrize(
    "text",
    [
        "HTTP 400: Input data may contain inappropriate content.",
        "max_tokens must be <= 4096; prompt_tokens: 12; token_type: bearer",
        "The model Qwen2.5-7B-Instruct does not exist at /work/main/state/models/gemma-3-270m-it",
        "Rate limit reached for requests per min (RPM): Limit 3, Used 3. Basic information about limits.",
        "the password is wrong; unknown key; KeyError: 'choices'",
        "connection error: Cannot connect to host 127.0.0.1:1 ssl:default",
        "see https://platform.openai.com/account/api-keys and https://host/v1?api-version=2024-02-01",
        "抱歉，我无法协助完成这个请求。",
        "madef_assets/defs/evaluation/llamafactory_eval.py line 42: TOKENIZERS_PARALLELISM=false",
        "timeout after 60.0s; gave up after 4 attempts: HTTP 503: upstream overloaded",
    ],
)
def test_ordinary_text_is_left_as_it_is(text):
    assert mask_secrets(text) == text


def test_the_configured_key_is_masked_wherever_it_appears_even_without_looking_like_a_key():
    key = "correct horse battery"
    assert mask_secrets(f"bad key '{key}' (again: {key})", [key]) == f"bad key '{MASK}' (again: {MASK})"
    assert mask_secrets(None, [key]) is None and mask_secrets("", [key]) == ""
    assert mask_secrets("abc stays", ["abc"]) == "abc stays"  # under 4 characters nothing can be masked safely


# --- endpoints -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "[::1]", "localhost", "LocalHost", "[::ffff:127.0.0.1]"])
def test_loopback_endpoints_may_receive_a_key_over_http(host):
    assert endpoint_problem(f"http://{host}:8000/v1", sends_key=True) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1:8000/v1",
        "http://vllm:8000/v1",
        "http://127.0.0.1.nip.io/v1",  # a name, even one that resolves to loopback
        "http://127.1/v1",  # shorthand the resolver would accept: not loopback by its literal address
        "http://0.0.0.0:8000/v1",
        "http://[2001:db8::1]/v1",
        "http://evil.example#@127.0.0.1/v1",
    ],
)
def test_a_key_over_http_to_a_non_loopback_host_is_refused_unless_allowed(url):
    assert "in clear over http://" in endpoint_problem(url, sends_key=True)
    assert endpoint_problem(url, sends_key=True, allow_insecure_http=True) is None
    assert endpoint_problem(url, sends_key=False) is None  # no key, nothing to leak
    assert endpoint_problem(url.replace("http://", "https://"), sends_key=True) is None


@pytest.mark.parametrize(
    "url, secret",
    [
        ("https://alice:hunter2@api.example/v1", "hunter2"),
        ("https://ghp_tokenAsUser@api.example/v1", "ghp_tokenAsUser"),
        ("http://u:p4ss@127.0.0.1:8000/v1", "p4ss"),
        ("http://127.0.0.1\\@evil.example/v1", "127.0.0.1\\"),
        ("https://api.example/v1?api_key=s3cr3tvalue", "s3cr3tvalue"),
        ("https://api.example/v1?key=AIzaXYZ123", "AIzaXYZ123"),
    ],
)
def test_credentials_in_the_url_are_refused_without_being_echoed(url, secret):
    problem = endpoint_problem(url, sends_key=False, allow_insecure_http=True)
    assert problem and "api_key_env" in problem
    assert secret not in problem


def test_loopback_is_decided_on_the_literal_host():
    assert is_loopback_host("127.255.255.254") and is_loopback_host("::1")
    assert not is_loopback_host("128.0.0.1") and not is_loopback_host("localhost.example")


def profile_with(tmp_path, **labeler) -> Path:
    raw = yaml.safe_load((CONFIG_DIR / "demo.yaml").read_text(encoding="utf-8"))
    raw.setdefault("models", {})["labeler"] = {"backend": "openai", "model": "m", **labeler}
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "labeler, message",
    [
        ({"base_url": "https://bob:pa55word@api.example/v1"}, "credentials in the URL"),
        ({"base_url": ["https://api.example/v1", "https://bob:pa55word@b.example/v1"]}, "credentials in the URL"),
        ({"base_url": "http://10.1.2.3/v1", "api_key_env": "pa55word_KEY"}, "in clear over http://"),
    ],
)
def test_a_profile_with_an_unsafe_endpoint_does_not_load_and_says_why(tmp_path, labeler, message):
    with pytest.raises(ConfigError, match=message) as error:
        load_settings(str(profile_with(tmp_path, **labeler)), env={"MADEF_STATE_DIR": str(tmp_path)})
    assert "models.labeler.base_url" in str(error.value) and "pa55word@" not in str(error.value)


@pytest.mark.parametrize(
    "labeler",
    [
        {"base_url": "http://10.1.2.3/v1", "allow_insecure_http": True},
        {"base_url": "http://10.1.2.3/v1", "api_key_env": None},
        {"base_url": "http://127.0.0.1:8000/v1", "api_key_env": "MY_KEY"},
    ],
)
def test_a_profile_with_a_safe_or_explicitly_allowed_endpoint_loads(tmp_path, labeler):
    settings = load_settings(str(profile_with(tmp_path, **labeler)), env={"MADEF_STATE_DIR": str(tmp_path)})
    assert settings.roles["labeler"].options["base_url"] == [labeler["base_url"]]


# --- child environments ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "OPENAI_API_KEY",
        "DASHSCOPE_API_KEY",
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "GITHUB_TOKEN",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "PGPASSWORD",
        "DB_PASSWORD",
        "MYSQL_PWD",
        "CLIENT_SECRET",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "ANTHROPIC_AUTH_TOKEN",
        "SSH_PRIVATE_KEY",
        "openai_api_key",
    ],
)
def test_credential_names_are_recognised(name):
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "PATH",
        "PWD",
        "HOME",
        "TOKENIZERS_PARALLELISM",
        "HF_HOME",
        "HF_HUB_OFFLINE",
        "CUDA_VISIBLE_DEVICES",
        "LD_LIBRARY_PATH",
        "DAGSTER_PIPES_CONTEXT",
        "DAGSTER_PIPES_MESSAGES",
        "PYTHONPATH",
        "KEYBOARD_LAYOUT",
    ],
)
def test_ordinary_names_are_not_credentials(name):
    assert not is_secret_name(name)


def test_child_env_drops_credentials_by_name_configured_name_value_and_alias():
    environ = {
        "PATH": "/usr/bin",
        "HF_HOME": "/cache/hf",
        "OPENAI_API_KEY": "k-123456789",
        "MY_PROVIDER": "opaque-value-1",  # named by a profile's api_key_env
        "COPY_OF_IT": "opaque-value-1",  # the same value under another name
        "HTTPS_PROXY": "http://user:pw@proxy:3128",
        "LLM_CONFIG": "sk-abcdefghijklmnop",
        "TOKENIZERS_PARALLELISM": "false",
    }
    env = child_env({"HF_HUB_OFFLINE": "1"}, secret_names=["MY_PROVIDER"], environ=environ)
    assert env == {"PATH": "/usr/bin", "HF_HOME": "/cache/hf", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    with pytest.raises(ValueError, match="HF_TOKEN looks like a credential"):
        child_env({"HF_TOKEN": "x"}, environ=environ)


def make_training_env(tmp_path: Path) -> tuple[Path, Path]:
    """A Python environment shaped like the training one: its `python` has dagster-pipes (this venv's
    packages through a .pth) and its `llamafactory-cli` writes what the kernel holds as its own environment
    and its parent's (the Pipes launcher) to `dumps/`."""
    env_dir, dumps = tmp_path / "train_env", tmp_path / "dumps"
    dumps.mkdir()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    site = next(env_dir.glob("lib/python*/site-packages"))
    (site / "madef_venv.pth").write_text(str(Path(dagster_pipes.__file__).parent.parent) + "\n")
    cli = env_dir / "bin" / "llamafactory-cli"
    cli.write_text(f"#!/bin/sh\ncat /proc/self/environ > {dumps}/cli\ncat /proc/$PPID/environ > {dumps}/launcher\n")
    cli.chmod(0o755)
    return env_dir / "bin" / "python", dumps


def launch_training(client: PipesSubprocessClient, python: Path, config: Path) -> int:
    @asset
    def training_launch(context: AssetExecutionContext, pipes_subprocess_client: PipesSubprocessClient) -> Output:
        session = pipes_subprocess_client.run(
            command=[str(python), PIPES_SCRIPT],
            context=context,
            extras={"config_path": str(config)},
            env={"HF_HUB_OFFLINE": "1"},
        )
        return Output(next(iter(session.get_custom_messages()))["exit_code"])

    result = materialize_to_memory(
        [training_launch], resources={"pipes_subprocess_client": client}, instance=DagsterInstance.ephemeral()
    )
    assert result.success
    return result.output_for_node("training_launch")


def test_the_training_launcher_and_trainer_see_no_credential(tmp_path, monkeypatch):
    """The real Pipes launcher (pipes_train.py) started by the project's client resource with fake keys in
    os.environ; /proc/<pid>/environ of the launcher and of the trainer it starts hold none of them. The same
    launch through Dagster's plain client shows the check would see a leak."""
    fakes = {
        "OPENAI_API_KEY": "sk-fake" + secrets.token_hex(12),
        "HF_TOKEN": "hf_fake" + secrets.token_hex(12),
        "AWS_SECRET_ACCESS_KEY": secrets.token_hex(16),
        "PGPASSWORD": secrets.token_hex(8),
        "MADEF_REHEARSAL_KEY": secrets.token_hex(12),  # the rehearsal profile's api_key_env
    }
    for name, value in fakes.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MADEF_CANARY", "visible-to-children")
    python, dumps = make_training_env(tmp_path)
    config = tmp_path / "train.yaml"
    config.write_text("stage: sft\n")
    settings = load_settings("rehearsal", env={"MADEF_STATE_DIR": str(tmp_path / "state")})
    client = build_resources(settings)["pipes_subprocess_client"]
    assert isinstance(client, CredentialFreePipesClient)

    assert launch_training(client, python, config) == 0
    for process in ("launcher", "cli"):
        environ = (dumps / process).read_bytes()
        assert b"MADEF_CANARY=visible-to-children" in environ and b"HF_HUB_OFFLINE=1" in environ
        assert b"DAGSTER_PIPES_CONTEXT=" in environ
        leaked = [name for name, value in fakes.items() if value.encode() in environ or f"{name}=".encode() in environ]
        assert leaked == [], (process, leaked)

    assert launch_training(PipesSubprocessClient(), python, config) == 0
    assert fakes["OPENAI_API_KEY"].encode() in (dumps / "cli").read_bytes()  # the plain client leaks
