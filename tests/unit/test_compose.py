"""Compose import (seed-style files, labels, variables), export, and the shipped compose file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ryx_desktop.config import (
    Config,
    ConfigFileError,
    DockerConfig,
    ExternalModelConfig,
    ModelConfig,
    default_config,
    export_compose,
    import_compose,
)
from ryx_desktop.config._compose import interpolate
from ryx_desktop.config.container import vllm_args
from ryx_desktop.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "compose" / "model-router.yml"

# In the style of the reference guide our users follow today: `command: >`, list environment with
# a stray MODEL= and CUDA_VISIBLE_DEVICES, a home-path volume, plain host ports.
SEED = """\
version: "3.8"
services:
  vllm-medium-general:
    image: vllm/vllm-openai:latest
    container_name: ryx-vllm-medium-general
    environment:
      - MODEL=/models/medium/general/qwen2.5-7b-gptq
      - CUDA_VISIBLE_DEVICES=0
    volumes:
      - /home/tobi/vllm-models:/models:ro
    ports:
      - "8001:8000"
    command: >
      --model /models/medium/general/qwen2.5-7b-gptq
      --host 0.0.0.0
      --port 8000
      --gpu-memory-utilization 0.3
      --max-model-len 4096
      --trust-remote-code

  vllm-powerful-general:
    image: vllm/vllm-openai:latest
    container_name: ryx-vllm-powerful-general
    environment:
      - MODEL=/models/powerful/general/qwen2.5-14b-gptq
      - CUDA_VISIBLE_DEVICES=0,1
      - VLLM_LOGGING_LEVEL=DEBUG
    volumes:
      - /home/tobi/vllm-models:/models:ro
    ports:
      - "8004:8000"  # New port
    command: >
      --model /models/powerful/general/qwen2.5-14b-gptq
      --host 0.0.0.0
      --port 8000
      --gpu-memory-utilization 0.6
      --max-model-len 4096
      --tensor-parallel-size 2
      --trust-remote-code

  vllm-tiny:
    image: vllm/vllm-openai:v0.6.3
    volumes:
      - /home/tobi/vllm-models:/models:ro
      - hf-cache:/root/.cache/huggingface
    ports:
      - "127.0.0.1:8005:8000"
    command:
      - --model=/models/tiny/qwen2.5-0.5b
      - --served-model-name
      - tiny
      - t
      - --enable-sleep-mode

  searxng:
    image: searxng/searxng:latest
    ports:
      - "8080:8080"
"""


def _write(tmp_path: Path, text: str, name: str = "model-router.yml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_import_seed_style_file(tmp_path: Path) -> None:
    config = import_compose(_write(tmp_path, SEED), {})
    assert config.docker.image == "vllm/vllm-openai:latest"
    assert config.docker.models_dir == Path("/home/tobi/vllm-models")
    assert config.docker.hf_cache == DockerConfig().hf_cache  # a named volume has no host path
    assert config.default_model == "medium-general"
    assert config.models == {
        "medium-general": ModelConfig(
            model="/models/medium/general/qwen2.5-7b-gptq",
            category="general",
            size="medium",
            port=8001,
            gpu_memory_utilization=0.3,
            max_model_len=4096,
            devices=(0,),
            extra_args=("--trust-remote-code",),
        ),
        "powerful-general": ModelConfig(
            model="/models/powerful/general/qwen2.5-14b-gptq",
            category="general",
            size="powerful",
            port=8004,
            gpu_memory_utilization=0.6,
            max_model_len=4096,
            devices=(0, 1),
            extra_args=("--tensor-parallel-size", "2", "--trust-remote-code"),
            env={"VLLM_LOGGING_LEVEL": "DEBUG"},
        ),
        "tiny": ModelConfig(
            model="/models/tiny/qwen2.5-0.5b",
            served_name="tiny",
            aliases=("t",),
            port=8005,
            image="vllm/vllm-openai:v0.6.3",
            devices="none",
            sleep_mode=True,
        ),
    }


def test_import_resolves_variables_and_relative_paths(tmp_path: Path) -> None:
    text = """\
