"""Config loading (with file positions in errors), defaults, paths, dumping and atomic saving."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ryx_desktop.config import (
    Config,
    ConfigFileError,
    DockerConfig,
    ExternalModelConfig,
    GpuConfig,
    ModelConfig,
    ProxyConfig,
    config_path,
    default_config,
    dump_config,
    load_config,
    parse_config,
    save_config,
)
from ryx_desktop.core.errors import ConfigError

# ------------------------------------------------------------------ defaults and paths


def test_default_config_is_the_original_three_model_setup() -> None:
    config = default_config()
    assert config.default_model == "medium-general"
    assert list(config.models) == ["medium-general", "medium-coding", "small-general"]
    expected = {
        "medium-general": (
            "Qwen 2.5 7B GPTQ",
            "/models/medium/general/qwen2.5-7b-gptq",
            ("general",),
            "general",
            "medium",
            8001,
        ),
        "medium-coding": (
            "Qwen 2.5 Coder 7B GPTQ",
            "/models/medium/coding/qwen2.5-coder-7b-gptq",
            ("coding",),
            "coding",
            "medium",
            8002,
        ),
        "small-general": (
            "Qwen 2.5 3B",
            "/models/small/general/qwen2.5-3b",
            ("small",),
            "general",
            "small",
            8003,
        ),
    }
    for key, (name, path, aliases, category, size, port) in expected.items():
        model = config.models[key]
        assert isinstance(model, ModelConfig)
        assert (model.name, model.model, model.aliases) == (name, path, aliases)
        assert (model.category, model.size, model.port) == (category, size, port)
        assert model.gpu_memory_utilization == 0.3
        assert model.max_model_len == 4096
        assert model.devices == "all"
        assert model.extra_args == ("--trust-remote-code",)


def test_config_path_prefers_cli_then_env_then_user_dir(tmp_path: Path) -> None:
    cli = tmp_path / "cli.yaml"
    env = {"RYX_CONFIG": str(tmp_path / "env.yaml")}
    assert config_path(str(cli), env) == cli
    assert config_path(None, env) == tmp_path / "env.yaml"
    default = config_path(None, {})
    assert default.name == "config.yaml"
    assert default.parent.name == "ryx-desktop"
    assert config_path(None, {"RYX_CONFIG": ""}) == default
    assert config_path("~/x.yaml", {}) == Path.home() / "x.yaml"


def test_vllm_cache_defaults_to_the_user_cache_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert DockerConfig().vllm_cache == tmp_path / "xdg" / "ryx-desktop" / "vllm"


def test_vllm_cache_expands_home_and_is_written_only_when_set() -> None:
    assert DockerConfig(vllm_cache=Path("~/vc")).vllm_cache == Path.home() / "vc"
    assert "vllm_cache" not in dump_config(Config())  # the default is not written out
    config = parse_config("docker:\n  vllm_cache: ~/compile-cache\n", "c.yaml")
    assert config.docker.vllm_cache == Path.home() / "compile-cache"
    back = parse_config(dump_config(config), "dump.yaml")
    assert back.docker.vllm_cache == Path.home() / "compile-cache"


# ------------------------------------------------------------------ loading


FULL = """\
proxy:
  host: 127.0.0.1
  port: 8421
  allowed_origins: [http://localhost:3000]
docker:
  image: vllm/vllm-openai:v0.6.0
  models_dir: /srv/models
gpu:
  policy: fractional
  headroom: 0.1
idle_ttl: 600
default_model: coding
models:
  medium-general:
    name: Qwen 2.5 7B GPTQ
    model: /models/medium/general/qwen2.5-7b-gptq
    aliases: [general]
    port: 8001
    gpu_memory_utilization: 0.3
    devices: [0, 1]
    extra_args: [--trust-remote-code, --tensor-parallel-size, 2]
    env: {VLLM_LOGGING_LEVEL: DEBUG, OMP_NUM_THREADS: 4}
  medium-coding:
    model: /models/medium/coding/qwen2.5-coder-7b-gptq
    served_name: coder
    aliases: coding
    category: coding
    port: 8002
    devices: none
    sleep_mode: true
  remote:
    url: http://127.0.0.1:9000/
    name: Remote box
"""


def test_parse_full_config() -> None:
    config = parse_config(FULL, "c.yaml")
    assert config.proxy.port == 8421
    assert config.proxy.allowed_origins == ("http://localhost:3000",)
    assert config.docker.models_dir == Path("/srv/models")
    assert config.gpu == GpuConfig(policy="fractional", headroom=0.1)
    assert config.idle_ttl == 600
    general = config.models["medium-general"]
    assert isinstance(general, ModelConfig)
    assert general.devices == (0, 1)
    assert general.extra_args == ("--trust-remote-code", "--tensor-parallel-size", "2")
    assert general.env == {"VLLM_LOGGING_LEVEL": "DEBUG", "OMP_NUM_THREADS": "4"}
    coding = config.models["medium-coding"]
    assert isinstance(coding, ModelConfig)
    assert coding.aliases == ("coding",)
    assert coding.devices == "none"
    assert coding.sleep_mode is True
    remote = config.models["remote"]
    assert isinstance(remote, ExternalModelConfig)
    assert remote.url == "http://127.0.0.1:9000"


def test_empty_file_is_a_config_without_models() -> None:
    assert parse_config("# nothing yet\n", "c.yaml") == Config()


def test_missing_file_means_the_default(tmp_path: Path) -> None:
    assert load_config(tmp_path / "nope" / "config.yaml") == default_config()


def test_load_config_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(FULL, encoding="utf-8")
    assert load_config(path) == parse_config(FULL, "x")


def test_load_config_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("models:\n  a:\n    model: m\n    port: nope\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.message.startswith(f"{path}:4:11: ")


def test_unreadable_file_is_an_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("models: {}\n", encoding="utf-8")

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    # chmod 000 cannot stop root, so refuse the read the way the OS would
    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.message == f"{path}: cannot read the config: Permission denied"


def test_directory_and_binary_files_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    binary = tmp_path / "config.yaml"
    binary.write_bytes(b"models: \xff\xfe\n")
    with pytest.raises(ConfigError, match="is not UTF-8"):
        load_config(binary)


BASE = "models:\n  a:\n    model: m\n    port: 8001\n"


@pytest.mark.parametrize(
    ("text", "line", "col", "message"),
    [
        pytest.param(
            "models:\n  a: [1, 2\n",
            3,
            1,
            "invalid YAML: expected ',' or ']'",
            id="yaml-syntax",
        ),
        pytest.param(
            "models:\n\ta: 1\n",
            2,
            1,
            "invalid YAML: found character '\\t'",
            id="yaml-tab",
        ),
        pytest.param(
            BASE + "    prot: 3\n",
            5,
            5,
            "models.a.prot: unknown setting 'prot' (did you mean 'port'?)",
            id="unknown-model-key",
        ),
        pytest.param(
            "proxy:\n  port: 8420\n  hots: x\n",
            3,
            3,
            "proxy.hots: unknown setting 'hots' (did you mean 'host'?)",
            id="unknown-section-key",
        ),
        pytest.param(
            "prxy: {}\n",
            1,
            1,
            "prxy: unknown setting 'prxy' (did you mean 'proxy'?)",
            id="unknown-top-key",
        ),
        pytest.param(
            "models:\n  a:\n    model: m\n    port: abc\n",
            4,
            11,
            "models.a.port: expected a whole number, got 'abc'",
            id="wrong-type",
        ),
        pytest.param(
            "proxy:\n  auto_start: maybe\n",
            2,
            15,
            "proxy.auto_start: expected true or false, got 'maybe'",
            id="wrong-type-bool",
        ),
        pytest.param(
            BASE + "  b:\n    model: n\n    port: 8001\n",
            7,
            11,
            "models.b.port: port 8001 is already used by model 'a'",
            id="duplicate-port",
        ),
        pytest.param(
            BASE + "  b:\n    model: n\n    port: 8420\n",
            7,
            11,
            "models.b.port: port 8420 is already used by the proxy",
            id="port-of-the-proxy",
        ),
        pytest.param(
            BASE + "    aliases: [x]\n  b:\n    model: n\n    port: 8002\n    aliases: [y, x]\n",
            9,
            18,
            "models.b.aliases[1]: alias 'x' is already the alias of model 'a'",
            id="duplicate-alias",
        ),
        pytest.param(
            BASE + "    served_name: s\n  b:\n    model: n\n    port: 8002\n    served_name: s\n",
            9,
            18,
            "models.b.served_name: served name 's' is already the served name of model 'a'",
            id="duplicate-served-name",
        ),
        pytest.param(
            BASE + "  b:\n    model: n\n    port: 8002\n    aliases: [a]\n",
            8,
            15,
            "models.b.aliases[0]: alias 'a' is the key of model 'a'",
            id="alias-is-another-key",
        ),
        pytest.param(
            BASE + "  b:\n    model: n\n    port: 8002\n    served_name: a\n",
            8,
            18,
            "models.b.served_name: served name 'a' is the key of model 'a'",
            id="served-name-is-another-key",
        ),
        pytest.param(
            BASE + "  b:\n    model: m\n    port: 8002\n",
            6,
            12,
            "models.b.model: served name 'm' is already the served name of model 'a' "
            "(set served_name to tell them apart)",
            id="same-weights-same-served-name",
        ),
        pytest.param(
            BASE + "    gpu_memory_utilization: 1.5\n",
            5,
            29,
            "models.a.gpu_memory_utilization: must be a share of GPU memory above 0 and at "
            "most 1 (like 0.3), got 1.5",
            id="gpu-share-above-one",
        ),
        pytest.param(
            BASE + "    gpu_memory_utilization: 0\n",
            5,
            29,
            "models.a.gpu_memory_utilization: must be a share of GPU memory",
            id="gpu-share-zero",
        ),
        pytest.param(
            "models:\n  r:\n    url: http://x:9000\n    model: m\n    port: 9000\n",
            4,
            5,
            "models.r.model: a `url:` model is an external server that is never started, "
            "so it cannot also set model, port",
            id="url-with-container-fields",
        ),
        pytest.param(
            "default_model: nope\n" + BASE,
            1,
            16,
            "default_model: 'nope' is not the key, served name or alias of any model (models: a)",
            id="default-model-unknown",
        ),
        pytest.param(
            BASE + "    port: 8002\n",
            5,
            5,
            "duplicate key 'port' (first set on line 4)",
            id="duplicate-yaml-key",
        ),
        pytest.param(
            "proxy:\n  port: 8420\nproxy:\n  port: 8421\n",
            3,
            1,
            "duplicate key 'proxy' (first set on line 1)",
            id="duplicate-top-key",
        ),
        pytest.param(
            "proxy:\n  host: 0.0.0.0\n",
            2,
            9,
            "proxy.host: '0.0.0.0' is not a loopback address, so proxy.api_key is required",
            id="exposed-proxy-without-key",
        ),
        pytest.param(
            "- a\n- b\n",
            1,
            1,
            "the config must be a mapping of settings (proxy:, docker:, models: ...), not a list",
            id="top-level-list",
        ),
        pytest.param(
            "just text\n",
            1,
            1,
            "the config must be a mapping of settings (proxy:, docker:, models: ...), "
            "not 'just text'",
            id="top-level-scalar",
        ),
        pytest.param(
            "models:\n  a:\n    name: x\n    port: 8001\n",
            2,
            3,
            "models.a.model: missing required setting 'model'",
            id="missing-required",
        ),
        pytest.param(
            BASE + "    devices: [0, gpu]\n",
            5,
            14,
            "models.a.devices: devices must be all, none or a list of GPU indexes like [0, 1]",
            id="devices-bad",
        ),
        pytest.param(
            "gpu:\n  policy: share\n",
            2,
            11,
            "gpu.policy: must be 'exclusive' or 'fractional', got 'share'",
            id="literal",
        ),
        pytest.param(
            BASE + "    extra_args: [--trust-remote-code, --port, 9]\n",
            5,
            39,
            "models.a.extra_args[1]: --port cannot be an extra arg",
            id="extra-arg-owned-flag",
        ),
        pytest.param(
            BASE + "    env:\n      CUDA_VISIBLE_DEVICES: 0\n",
            6,
            7,
            "models.a.env.CUDA_VISIBLE_DEVICES: set the GPUs with `devices:`",
            id="gpu-env",
        ),
        pytest.param(
            "models:\n  a:\n",
            2,
            3,
            "models.a: expected a mapping of settings, got nothing (null)",
            id="null-model",
        ),
        pytest.param(
            "models:\n  'a b':\n    model: m\n    port: 8001\n",
            2,
            3,
            "models.a b: model key 'a b' must start with a letter or digit",
            id="bad-key",
        ),
        pytest.param(
            "models:\n  r:\n    url: ftp://x\n",
            3,
            10,
            "models.r.url: url must start with http:// or https://",
            id="bad-url",
        ),
    ],
)
def test_errors_point_at_file_line_and_column(text: str, line: int, col: int, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.yaml")
    error = info.value
    assert isinstance(error, ConfigFileError)
    assert error.message.startswith(f"c.yaml:{line}:{col}: {message}"), error.message
    assert "Value error" not in error.message
    assert error.errors[0] == error.message


def test_several_errors_are_all_listed_in_file_order() -> None:
    text = "models:\n  b:\n    model: n\n    port: x\n  a:\n    model: m\n    porte: 1\n"
    with pytest.raises(ConfigFileError) as info:
        parse_config(text, "c.yaml")
    errors = info.value.errors
    assert errors == [
        "c.yaml:4:11: models.b.port: expected a whole number, got 'x'",
        "c.yaml:5:3: models.a.port: missing required setting 'port'",
        "c.yaml:7:5: models.a.porte: unknown setting 'porte' (did you mean 'port'?)",
    ]
    assert info.value.message == errors[0] + " (and 2 more problems)"


def test_cross_model_checks_report_every_clash() -> None:
    text = (
        "models:\n"
        "  a: {model: m, port: 8001, aliases: [x]}\n"
        "  b: {model: n, port: 8001, aliases: [x]}\n"
    )
    with pytest.raises(ConfigFileError) as info:
        parse_config(text, "c.yaml")
    assert info.value.errors == [
        "c.yaml:3:23: models.b.port: port 8001 is already used by model 'a'",
        "c.yaml:3:39: models.b.aliases[0]: alias 'x' is already the alias of model 'a'",
    ]


def test_default_model_may_name_a_served_name_or_alias() -> None:
    for name in ("a", "served", "nick"):
        text = f"default_model: {name}\n{BASE}    served_name: served\n    aliases: [nick]\n"
        assert parse_config(text, "c.yaml").default_model == name


def test_exposed_proxy_with_a_key_is_fine() -> None:
    config = parse_config("proxy:\n  host: 0.0.0.0\n  api_key: env:RYX_KEY\n", "c.yaml")
    assert config.proxy.host == "0.0.0.0"


def test_yaml_anchors_and_merge_keys_work() -> None:
    text = (
        "models:\n"
        "  a: &common {model: m, port: 8001, gpu_memory_utilization: 0.3}\n"
        "  b: {<<: *common, model: n, port: 8002}\n"
    )
    b = parse_config(text, "c.yaml").models["b"]
    assert isinstance(b, ModelConfig)
    assert (b.model, b.port, b.gpu_memory_utilization) == ("n", 8002, 0.3)


# ------------------------------------------------------------------ dumping


def _rich_config() -> Config:
    return Config(
        proxy=ProxyConfig(host="0.0.0.0", api_key="env:RYX_KEY", port=8500, auto_start=False),
        docker=DockerConfig(
            image="vllm/vllm-openai:v0.6.0", models_dir=Path("/srv/models"), stop_timeout=5
        ),
        gpu=GpuConfig(policy="fractional", headroom=0.1),
        idle_ttl=300,
        start_timeout=120,
        default_model="nick",
        models={
            **default_config().models,
            "big": ModelConfig(
                name="Big: one \"quoted\" name, with 'marks' # and a hash",
                model="Qwen/Qwen2.5-14B",
                served_name="big-one",
                aliases=("nick", "yes", "1"),
                category="general",
                size="powerful",
                port=8010,
                image="vllm/vllm-openai:nightly",
                gpu_memory_utilization=0.45,
                max_model_len=None,
                devices=(0, 1),
                extra_args=("--tensor-parallel-size", "2", "--quantization=gptq"),
                env={"VLLM_LOGGING_LEVEL": "DEBUG", "EMPTY": "", "NUM": "007"},
                sleep_mode=True,
                idle_ttl=60.5,
                start_timeout=1200,
            ),
            "cpu": ModelConfig(model="/models/tiny", port=8011, devices="none"),
            "remote": ExternalModelConfig(
                url="https://example.test/v1", name="Remote", aliases=("far",), size="large"
            ),
        },
    )


def test_dump_round_trips() -> None:
    for config in (default_config(), Config(), _rich_config()):
        text = dump_config(config)
        assert parse_config(text, "dump.yaml") == config, text


def test_dump_is_readable_and_leaves_out_defaults() -> None:
    text = dump_config(default_config())
    assert text.startswith("# ryx-desktop config")
    assert "  medium-general:\n    name: Qwen 2.5 7B GPTQ\n" in text
    assert "    aliases: [general]\n" in text
    assert "    extra_args: [--trust-remote-code]\n" in text
    assert "sleep_mode" not in text
    assert "served_name" not in text
    assert "stop_timeout" not in text
    assert "models_dir: ~/vllm-models\n" in text
    # key fields stay even when they hold the default
    cpu = dump_config(_rich_config()).split("  cpu:\n", 1)[1].split("\n\n", 1)[0]
    for field in ("model:", "port:", "category:", "size:", "gpu_memory_utilization:", "devices:"):
        assert field in cpu


# ------------------------------------------------------------------ saving


def _temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_save_creates_dirs_and_writes_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "config.yaml"
    save_config(_rich_config(), path)
    assert load_config(path) == _rich_config()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _temp_files(path.parent) == []


def test_save_keeps_the_existing_permissions(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("models: {}\n", encoding="utf-8")
    path.chmod(0o640)
    save_config(default_config(), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert load_config(path) == default_config()


def test_save_through_a_symlink_updates_the_target(tmp_path: Path) -> None:
    target = tmp_path / "real.yaml"
    target.write_text("models: {}\n", encoding="utf-8")
    link = tmp_path / "config.yaml"
    link.symlink_to(target)
    save_config(default_config(), link)
    assert link.is_symlink()
    assert load_config(target) == default_config()


def test_save_refuses_to_overwrite_a_file_that_is_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    original = b"models:\n  a: [unclosed\n"
    path.write_bytes(original)
    with pytest.raises(ConfigError) as info:
        save_config(default_config(), path)
    assert info.value.message.startswith(f"refusing to overwrite {path}: it could not be read: ")
    assert path.read_bytes() == original
    assert _temp_files(tmp_path) == []


def test_save_refuses_to_overwrite_an_unreadable_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.yaml"
    original = b"models: {}\n"
    path.write_bytes(original)

    def denied(self: Path, *args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", denied)
    with pytest.raises(ConfigError) as info:
        save_config(default_config(), path)
    monkeypatch.undo()
    assert info.value.message == (
        f"refusing to overwrite {path}: it could not be read: Permission denied"
    )
    assert path.read_bytes() == original


def test_save_refuses_to_overwrite_binary(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        save_config(default_config(), path)
    assert path.read_bytes() == b"\xff\xfe\x00garbage"


def test_a_failed_rename_leaves_the_original_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.yaml"
    original = dump_config(default_config())
    path.write_text(original, encoding="utf-8")

    def broken_replace(src: str, dst: object) -> None:
        assert Path(src).read_text(encoding="utf-8") == dump_config(_rich_config())
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(ConfigError, match=r"cannot save .*No space left on device"):
        save_config(_rich_config(), path)
    assert path.read_text(encoding="utf-8") == original
    assert _temp_files(tmp_path) == []


def test_a_crash_mid_write_leaves_the_original_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.yaml"
    original = dump_config(default_config())
    path.write_text(original, encoding="utf-8")

    def crash(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        save_config(_rich_config(), path)
    assert path.read_text(encoding="utf-8") == original
    assert _temp_files(tmp_path) == []


def test_save_syncs_the_data_before_the_rename_and_the_dir_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.yaml"
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        calls.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    save_config(default_config(), path)
    assert calls == ["fsync-file", "replace", "fsync-dir"]


@pytest.mark.parametrize(
    "given",
    [
        "http://127.0.0.1:8001",
        "http://127.0.0.1:8001/",
        "http://127.0.0.1:8001/v1",
        "http://127.0.0.1:8001/v1/",
    ],
)
def test_an_external_url_is_the_servers_root_even_when_written_as_a_base_url(given: str) -> None:
    # The probes ask for `/health` and `/v1/models`, the proxy forwards `/v1/...`: an
    # OpenAI-style base URL must not turn into `/v1/v1/models`.
    assert ExternalModelConfig(url=given).url == "http://127.0.0.1:8001"
    assert ExternalModelConfig(url="https://host.test/api/v1").url == "https://host.test/api"


# ------------------------------------------------------------------ proxy.loading_messages


@pytest.mark.parametrize("style", ["comment", "reasoning", "off"])
def test_loading_messages_validates_and_round_trips(style: str) -> None:
    # Written bare, as a user would: YAML reads `off` as false, which must still mean "off".
    config = parse_config(f"proxy:\n  loading_messages: {style}\n", "c.yaml")
    assert config.proxy.loading_messages == style
    text = dump_config(config)
    assert parse_config(text, "dump.yaml") == config, text
    # Like every other default, the default style is left out of a saved file.
    assert ("loading_messages" in text) is (style != "comment"), text


def test_loading_messages_defaults_to_comment_and_refuses_other_values() -> None:
    assert ProxyConfig().loading_messages == "comment"
    with pytest.raises(ConfigFileError) as info:
        parse_config("proxy:\n  loading_messages: loud\n", "c.yaml")
    assert info.value.message == (
        "c.yaml:2:21: proxy.loading_messages: must be 'comment', 'reasoning' or 'off', got 'loud'"
    )


def test_every_general_setting_survives_a_save() -> None:
    # A save from the GUI writes dump_config: a general setting it left out would be lost.
    config = Config.model_validate(
        {
            "idle_ttl": 300,
            "sleep_ttl": 3600,
            "wake_timeout": 20,
            "start_timeout": 600,
            "first_answer_check": False,
            "models": {
                "m": {
                    "model": "/models/m",
                    "port": 8001,
                    "sleep_mode": True,
                    "sleep_ttl": 60,
                    "wake_timeout": 5,
                }
            },
        }
    )
    text = dump_config(config)
    assert parse_config(text, "dump.yaml") == config, text
    for line in ("sleep_ttl: 3600", "wake_timeout: 20", "first_answer_check: false"):
        assert line in text
