"""``config import-compose``: says which ports it keeps off the network, counts in words, and
never overwrites a model of the config unasked (``--replace``).

A compose file's ``"8004:8000"`` published vLLM on every interface; ryx-desktop publishes every
model on 127.0.0.1 only, and says so for each such port. ``--write`` adds the imported models to
the config file's own; a key it has already is an error naming it, unless ``--replace``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ryx_desktop.cli import main
from ryx_desktop.config import Config, import_compose, load_config, save_config

COMPOSE = """\
services:
  vllm-open:
    image: vllm/vllm-openai:latest
    ports: ["8004:8000"]
    command: --model /models/open
  vllm-local:
    image: vllm/vllm-openai:latest
    ports: ["127.0.0.1:8005:8000"]
    command: --model /models/local
  vllm-wild:
    image: vllm/vllm-openai:latest
    ports:
      - "0.0.0.0:8006:8000"
    command: --model /models/wild
  vllm-long:
    image: vllm/vllm-openai:latest
    ports:
      - {target: 8000, published: 8007}
    command: --model /models/long
  vllm-lan:
    image: vllm/vllm-openai:latest
    ports: ["192.168.1.20:8008:8000"]
    command: --model /models/lan
"""

ONE = """\
services:
  vllm-coder:
    image: vllm/vllm-openai:latest
    ports: ["127.0.0.1:8011:8000"]
    command: --model /models/coder-v2
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_each_port_published_beyond_this_machine_is_told(tmp_path: Path) -> None:
    path = write(tmp_path / "compose.yml", COMPOSE)
    told: list[str] = []
    config = import_compose(path, {}, warn=told.append)
    assert [m.port for m in config.models.values()] == [8004, 8005, 8006, 8007, 8008]  # type: ignore[union-attr]
    assert [line.split(": ", 1)[0] for line in told] == [
        f"{path}:4:13",
        f"{path}:13:9",
        f"{path}:18:9",
        f"{path}:22:13",
    ]
    assert "service 'vllm-open' published port 8004 on all interfaces; ryx-desktop " in told[0]
    assert "publishes it on 127.0.0.1 only" in told[0]
    assert "port 8006 on all interfaces" in told[1]
    assert "port 8007 on all interfaces" in told[2]
    assert "port 8008 on 192.168.1.20" in told[3]


def test_the_cli_warns_and_counts_in_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    compose = write(tmp_path / "compose.yml", COMPOSE.split("  vllm-local:")[0])
    target = tmp_path / "config.yaml"
    assert main(["--config", str(target), "config", "import-compose", str(compose)]) == 0
    printed = capsys.readouterr()
    assert "open:" in printed.out
    assert printed.err.startswith(f"ryx-desktop: warning: {compose}:4:13: service 'vllm-open'")
    code = main(["--config", str(target), "config", "import-compose", str(compose), "--write"])
    assert code == 0
    printed = capsys.readouterr()
    assert printed.out == f"wrote 1 model from {compose} to {target}\n"
    assert "on all interfaces" in printed.err
    assert list(load_config(target).models) == ["open"]  # the built-in examples are not kept
    assert main(["config", "check", str(target)]) == 0
    assert capsys.readouterr().out == f"{target}: OK (1 model: open)\n"


def test_a_key_the_config_has_is_not_overwritten_unless_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "config.yaml"
    mine = {"model": "/models/coder", "port": 8001, "name": "My coder"}
    save_config(
        Config.model_validate(
            {
                "default_model": "keep",
                "models": {"keep": {"model": "/models/keep", "port": 8002}, "coder": mine},
            }
        ),
        target,
    )
    before = target.read_bytes()
    compose = write(tmp_path / "compose.yml", ONE)
    argv = ["--config", str(target), "config", "import-compose", str(compose), "--write"]

    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"ryx-desktop: {compose} has a model called 'coder', which the config has already",
        "hint: Add --replace to overwrite it with the compose file's, or give the service "
        "another key (an io.ryx.model label or another container_name) and import again.",
    ]
    assert target.read_bytes() == before

    assert main([*argv, "--replace"]) == 0
    assert capsys.readouterr().out == (
        f"wrote 1 model from {compose} to {target} (replaced: coder)\n"
    )
    saved = load_config(target)
    assert list(saved.models) == ["keep", "coder"]  # kept, and replaced in its place
    assert saved.models["coder"].model == "/models/coder-v2"  # type: ignore[union-attr]
    assert saved.default_model == "keep"
