"""The pure parts of the cold-start benchmark (``bench/cold_start.py``): parsing its options,
its statistics and ratios, its report tables and verdicts, and the config it builds."""

from __future__ import annotations

import math
import socket
from pathlib import Path

import pytest

from bench import cold_start
from bench.cold_start import Round, SecondStart, Setup, Start
from ryx_desktop.core.spec import build_spec, container_name


def test_env_pairs_split_at_the_first_equals_sign() -> None:
    assert cold_start.parse_env(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}


@pytest.mark.parametrize("pair", ["NOVALUE", "=1"])
def test_env_pairs_without_a_name_or_equals_sign_are_refused(pair: str) -> None:
    with pytest.raises(ValueError, match="NAME=VALUE"):
        cold_start.parse_env([pair])


def test_devices_are_all_none_or_indexes() -> None:
    assert cold_start.parse_devices("none") == "none"
    assert cold_start.parse_devices("all") == "all"
    assert cold_start.parse_devices("0,1") == [0, 1]
    for bad in ("gpu", "", "-1", "0,x"):
        with pytest.raises(ValueError, match="--devices"):
            cold_start.parse_devices(bad)


def test_a_model_list_counts_only_when_it_lists_the_served_name() -> None:
    body = b'{"object": "list", "data": [{"id": "tiny", "object": "model"}]}'
    assert cold_start.lists_served(body, "tiny")
    assert not cold_start.lists_served(body, "other")
    assert not cold_start.lists_served(b"not json", "tiny")
    assert not cold_start.lists_served(b'{"data": "tiny"}', "tiny")
    assert not cold_start.lists_served(b'["tiny"]', "tiny")


def test_added_time_is_the_difference_of_the_medians_in_ms() -> None:
    ryx = [1.30, 1.10, 1.20, 9.0]  # median 1.25: one slow round does not move it far
    reference = [1.05, 1.00, 1.10]  # median 1.05
    assert cold_start.added_ms(ryx, reference) == pytest.approx(200.0)
    assert cold_start.ratio(ryx, reference) == pytest.approx(1.25 / 1.05)


def test_a_ratio_over_nothing_is_not_a_number() -> None:
    assert math.isnan(cold_start.ratio([1.0], [0.0]))
    assert math.isnan(cold_start.ratio([1.0], []))
    assert math.isnan(cold_start.median([]))


def test_numbers_get_fewer_decimals_the_larger_they_are() -> None:
    assert cold_start.fmt(1.23456) == "1.235"
    assert cold_start.fmt(12.345, 1) == "12.3"
    assert cold_start.fmt(1234.5) == "1,234"
    assert cold_start.fmt(42.0, 1, "+") == "+42.0"
    assert cold_start.fmt(-3.0, 1, "+") == "-3.0"
    assert cold_start.fmt(None) == "-"
    assert cold_start.fmt(float("nan")) == "-"


def _rounds(pairs: list[tuple[float, float]]) -> list[Round]:
    return [
        Round(i + 1, Start(ref, 0.25), Start(ryx, 0.3), ryx_first=i % 2 == 1)
        for i, (ref, ryx) in enumerate(pairs)
    ]


def test_the_comparison_table_has_every_round_and_the_medians() -> None:
    text = cold_start.comparison_report(_rounds([(1.8, 2.6), (1.9, 2.0), (1.7, 3.0)]))
    lines = text.splitlines()
    assert lines[0].startswith("| round | first | reference launch ms")
    assert lines[2] == "| 1 | reference | 250 | 1.800 | 300 | 2.600 | +800 | 1.444x |"
    assert lines[3] == "| 2 | ryx | 250 | 1.900 | 300 | 2.000 | +100 | 1.053x |"
    # Medians: reference 1.8, ryx 2.6; added 800 ms, ratio 2.6 / 1.8.
    assert lines[5] == "| median |  | 250 | 1.800 | 300 | 2.600 | +800 | 1.444x |"
    assert lines[-1].startswith("ryx: FAIL  added cold-start time: +800 ms")
    assert "[rounds +100 .. +1,300]" in lines[-1]
    assert "(target < 100 ms)" in lines[-1]


def test_the_verdict_passes_below_100_ms_added() -> None:
    verdict = cold_start.comparison_verdict(_rounds([(1.80, 1.85), (1.90, 1.93), (1.70, 1.76)]))
    assert verdict.startswith("ryx: PASS  added cold-start time: +50.0 ms")
    assert "ratio 1.028x" in verdict