services:
  vllm-a:
    image: ${IMAGE:-vllm/vllm-openai:latest}
    volumes:
      - ${RYX_MODELS_DIR:-./models}:/models:ro
      - type: bind
        source: ~/hf
        target: /root/.cache/huggingface
    ports:
      - target: 8000
        published: ${PORT_A}
        host_ip: 127.0.0.1
    environment:
      PRICE: $$5
      TOKEN:
    command: --model /models/a --gpu-memory-utilization ${SHARE:-0.5}
"""
    path = _write(tmp_path, text)
    (tmp_path / ".env").write_text("PORT_A=8101\nSHARE='0.4'\n", encoding="utf-8")
    config = import_compose(path, {})
    assert config.docker.models_dir == tmp_path / "models"
    assert config.docker.hf_cache == Path.home() / "hf"
    a = config.models["a"]
    assert isinstance(a, ModelConfig)
    assert (a.port, a.gpu_memory_utilization, a.env) == (8101, 0.4, {"PRICE": "$5"})

    # the caller's environment wins over .env
    config = import_compose(path, {"RYX_MODELS_DIR": "/srv/m", "PORT_A": "8102", "IMAGE": "x/y"})
    assert config.docker.models_dir == Path("/srv/m")
    assert config.docker.image == "x/y"
    assert config.models["a"] == a.model_copy(update={"port": 8102})


@pytest.mark.parametrize(
    ("service", "devices"),
    [
        pytest.param({}, "none", id="no-gpu-request"),
        pytest.param({"gpus": "all"}, "all", id="gpus-all"),
        pytest.param({"runtime": "nvidia"}, "all", id="nvidia-runtime"),
        pytest.param({"deploy": {"count": "all"}}, "all", id="count-all"),
        pytest.param({"deploy": {"count": 2}}, (0, 1), id="count-two"),
        pytest.param({"deploy": {"device_ids": ["0"]}}, (0,), id="device-ids"),
        pytest.param(
            {"deploy": {"device_ids": ["2", "3"]}, "environment": ["CUDA_VISIBLE_DEVICES=1"]},
            (3,),
            id="cuda-visible-inside-device-ids",
        ),
        pytest.param(
            {"deploy": {"count": "all"}, "environment": ["CUDA_VISIBLE_DEVICES=1,2"]},
            (1, 2),
            id="cuda-visible-inside-all",
        ),
        pytest.param(
            {"runtime": "nvidia", "environment": {"NVIDIA_VISIBLE_DEVICES": "0,2"}},
            (0, 2),
            id="nvidia-visible-devices",
        ),
    ],
)
def test_import_gpu_requests(tmp_path: Path, service: dict[str, Any], devices: object) -> None:
    body: dict[str, Any] = {
        "image": "vllm/vllm-openai:latest",
        "ports": ["8001:8000"],
        "command": ["--model", "m"],
    }
    for key, value in service.items():
        if key == "deploy":
            request = {"driver": "nvidia", "capabilities": ["gpu"], **value}
            body["deploy"] = {"resources": {"reservations": {"devices": [request]}}}
        else:
            body[key] = value
    path = _write(tmp_path, yaml.safe_dump({"services": {"vllm-x": body}}))
    model = import_compose(path, {}).models["x"]
    assert isinstance(model, ModelConfig)
    assert model.devices == devices
    assert "CUDA_VISIBLE_DEVICES" not in model.env
    assert "NVIDIA_VISIBLE_DEVICES" not in model.env


def _rich_config() -> Config:
    return Config(
        docker=DockerConfig(
            models_dir=Path("/srv/models"), hf_cache=Path("/srv/hf"), vllm_cache=Path("/srv/vllm")
        ),
        default_model="coder",
        models={
            **default_config().models,
            "big": ModelConfig(
                name="Big $HOME model, 'quoted'",
                model="Qwen/Qwen2.5-14B",
                served_name="big-one",
                aliases=("coder",),
                category="coding",
                size="powerful",
                port=8010,
                image="vllm/vllm-openai:nightly",
                gpu_memory_utilization=0.45,
                max_model_len=None,
                devices=(0, 1),
                extra_args=("--tensor-parallel-size", "2", "--chat-template=${x}"),
                env={"PRICE": "$5", "EMPTY": "", "VLLM_SERVER_DEV_MODE": "1"},
                sleep_mode=True,
                idle_ttl=60.5,
                start_timeout=1200,
            ),
            "sleepy": ModelConfig(model="/models/s", port=8012, sleep_mode=True),
            "cpu": ModelConfig(
                model="/models/tiny", port=8011, devices="none", env={"HF_TOKEN": "hf_literal"}
            ),
            "qwen": ModelConfig(model="/models/q", port=8013, image="vllm/vllm-openai:latest"),
            "remote": ExternalModelConfig(
                url="https://example.test/v1", name="Remote", aliases=("far",), size="large"
            ),
        },
    )


@pytest.mark.parametrize("config", [default_config(), _rich_config()], ids=["default", "rich"])
def test_export_then_import_round_trips(tmp_path: Path, config: Config) -> None:
    path = _write(tmp_path, export_compose(config), "exported.yml")
    back = import_compose(path, {"HF_TOKEN": "hf_secret", "VLLM_SERVER_DEV_MODE": "0"})
    assert back.models == config.models
    assert back.default_model == config.default_model
    assert back.docker.models_dir == config.docker.models_dir
    assert back.docker.hf_cache == config.docker.hf_cache
    assert back.docker.vllm_cache == config.docker.vllm_cache
    assert back.docker.image == config.docker.image


def test_export_writes_a_standalone_compose_file() -> None:
    config = _rich_config()
    text = export_compose(config)
    assert text.startswith("# vLLM models for ryx-desktop")
    data = yaml.safe_load(text)
    services = data["services"]
    assert sorted(services) == sorted(
        f"vllm-{key}" for key, m in config.models.items() if isinstance(m, ModelConfig)
    )
    big = services["vllm-big"]
    model = config.models["big"]
    assert isinstance(model, ModelConfig)
    assert big["container_name"] == "ryx-vllm-big"
    assert big["image"] == "vllm/vllm-openai:nightly"
    assert [a.replace("$$", "$") for a in big["command"]] == list(vllm_args(model))
    # the image's entrypoint is `vllm serve`: the model comes first, positionally
    assert big["command"][0] == "Qwen/Qwen2.5-14B"
    assert "--model" not in big["command"]
    assert big["ports"] == ["127.0.0.1:8010:8000"]
    assert big["volumes"] == [
        "${RYX_MODELS_DIR:-/srv/models}:/models:ro",
        "${RYX_HF_CACHE:-/srv/hf}:/root/.cache/huggingface",
        "${RYX_VLLM_CACHE:-/srv/vllm}:/root/.cache/vllm",
    ]
    assert big["ipc"] == "host"
    assert big["environment"]["HF_TOKEN"] == "${HF_TOKEN:-}"
    assert big["environment"]["PRICE"] == "$$5"
    assert big["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "device_ids": ["0", "1"], "capabilities": ["gpu"]}
    ]
    assert big["labels"] == {
        "io.ryx.managed": "true",
        "io.ryx.model": "big",
        "io.ryx.name": "Big $$HOME model, 'quoted'",
        "io.ryx.category": "coding",
        "io.ryx.size": "powerful",
        "io.ryx.aliases": "coder",
        "io.ryx.idle-ttl": "60.5",
        "io.ryx.start-timeout": "1200.0",
        "io.ryx.image": "vllm/vllm-openai:nightly",
    }
    assert "deploy" not in services["vllm-cpu"]
    assert services["vllm-cpu"]["environment"]["VLLM_TARGET_DEVICE"] == (
        "${VLLM_TARGET_DEVICE:-cpu}"
    )
    assert services["vllm-cpu"]["environment"]["VLLM_CPU_KVCACHE_SPACE"] == (
        "${VLLM_CPU_KVCACHE_SPACE:-4}"
    )
    assert "VLLM_TARGET_DEVICE" not in services["vllm-big"]["environment"]
    assert services["vllm-sleepy"]["environment"]["VLLM_SERVER_DEV_MODE"] == (
        "${VLLM_SERVER_DEV_MODE:-1}"
    )
    general = services["vllm-medium-general"]
    assert general["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}
    ]
    # an external server is no container; it rides along in the x-ryx extension
    assert "vllm-remote" not in services
    # the server's root (the config accepts `.../v1` and the proxy adds /v1 itself)
    assert data["x-ryx"]["external"]["remote"]["url"] == "https://example.test"
    for service in services.values():
        assert all(p.startswith("127.0.0.1:") for p in service["ports"])


def test_import_the_shipped_compose_file_gives_the_default_models() -> None:
    config = import_compose(SHIPPED, {})
    assert config.models == default_config().models
    assert config.default_model == default_config().default_model
    assert config.docker.models_dir == SHIPPED.parent / "models"
    assert config.docker.hf_cache == Path.home() / ".cache" / "huggingface"
    assert config.docker.vllm_cache == Path.home() / ".cache" / "ryx-desktop" / "vllm"
    assert config.docker.image == "vllm/vllm-openai:latest"
    moved = import_compose(SHIPPED, {"RYX_MODELS_DIR": "/data/llm"})
    assert moved.docker.models_dir == Path("/data/llm")


def test_shipped_compose_file_is_a_standalone_setup() -> None:
    text = SHIPPED.read_text(encoding="utf-8")
    assert text.startswith("#")
    assert "/home/" not in text
    services = yaml.safe_load(text)["services"]
    ports = {"vllm-medium-general": 8001, "vllm-medium-coding": 8002, "vllm-small-general": 8003}
    assert set(services) == set(ports)
    for name, port in ports.items():
        service = services[name]
        key = name.removeprefix("vllm-")
        assert service["image"] == "vllm/vllm-openai:latest"
        assert service["container_name"] == f"ryx-vllm-{key}"
        assert service["ports"] == [f"127.0.0.1:{port}:8000"]
        assert service["ipc"] == "host"
        assert "${RYX_MODELS_DIR:-./models}:/models:ro" in service["volumes"]
        assert any(v.endswith(":/root/.cache/huggingface") for v in service["volumes"])
        assert any(v.endswith(":/root/.cache/vllm") for v in service["volumes"])
        assert service["deploy"]["resources"]["reservations"]["devices"] == [
            {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}
        ]
        model = default_config().models[key]
        assert isinstance(model, ModelConfig)
        assert service["command"] == list(vllm_args(model))
        assert service["labels"]["io.ryx.managed"] == "true"
        assert service["labels"]["io.ryx.model"] == key


# ------------------------------------------------------------------ import errors


def _service(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "image": "vllm/vllm-openai:latest",
        "ports": ["8001:8000"],
        "command": "--model m",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def test_import_error_positions(tmp_path: Path) -> None:
    text = """\
