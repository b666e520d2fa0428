"""Config files an adversary (or a slip) writes: alias bombs, keys no client can send, layering.

Issue 11, items 6 and 8: a "billion laughs" of YAML aliases is refused before anything expands
it, and a ``proxy.api_key`` that could never authenticate a client fails the config check.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from ryx_desktop.config import (
    ConfigFileError,
    ModelConfig,
    ProxyConfig,
    api_key_problem,
    load_config,
    parse_config,
    validation_problems,
)
from ryx_desktop.config._loader import ALIAS_EXPANSION_LIMIT, load_yaml
from ryx_desktop.core.errors import ConfigError, RyxError

# ------------------------------------------------------------------ item 6: alias bombs

NAMES = "abcdefghi"


def billion_laughs(levels: int = 9) -> str:
    """``a: &a [x x9]``, ``b: &b [*a x9]`` ...: about 300 bytes that stand for 9**levels values."""
    lines = ["a: &a [x,x,x,x,x,x,x,x,x]"]
    for prev, name in itertools.pairwise(NAMES[:levels]):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def mapping_laughs(levels: int = 9) -> str:
    """The same bomb built of mappings: each level's keys all alias the level below."""
    lines = ["a: &a {" + ", ".join(f"k{i}: x" for i in range(9)) + "}"]
    for prev, name in itertools.pairwise(NAMES[:levels]):
        lines.append(f"{name}: &{name} {{" + ", ".join(f"k{i}: *{prev}" for i in range(9)) + "}")
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(10)
def test_config_check_refuses_a_billion_laughs_at_once(tmp_path: Path) -> None:
    # `ryx-desktop config check` in a child process, with a deadline and a memory cap, so that a
    # loader that expands the aliases fails this test instead of hanging the suite or the machine.
    path = tmp_path / "bomb.yaml"
    path.write_text(billion_laughs())
    assert len(path.read_bytes()) < 320
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
        "from ryx_desktop.cli import main\n"
        "raise SystemExit(main(['config', 'check', sys.argv[1]]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=8
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    # Level f is the first whose aliases push the repeats past the limit: its first `*e`.
    assert lines[0] == (
        f"ryx-desktop: {path}:6:8: YAML aliases expand too much: with this alias, the file's "
        f"aliases repeat more than {ALIAS_EXPANSION_LIMIT:,} keys and values"
    )
    assert lines[1].startswith("hint: Write the repeated settings out")
    assert len(lines) == 2


@pytest.mark.timeout(10)
@pytest.mark.parametrize("bomb", [billion_laughs, mapping_laughs])
def test_the_loader_refuses_alias_bombs_with_their_position(
    bomb: Callable[[], str], tmp_path: Path
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(bomb())
    with pytest.raises(ConfigFileError) as caught:
        load_config(path)
    [error] = caught.value.errors
    where, _, what = error.partition(": ")
    assert what == (
        "YAML aliases expand too much: with this alias, the file's aliases repeat more than "
        f"{ALIAS_EXPANSION_LIMIT:,} keys and values"
    )
    source, line, col = where.rsplit(":", 2)
    assert source == str(path)
    # It points at an alias, not at the anchor that alias names.
    assert path.read_text().splitlines()[int(line) - 1][int(col) - 1] == "*"
    assert "aliases" in caught.value.hint
    assert isinstance(caught.value, ConfigError)


def _repeats(times: int) -> str:
    """One list of 1000 nodes (itself and 999 items), aliased ``times`` times."""
    return "a: &a [" + ",".join(["x"] * 999) + "]\nb: [" + ",".join(["*a"] * times) + "]\n"


@pytest.mark.timeout(10)
def test_aliases_may_repeat_up_to_the_limit_and_not_one_node_more() -> None:
    allowed = ALIAS_EXPANSION_LIMIT // 1000
    data, positions = load_yaml(_repeats(allowed), "c.yaml")
    assert len(data["b"]) == allowed and len(data["b"][-1]) == 999
    assert positions[("b", allowed - 1, 998)].line == 1  # the walker still finds each repeat
    with pytest.raises(ConfigFileError) as caught:
        load_yaml(_repeats(allowed + 1), "c.yaml")
    column = 1 + len("b: [") + 3 * allowed  # the alias one past the limit: `*a,` each
    assert caught.value.errors[0].startswith(f"c.yaml:2:{column}: YAML aliases expand too much")


@pytest.mark.timeout(10)
def test_ordinary_anchors_merge_keys_and_recursive_aliases_still_load() -> None:
    models = "".join(
        f"  m{i}: {{<<: *common, model: /models/m{i}, port: {8001 + i}}}\n" for i in range(60)
    )
    text = (
        "defaults: &common {gpu_memory_utilization: 0.3, extra_args: [--enforce-eager], "
        "env: {A: '1', B: '2'}}\n"
    )
    data, positions = load_yaml(text + "models:\n" + models, "c.yaml")
    assert data["models"]["m59"]["extra_args"] == ["--enforce-eager"]
    # A merged key points at where the anchor wrote it.
    assert positions[("models", "m3", "gpu_memory_utilization")].line == 1
    config = parse_config("models:\n  x: &common {model: m, port: 9000}\n" + models, "c.yaml")
    m59 = config.models["m59"]
    assert isinstance(m59, ModelConfig) and (m59.model, m59.port) == ("/models/m59", 8060)
    looped, _ = load_yaml("a: &a [1, *a]\n", "c.yaml")
    assert looped["a"][1] is looped["a"]


# ------------------------------------------------------------------ item 8: keys no client can send

BLANK = "the key is blank, so no client could ever send it"


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "127.0.0.1", "localhost"])
@pytest.mark.parametrize("key", ['""', '"   "', '" \\t"', "''"])
def test_a_blank_api_key_fails_the_check_on_every_host(host: str, key: str) -> None:
    # Beyond loopback no client could ever authenticate; on loopback it is surely a slip too,
    # so it is an error, not a silent "no key" (leaving api_key out means no key).
    text = f"proxy:\n  host: {host}\n  api_key: {key}\n"
    with pytest.raises(ConfigFileError) as caught:
        parse_config(text, "c.yaml")
    assert len(caught.value.errors) == 1
    assert caught.value.errors[0].startswith(f"c.yaml:3:12: proxy.api_key: {BLANK} (")
    assert "env:NAME" in caught.value.errors[0]
    assert caught.value.hint


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ('"env:"', "env: names no environment variable"),
        ('"env:   "', "env: names no environment variable"),
        ('"env: RYX_KEY"', "' RYX_KEY' after env: is not an environment variable name"),
        ("env:MY-KEY", "'MY-KEY' after env: is not an environment variable name"),
        ("env:1KEY", "'1KEY' after env: is not an environment variable name"),
        ('" s3cret"', "the key starts or ends with whitespace"),
        ('"s3cret "', "the key starts or ends with whitespace"),
        ('"s3c\\nret"', "the key holds a control character"),
    ],
)
def test_api_keys_no_client_could_send_fail_the_check(key: str, words: str) -> None:
    text = f"proxy:\n  host: 0.0.0.0\n  api_key: {key}\n"
    with pytest.raises(ConfigFileError) as caught:
        parse_config(text, "c.yaml")
    assert caught.value.errors == [f"c.yaml:3:12: proxy.api_key: {api_key_problem(parse_key(key))}"]
    assert words in caught.value.errors[0]


