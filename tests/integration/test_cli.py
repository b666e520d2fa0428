"""Every ``ryx-desktop`` command as a user runs it: a subprocess, a config file, the real engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from ryx_desktop.config import Config, dump_config

SMALL = "/models/small/general/qwen2.5-3b"
CODER = "/models/medium/coding/qwen2.5-coder-7b-gptq"


class Cli:
    """Runs ``python -m ryx_desktop ARGS`` as a user would, with ``RYX_CONFIG`` set."""

    def __init__(self, config_file: Path, extra_env: dict[str, str]) -> None:
        self.env = {**os.environ, "RYX_CONFIG": str(config_file), **extra_env}
        self.env.pop("RYX_DEBUG", None)

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "ryx_desktop", *args]

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args),
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )


@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., Cli]:
    """``cli(config, **env)`` -> a ``Cli`` whose config file holds ``config`` (none: no file)."""

    def bind(config: Config | None = None, **env: str) -> Cli:
        path = tmp_path / "config.yaml"
        if config is not None:
            path.write_text(dump_config(config), encoding="utf-8")
        return Cli(path, env)

    return bind


def assert_user_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    # vLLM's own traceback may be quoted in the log tail ("  | ..."); ours must never show.
    assert not any(line.startswith("Traceback") for line in lines), result.stderr
    assert sum(line.startswith("ryx-desktop: ") for line in lines) == 1, result.stderr
    assert lines[-1].startswith("hint: ")
    for needle in needles:
        assert needle in result.stderr


def test_start_status_logs_stop(
    cli: Callable[..., Cli], make_config: Callable[..., Config], docker_client: docker.DockerClient
) -> None:
    config = make_config(
        {
            "small": {"model": SMALL, "aliases": ["tiny"], "env": {"FAKE_VLLM_SHARDS": "2"}},
            "coder": {"model": CODER, "served_name": "coder"},
        },
        default_model="small",
    )
    run = cli(config)
    started = run("start", "tiny")
    assert started.returncode == 0, started.stderr
    port = config.models["small"].port  # type: ignore[union-attr]
    assert f"small is ready at http://127.0.0.1:{port}/v1" in started.stdout
    progress = [line for line in started.stderr.splitlines() if line.startswith("small: loading ")]
    assert any(line.endswith("(weights 2/2 shards)") for line in progress), started.stderr
    assert "small: loading 100% (API server up)" in progress, started.stderr
    percents = [int(line.split()[2].rstrip("%")) for line in progress if "%" in line]
    assert percents == sorted(percents), started.stderr  # progress never goes back

    status = run("status", "--json")
    assert status.returncode == 0, status.stderr
    rows = {row["key"]: row for row in json.loads(status.stdout)}
    assert rows["small"]["state"] == "ready"
    assert rows["small"]["adopted"] is True
    assert rows["small"]["port"] == port
    assert rows["coder"]["state"] == "stopped"
    assert rows["coder"]["served_name"] == "coder"

    table = run("status")
    assert table.returncode == 0
    assert any(line.startswith("small") and "ready" in line for line in table.stdout.splitlines())
    assert "selected: small" in table.stdout

    logs = run("logs", "small", "--tail", "50")
    assert logs.returncode == 0
    assert "Application startup complete." in logs.stdout

    old_id = rows["small"]["container_id"]
    restarted = run("restart", "small")
    assert restarted.returncode == 0, restarted.stderr
    assert "small is ready" in restarted.stdout
    assert docker_client.containers.get("ryx-vllm-small").id != old_id

    stopped = run("stop", "small")
    assert stopped.returncode == 0, stopped.stderr
    assert docker_client.containers.list(all=True, filters={"name": "ryx-vllm-"}) == []
    assert "is not running" in run("stop", "small").stdout
    assert_user_error(run("logs", "small"), 1, "small has no container")


def test_logs_follow_streams_until_the_container_stops(
    cli: Callable[..., Cli], make_config: Callable[..., Config], docker_client: docker.DockerClient
) -> None:
    config = make_config({"small": {"model": SMALL}})
    run = cli(config)
    assert run("start", "small").returncode == 0
    with subprocess.Popen(
        run.argv("logs", "-f", "small"), stdout=subprocess.PIPE, text=True, env=run.env
    ) as follower:
        assert follower.stdout is not None
        for line in follower.stdout:
            if "Application startup complete." in line:
                break
        docker_client.containers.get("ryx-vllm-small").stop(timeout=5)
        rest = follower.stdout.read()
        assert follower.wait(timeout=30) == 0
    assert "Shutting down" in rest


def test_status_in_another_process_shows_the_load_progress(
    cli: Callable[..., Cli], make_config: Callable[..., Config]
) -> None:
    env = {"FAKE_VLLM_SHARDS": "4", "FAKE_VLLM_LOAD_SECONDS": "40"}
    config = make_config({"slow": {"model": SMALL, "env": env}})
    run = cli(config)
    with subprocess.Popen(
        run.argv("start", "slow"), stderr=subprocess.PIPE, text=True, env=run.env
    ) as starter:
        assert starter.stderr is not None
        for line in starter.stderr:
            if line.strip() == "slow: loading 15% (weights 1/4 shards)":
                break
        # Only the starting process follows the log; a second one reads it from Docker.
        status = run("status", "--json")
        assert status.returncode == 0, status.stderr
        row = {r["key"]: r for r in json.loads(status.stdout)}["slow"]
        assert row["state"] == "starting"
        assert row["progress"]["percent"] >= 15, row
        assert row["progress"]["detail"].startswith("weights "), row
        table = run("status")
        assert any(
            line.startswith("slow") and "starting" in line and "%" in line
            for line in table.stdout.splitlines()
        ), table.stdout
        stopped = run("stop", "slow")
        assert stopped.returncode == 0, stopped.stderr
        starter.wait(timeout=30)


def test_start_failures_are_one_line_and_a_hint(
    cli: Callable[..., Cli], make_config: Callable[..., Config]
) -> None:
    models = {
        "crashy": {"model": SMALL, "env": {"FAKE_VLLM_CRASH": "1"}},
        "oom": {"model": SMALL, "env": {"FAKE_VLLM_EXIT_CODE": "137"}},
        "gpu": {"model": SMALL, "devices": "all"},
        "nowhere": {"model": "/models/not/downloaded"},
        "noimage": {"model": SMALL, "image": "ryx-test/does-not-exist:1"},
    }
    config = make_config({k: {**m, "served_name": k} for k, m in models.items()})
    run = cli(config)
    # The reason is vLLM's root cause from the whole log, not the generic last line; the tail stays.
    assert_user_error(
        run("start", "crashy"),
        1,
        "crashy failed to start: RuntimeError: CUDA error: an illegal memory access",
        "(exited with code 1)",
        "\nlast log lines:\n  | ",  # stdout and stderr interleave in any order: any tail line
    )
    # Exit 137 without Docker's OOMKilled is a kill from outside, not "out of memory".
    killed = run("start", "oom")
    assert_user_error(killed, 1, "was killed (exit code 137, SIGKILL)", "dmesg")
    assert "ran out of memory" not in killed.stderr
    assert_user_error(run("start", "gpu"), 1, "NVIDIA container toolkit", "devices: none")
    assert_user_error(run("start", "nowhere"), 1, "/models/not/downloaded")
    assert_user_error(run("start", "noimage"), 1, "ryx-test/does-not-exist:1")
    assert_user_error(run("start", "nope"), 2, "no model is called 'nope'")


def test_without_a_docker_engine_status_says_so_in_one_line(
    cli: Callable[..., Cli], make_config: Callable[..., Config], tmp_path: Path
) -> None:
    run = cli(make_config({"small": {"model": SMALL}}), DOCKER_HOST=f"unix://{tmp_path}/no.sock")
    result = run("status")
    assert_user_error(result, 1, "Docker")
    assert len(result.stderr.strip().splitlines()) == 2  # the sentence and its hint
    assert result.stdout == ""


def test_config_commands(cli: Callable[..., Cli], tmp_path: Path) -> None:
    run = cli()
    default = run("config", "check")
    assert default.returncode == 0
    assert "built-in default" in default.stdout
    assert "3 models: medium-general, medium-coding, small-general" in default.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  a:\n    model: /models/a\n    port: eighty\n", encoding="utf-8")
    checked = run("config", "check", str(bad))
    assert_user_error(checked, 2, f"{bad}:4:11")

    seed = Path(__file__).resolve().parents[2] / "compose" / "model-router.yml"
    imported = run("config", "import-compose", str(seed))
    assert imported.returncode == 0, imported.stderr
    assert "medium-coding:" in imported.stdout
    target = tmp_path / "config.yaml"
    assert not target.exists()
    written = run("config", "import-compose", str(seed), "--write")
    assert written.returncode == 0, written.stderr
    assert run("config", "check").stdout.startswith(f"{target}: OK (3 models")

    exported = run("config", "export-compose", "-o", str(tmp_path / "out.yml"))
    assert exported.returncode == 0, exported.stderr
    again = run("config", "import-compose", str(tmp_path / "out.yml"))
    assert again.stdout == imported.stdout


def test_bad_usage_exits_2(cli: Callable[..., Cli]) -> None:
    # A bare ryx-desktop is the tray app; tests/gui/test_desktop_startup.py covers it.
    assert cli()("frobnicate").returncode == 2