services:
  vllm-a:
    image: vllm/vllm-openai:latest
    ports: ["8001:8000"]
    command: --model a
  vllm-b:
    image: vllm/vllm-openai:latest
    ports: ["8001:8000"]
    command: --model b
"""
    path = _write(tmp_path, text)
    with pytest.raises(ConfigFileError) as info:
        import_compose(path, {})
    assert (
        info.value.message == f"{path}:8:5: models.b.port: port 8001 is already used by model 'a'"
    )


@pytest.mark.parametrize(
    ("service", "message"),
    [
        pytest.param(_service(ports=None), "publishes no host port for vLLM's port 8000"),
        pytest.param(_service(ports=["8001-8002:8000"]), "host port '8001-8002' must be a single"),
        pytest.param(_service(command="--host 0.0.0.0"), "names no model in its command"),
        pytest.param(
            _service(command="serve a --model b"), "names two models: a (first) and --model b"
        ),
        pytest.param(_service(command="--model 'unclosed"), "cannot split the command"),
        pytest.param(
            _service(environment=["CUDA_VISIBLE_DEVICES=GPU-1234"]),
            "CUDA_VISIBLE_DEVICES 'GPU-1234' must list GPU indexes",
        ),
        pytest.param(_service(image="${IMG:?set IMG}"), "IMG is required: set IMG"),
    ],
)
def test_import_errors_name_the_service(
    tmp_path: Path, service: dict[str, Any], message: str
) -> None:
    path = _write(tmp_path, yaml.safe_dump({"services": {"vllm-x": service}}, sort_keys=False))
    with pytest.raises(ConfigError) as info:
        import_compose(path, {})
    assert info.value.message.startswith(f"{path}:"), info.value.message
    assert f"service 'vllm-x': {message}" in info.value.message


def test_import_rejects_two_models_dirs(tmp_path: Path) -> None:
    a = _service(volumes=["/a:/models:ro"])
    b = _service(volumes=["/b:/models:ro"], ports=["8002:8000"], command="--model b")
    path = _write(tmp_path, yaml.safe_dump({"services": {"vllm-a": a, "vllm-b": b}}))
    with pytest.raises(ConfigFileError, match="mounts /b at /models, but other services mount /a"):
        import_compose(path, {})


def test_import_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such compose file"):
        import_compose(tmp_path / "missing.yml", {})
    bad_yaml = _write(tmp_path, "services:\n  a: [\n", "bad.yml")
    with pytest.raises(ConfigError, match=r"bad\.yml:3:1: invalid YAML"):
        import_compose(bad_yaml, {})
    no_services = _write(tmp_path, "volumes: {}\n", "empty.yml")
    with pytest.raises(ConfigError, match="needs a `services:` mapping"):
        import_compose(no_services, {})
    other = _write(tmp_path, "services:\n  web:\n    image: nginx\n", "other.yml")
    with pytest.raises(ConfigError, match="no vLLM services found"):
        import_compose(other, {})


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("plain", {}, "plain"),
        ("$$HOME and $$$$", {}, "$HOME and $$"),
        ("$A/${A}", {"A": "x"}, "x/x"),
        ("${A:-d}|${A-d}", {"A": ""}, "d|"),
        ("${A:-d}|${A-d}", {}, "d|d"),
        ("${A:+alt}|${B+alt}", {"A": "1", "B": ""}, "alt|alt"),
        ("${A:-${B:-deep}}", {}, "deep"),
        ("cost: 5$", {}, "cost: 5$"),
    ],
)
def test_interpolate(text: str, env: dict[str, str], expected: str) -> None:
    assert interpolate(text, env) == expected


def test_interpolate_errors() -> None:
    with pytest.raises(ValueError, match="A is required: give A"):
        interpolate("${A:?give A}", {})
    with pytest.raises(ValueError, match="unclosed"):
        interpolate("${A", {})
    with pytest.raises(ValueError, match="invalid variable"):
        interpolate("${1A}", {})


# ------------------------------------------------------------------ the model, either way


@pytest.mark.parametrize(
    "command",
    [
        pytest.param("--model /models/a --max-model-len 1024 --enforce-eager", id="flag"),
        pytest.param("--model=/models/a --max-model-len 1024 --enforce-eager", id="flag-equals"),
        pytest.param("/models/a --max-model-len 1024 --enforce-eager", id="positional"),
        pytest.param("serve /models/a --max-model-len 1024 --enforce-eager", id="serve"),
        pytest.param("vllm serve /models/a --max-model-len 1024 --enforce-eager", id="vllm-serve"),
        pytest.param(
            ["vllm", "serve", "/models/a", "--max-model-len", "1024", "--enforce-eager"],
            id="vllm-serve-list",
        ),
        pytest.param(
            "python3 -m vllm.entrypoints.openai.api_server --model /models/a "
            "--max-model-len 1024 --enforce-eager",
            id="api-server-module",
        ),
        pytest.param("serve /models/a --model /models/a --max-model-len 1024 --enforce-eager"),
    ],
)
def test_import_reads_the_model_given_either_way(tmp_path: Path, command: str | list[str]) -> None:
    path = _write(tmp_path, yaml.safe_dump({"services": {"vllm-a": _service(command=command)}}))
    model = import_compose(path, {}).models["a"]
    assert isinstance(model, ModelConfig)
    assert model.model == "/models/a"
    assert model.max_model_len == 1024
    assert model.extra_args == ("--enforce-eager",)


def test_import_reads_the_vllm_cache_mount(tmp_path: Path) -> None:
    service = _service(volumes=["/srv/m:/models:ro", "~/vc:/root/.cache/vllm"])
    path = _write(tmp_path, yaml.safe_dump({"services": {"vllm-a": service}}))
    assert import_compose(path, {}).docker.vllm_cache == Path.home() / "vc"


def test_import_keeps_a_cpu_models_own_kv_cache_size(tmp_path: Path) -> None:
    # A passed-through default is not config; a literal value the user chose is.
    env = {"VLLM_TARGET_DEVICE": "${VLLM_TARGET_DEVICE:-cpu}", "VLLM_CPU_KVCACHE_SPACE": "8"}
    path = _write(tmp_path, yaml.safe_dump({"services": {"vllm-a": _service(environment=env)}}))
    model = import_compose(path, {}).models["a"]
    assert isinstance(model, ModelConfig)
    assert model.devices == "none"
    assert model.env == {"VLLM_CPU_KVCACHE_SPACE": "8"}