def parse_key(yaml_scalar: str) -> str:
    value = yaml.safe_load(yaml_scalar)
    assert isinstance(value, str)
    return value


@pytest.mark.parametrize(
    ("host", "key", "expected"),
    [
        ("0.0.0.0", "s3cret-Key_1", "s3cret-Key_1"),
        ("0.0.0.0", "env:RYX_API_KEY", "env:RYX_API_KEY"),
        ("0.0.0.0", "'a key with inner spaces'", "a key with inner spaces"),
        ("127.0.0.1", "null", None),
        ("127.0.0.1", "", None),  # `api_key:` with nothing after it is null: no key
    ],
)
def test_keys_a_client_can_send_and_no_key_on_loopback_still_pass(
    host: str, key: str, expected: str | None
) -> None:
    config = parse_config(f"proxy:\n  host: {host}\n  api_key: {key}\n", "c.yaml")
    assert config.proxy.api_key == expected


def test_the_settings_dialog_gets_the_same_sentence_for_a_blank_key() -> None:
    with pytest.raises(ValidationError) as caught:
        ProxyConfig(host="0.0.0.0", api_key="  ")
    [(loc, message)] = validation_problems(caught.value)
    assert loc == ("api_key",)
    assert message.startswith(BLANK)


def test_a_blank_key_is_reported_before_the_missing_key_of_an_exposed_host() -> None:
    # One problem, the real one: the key is there but blank (not "api_key is required").
    with pytest.raises(ConfigFileError) as caught:
        parse_config('proxy:\n  api_key: "  "\n  host: 0.0.0.0\n', "c.yaml")
    assert len(caught.value.errors) == 1
    assert caught.value.errors[0].startswith(f"c.yaml:2:12: proxy.api_key: {BLANK}")


# ------------------------------------------------------------------ config is the leaf layer


def test_config_imports_nothing_from_core() -> None:
    code = (
        "import json, sys\n"
        "import ryx_desktop.config\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('ryx_desktop.'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    loaded = json.loads(out)
    assert "ryx_desktop.config._loader" in loaded  # the probe really imported the package
    assert not [m for m in loaded if m.startswith("ryx_desktop.core")]


def test_config_errors_are_still_the_core_error_family() -> None:
    assert issubclass(ConfigFileError, ConfigError) and issubclass(ConfigError, RyxError)
    error = ConfigFileError(["c.yaml:1:1: wrong"])
    assert error.hint == ConfigError.hint and str(error) == "c.yaml:1:1: wrong"
