"""Every problem of a config file in one round: the checks across models run beside field errors.

pydantic checks across models (a port used twice, a default_model that names no model) only once
every setting validated; the loader runs them on what did validate, so a user fixes the file once.
Nothing may be reported that fixing the bad values would not report too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ryx_desktop.cli import main
from ryx_desktop.config import ConfigFileError, parse_config


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigFileError) as info:
        parse_config(text, "c.yaml")
    return info.value.errors


MIXED = (
    "default_model: nope\n"  # 1
    "models:\n"
    "  a:\n"
    "    model: /models/a\n"
    "    port: 8001\n"  # 5
    "    gpu_memory_utilization: 2\n"
    "  b:\n"
    "    model: /models/b\n"
    "    port: 8001\n"
    "  c:\n"  # 10
    "    model: /models/c\n"
    "    port: eighty\n"
    "  d:\n"
    "    model: /models/d\n"
    "    port: 8420\n"  # 15
)


def test_field_errors_and_clashes_come_together_in_file_order() -> None:
    assert errors_of(MIXED) == [
        "c.yaml:1:16: default_model: 'nope' is not the key, served name or alias of any model "
        "(models: a, b, c, d)",
        "c.yaml:6:29: models.a.gpu_memory_utilization: must be a share of GPU memory above 0 "
        "and at most 1 (like 0.3), got 2",
        "c.yaml:9:11: models.b.port: port 8001 is already used by model 'a'",
        "c.yaml:12:11: models.c.port: expected a whole number, got 'eighty'",
        "c.yaml:15:11: models.d.port: port 8420 is already used by the proxy",
    ]


def test_a_bad_key_and_a_bad_value_come_together() -> None:
    text = "models:\n  bad key!:\n    model: m\n    port: 8001\n  b:\n    model: n\n    port: x\n"
    errors = errors_of(text)
    assert len(errors) == 2
    assert errors[0].startswith("c.yaml:2:3: models.bad key!: model key 'bad key!' must start")
    assert errors[1] == "c.yaml:7:11: models.b.port: expected a whole number, got 'x'"


def test_names_clash_beside_a_field_error() -> None:
    text = (
        "models:\n"
        "  a: {model: m, port: 8001, aliases: [x], max_model_len: 0}\n"
        "  b: {model: n, port: 8002, aliases: [x]}\n"
    )
    assert errors_of(text) == [
        "c.yaml:2:58: models.a.max_model_len: must be at least 1, got 0",
        "c.yaml:3:39: models.b.aliases[0]: alias 'x' is already the alias of model 'a'",
    ]


def test_a_setting_that_stands_in_for_a_bad_one_is_never_blamed() -> None:
    # b's served name is wrong: its default (the model path, a's too) must not be said to clash
    text = (
        "models:\n"
        "  a: {model: same, port: 8001, served_name: first}\n"
        "  b: {model: same, port: 8002, served_name: 5}\n"
    )
    assert errors_of(text) == ["c.yaml:3:45: models.b.served_name: expected text, got 5"]


def test_a_bad_proxy_port_is_not_said_to_clash_as_the_default_port() -> None:
    text = "proxy: {port: x}\nmodels:\n  a: {model: m, port: 8420}\n"
    assert errors_of(text) == ["c.yaml:1:15: proxy.port: expected a whole number, got 'x'"]


def test_default_model_may_mean_a_broken_models_name() -> None:
    # "nick" is the alias of a model whose port is wrong: default_model may well mean it
    text = "default_model: nick\nmodels:\n  a: {model: m, port: x, aliases: [nick]}\n"
    assert errors_of(text) == ["c.yaml:3:23: models.a.port: expected a whole number, got 'x'"]
    wrong = "default_model: nick\nmodels:\n  a: {model: m, port: x, url: 'http://h:1'}\n"
    errors = errors_of(wrong)
    assert len(errors) == 2 and "'nick' is not the key" in errors[0]


def test_a_valid_file_still_reports_its_clashes_once() -> None:
    text = "models:\n  a: {model: m, port: 8001}\n  b: {model: n, port: 8001}\n"
    assert errors_of(text) == ["c.yaml:3:23: models.b.port: port 8001 is already used by model 'a'"]


def test_config_check_prints_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(MIXED, encoding="utf-8")
    assert main(["config", "check", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(": ", 3)[2] for line in lines[:-1]] == [
        "default_model",
        "models.a.gpu_memory_utilization",
        "models.b.port",
        "models.c.port",
        "models.d.port",
    ]
    assert all(line.startswith(f"ryx-desktop: {path}:") for line in lines[:-1])
    assert lines[-1].startswith("hint: ")