def test_an_unknown_launch_time_shows_as_a_dash() -> None:
    rounds = [Round(1, Start(1.0, None), Start(1.05, None), ryx_first=False)]
    line = cold_start.comparison_report(rounds).splitlines()[2]
    assert line == "| 1 | reference | - | 1.000 | - | 1.050 | +50.0 | 1.050x |"


def test_the_second_start_table_compares_each_round_with_its_first_start() -> None:
    rounds = [
        SecondStart(1, Start(60.0), Start(40.0), cache_files=12, cache_bytes=3_400_000),
        SecondStart(2, Start(70.0), Start(35.0), cache_files=12, cache_bytes=3_400_000),
    ]
    text = cold_start.second_start_report(rounds, cache_mounted=True)
    lines = text.splitlines()
    assert lines[2] == "| 1 | 60.0 | 40.0 | 0.667x | 12 files, 3.4 MB |"
    assert lines[4] == "| median | 65.0 | 37.5 | 0.577x |  |"
    assert lines[-1] == (
        "ryx: info  second start: 0.577x the first [rounds 0.500 .. 0.667], "
        "+27,500 ms saved (medians)"
    )
    assert "no docker.vllm_cache" not in text


def test_the_second_start_report_says_when_no_cache_was_mounted() -> None:
    rounds = [SecondStart(1, Start(2.0), Start(2.0), cache_files=0, cache_bytes=0)]
    text = cold_start.second_start_report(rounds, cache_mounted=False)
    assert "no docker.vllm_cache" in text.splitlines()[-1]


def test_folder_size_counts_files_below_a_folder(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "one").write_bytes(b"x" * 10)
    (tmp_path / "a" / "b" / "two").write_bytes(b"y" * 5)
    assert cold_start.folder_size(tmp_path) == (2, 15)
    assert cold_start.folder_size(tmp_path / "missing") == (0, 0)


def test_free_ports_skip_a_port_that_is_taken() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        assert cold_start.free_ports(1, [taken, free]) == [free]
        with pytest.raises(SystemExit, match="fewer than 1 free ports"):
            cold_start.free_ports(1, [taken])


def _setup(tmp_path: Path, **changes: object) -> Setup:
    values: dict[str, object] = {
        "image": "example/vllm:1",
        "model": "/models/tiny",
        "models_dir": tmp_path / "models",
        "served_name": None,
        "extra_args": ["--enforce-eager"],
        "env": {"K": "V"},
        "devices": "none",
        "timeout": 120.0,
        "workdir": tmp_path,
        "ports": [18510, 18511, 18512],
    }
    values.update(changes)
    return Setup(**values)  # type: ignore[arg-type]


def test_the_config_runs_the_one_benchmark_model_as_asked(tmp_path: Path) -> None:
    config = cold_start.make_config(_setup(tmp_path, served_name="tiny"), tmp_path / "cache")
    model = config.models[cold_start.MODEL_KEY]
    assert container_name(cold_start.MODEL_KEY) == "ryx-vllm-ryxe-bench"
    assert config.docker.image == "example/vllm:1"
    assert config.docker.models_dir == tmp_path / "models"
    assert (model.port, model.devices, model.extra_args) == (18510, "none", ("--enforce-eager",))
    assert model.env == {"K": "V"}
    assert model.effective_served_name == "tiny"
    assert model.start_timeout == 120.0
    assert config.proxy.port == 18512


def test_the_reference_gets_ryx_s_own_container_command_and_mounts(tmp_path: Path) -> None:
    config = cold_start.make_config(_setup(tmp_path), tmp_path / "cache")
    spec = build_spec(cold_start.MODEL_KEY, config, {})
    assert "/models/tiny" in spec.command
    assert "--enforce-eager" in spec.command
    assert spec.env["K"] == "V"
    targets = {m.target: m.source for m in spec.mounts}
    assert targets["/models"] == str(tmp_path / "models")
    if cold_start.has_vllm_cache():
        # The compile cache is the benchmark's own folder, never the user's.
        assert targets["/root/.cache/vllm"] == str(tmp_path / "cache")
        assert (tmp_path / "cache").is_dir()
    else:
        assert "/root/.cache/vllm" not in targets


def test_max_model_len_and_memory_share_are_the_model_s_own_settings(tmp_path: Path) -> None:
    setup = _setup(tmp_path, max_model_len=1024, gpu_memory_utilization=0.5)
    model = cold_start.make_config(setup, None).models[cold_start.MODEL_KEY]
    assert (model.max_model_len, model.gpu_memory_utilization) == (1024, 0.5)


def test_settings_ryx_refuses_end_the_run_with_its_reason(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"refuses the model.s settings(.|\n)*--max-model-len"):
        cold_start.make_config(_setup(tmp_path, extra_args=["--max-model-len=9"]), None)
