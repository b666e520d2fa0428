"""The pure parts of the switching benchmark (``bench/switch.py``): its options, the order of its
variants, its tables and verdicts, and the configs and container specs it builds."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import switch
from bench.switch import EXPLICIT, MANUAL, PLAIN, SLEEP, Options, Setup, Swap
from ryx_desktop.core.spec import build_spec, container_name


def test_the_defaults_are_20_s_loads_a_0_3_s_wake_and_6_swaps_of_every_variant() -> None:
    options = switch.parse_options([])
    assert (options.load_seconds, options.wake_seconds, options.swaps) == (20.0, 0.3, 6)
    assert options.variants == (MANUAL, PLAIN, SLEEP, EXPLICIT)
    assert options.timeout == 900.0
    assert options.target_seconds == pytest.approx(0.4)


def test_quick_is_3_s_loads_and_4_swaps_unless_told_otherwise() -> None:
    quick = switch.parse_options(["--quick"])
    assert (quick.load_seconds, quick.swaps, quick.wake_seconds) == (3.0, 4, 0.3)
    told = switch.parse_options(["--quick", "--load-seconds", "5", "--swaps", "2"])
    assert (told.load_seconds, told.swaps) == (5.0, 2)


def test_variants_can_be_chosen_and_keep_their_order() -> None:
    options = switch.parse_options(["--variant", "explicit", "--variant", "manual"])
    assert options.variants == (MANUAL, EXPLICIT)


@pytest.mark.parametrize(
    "argv",
    [
        ["--swaps", "0"],
        ["--load-seconds", "-1"],
        ["--wake-seconds", "-0.1"],
        ["--timeout", "0"],
        ["--variant", "fast"],
    ],
)
def test_values_out_of_range_are_usage_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        switch.parse_options(argv)
    assert exited.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_each_round_starts_one_variant_later() -> None:
    order = ["m", "p", "s", "e"]
    assert switch.rotated(order, 0) == ["m", "p", "s", "e"]
    assert switch.rotated(order, 1) == ["p", "s", "e", "m"]
    assert switch.rotated(order, 5) == ["p", "s", "e", "m"]
    assert switch.rotated([], 3) == []


def test_the_models_take_turns() -> None:
    assert switch.other("a") == "b"
    assert switch.other("b") == "a"


def test_keys_and_policies_keep_to_the_benchmark_s_names() -> None:
    for variant in switch.VARIANTS:
        for model in switch.MODELS:
            key = variant.key(model)
            assert key.startswith("ryxs-")
            assert container_name(key).startswith("ryx-vllm-ryxs-")
    assert (PLAIN.policy, SLEEP.policy, EXPLICIT.policy) == ("exclusive", "exclusive", "fractional")
    assert switch.REFERENCE_PREFIX == "ryxS-bench-ref-"
    assert (min(switch.PORT_RANGE), max(switch.PORT_RANGE)) == (18600, 18699)


def test_a_chat_completion_counts_only_with_a_message() -> None:
    good = b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}}]}'
    assert switch.answered(good)
    assert not switch.answered(b"not json")
    assert not switch.answered(b'{"choices": []}')
    assert not switch.answered(b'{"error": {"message": "no"}}')
    assert not switch.answered(b'{"choices": [{"message": {"content": null}}]}')
    assert not switch.answered(b"[1]")


def test_the_swapped_out_model_s_state_is_counted() -> None:
    assert switch.left_word("sleeping", 1) == "asleep L1"
    assert switch.left_word("sleeping", None) == "asleep"
    assert switch.left_word("stopped", None) == "stopped"
    swaps = [_swap("sleep", 1, 1.0, "asleep L1"), _swap("sleep", 2, 1.0, "stopped")]
    swaps.append(_swap("sleep", 3, 1.0, "asleep L1"))
    assert switch.left_summary(swaps) == "asleep L1 2/3, stopped 1/3"


def _swap(variant: str, number: int, seconds: float, left: str = "stopped") -> Swap:
    source = "a" if number % 2 == 1 else "b"
    return Swap(variant, number, source, switch.other(source), seconds, left)


def _options(**changes: object) -> Options:
    values: dict[str, object] = {
        "load_seconds": 20.0,
        "wake_seconds": 0.3,
        "swaps": 3,
        "variants": switch.VARIANTS,
        "timeout": 900.0,
    }
    values.update(changes)
    return Options(**values)  # type: ignore[arg-type]


def _run() -> list[Swap]:
    """Three swaps of each variant: manual ~21 s, plain ~21 s, sleep stopped once, explicit ~0.3."""
    return [
        _swap("manual", 1, 21.0),
        _swap("plain", 1, 21.2),
        _swap("sleep", 1, 21.3, "stopped"),
        _swap("explicit", 1, 0.31, "asleep L1"),
        _swap("manual", 2, 20.0),
        _swap("plain", 2, 21.0),
        _swap("sleep", 2, 0.33, "asleep L1"),
        _swap("explicit", 2, 0.30, "asleep L1"),
        _swap("manual", 3, 22.0),
        _swap("plain", 3, 20.8),
        _swap("sleep", 3, 0.32, "asleep L1"),
        _swap("explicit", 3, 0.35, "asleep L1"),
    ]


def test_the_swap_table_has_a_column_per_variant_and_the_medians() -> None:
    lines = switch.swap_table(_run(), switch.VARIANTS)
    assert lines[0] == (
        "| swap | from → to | manual docker stop/run s | ryx without sleep mode s | "
        "ryx with sleep mode s | ryx with sleep mode, explicit s |"
    )
    assert lines[1] == "|---|---|---|---|---|---|"
    assert lines[2] == "| 1 | a → b | 21.0 | 21.2 | 21.3 | 0.310 |"
    assert lines[3] == "| 2 | b → a | 20.0 | 21.0 | 0.330 | 0.300 |"
    assert lines[5] == "| median |  | 21.0 | 21.0 | 0.330 | 0.310 |"


def test_a_variant_missing_from_a_swap_shows_a_dash() -> None:
    lines = switch.swap_table([_swap("manual", 1, 2.0)], [MANUAL, PLAIN])
    assert lines[2] == "| 1 | a → b | 2.000 | - |"


def test_the_summary_has_ratios_to_the_manual_baseline() -> None:
    lines = switch.summary_table(_run(), switch.VARIANTS)
    assert lines[0].startswith("| variant | median s | fastest s | slowest s | / manual |")
    assert (
        lines[2] == "| manual docker stop/run | 21.0 | 20.0 | 22.0 | 1.000x | 1.00x | stopped 3/3 |"
    )
    # explicit: median 0.31 s against manual's 21 s.
    assert lines[5] == (
        "| ryx with sleep mode, explicit | 0.310 | 0.300 | 0.350 | 0.015x | 67.7x | asleep L1 3/3 |"
    )
    assert lines[4].endswith("| asleep L1 2/3, stopped 1/3 |")


def test_without_the_baseline_there_are_no_ratios() -> None:
    swaps = [s for s in _run() if s.variant != "manual"]
    line = switch.summary_table(swaps, [PLAIN])[2]
    assert line == "| ryx without sleep mode | 21.0 | 20.8 | 21.2 | - | - | stopped 3/3 |"
    assert "manual's time" not in switch.verdict(swaps, PLAIN, _options())


def test_a_sleeping_swap_passes_within_the_wake_time_plus_100_ms() -> None:
    line = switch.verdict(_run(), EXPLICIT, _options())
    assert line == (
        "ryx with sleep mode, explicit: PASS  swap median 0.310 s [swaps 0.300 .. 0.350] "
        "(target <= 0.400 s: wake 0.300 s + 100 ms), +10.0 ms over the wake, 0.015x manual's "
        "time (67.7x as fast)"
    )


def test_a_slower_median_fails_and_says_what_became_of_the_other_model() -> None:
    swaps = _run()
    assert switch.verdict(swaps, SLEEP, _options(wake_seconds=0.2)).startswith(
        "ryx with sleep mode: FAIL  swap median 0.330 s"
    )
    # With a 0.3 s wake the same swaps pass, and the one stop is still reported.
    passed = switch.verdict(swaps, SLEEP, _options())
    assert passed.startswith("ryx with sleep mode: PASS  swap median 0.330 s")
    assert passed.endswith("; the model swapped out was left asleep L1 2/3, stopped 1/3")


def test_a_ryx_variant_without_sleep_mode_has_no_target() -> None:
    line = switch.verdict(_run(), PLAIN, _options())
    assert line == (
        "ryx without sleep mode: info  swap median 21.0 s [swaps 20.8 .. 21.2], "
        "1.000x manual's time (1.00x as fast)"
    )


def test_the_report_has_both_tables_and_a_line_per_variant() -> None:
    text = switch.report(_run(), _options())
    lines = text.splitlines()
    assert lines[0].startswith("| swap | from → to |")
    assert "| variant | median s |" in text
    verdicts = lines[lines.index("```") + 1 : -1]
    assert [v.split(":")[0] for v in verdicts] == [
        "ryx without sleep mode",
        "ryx with sleep mode",
        "ryx with sleep mode, explicit",
        "manual docker stop/run",
    ]
    assert verdicts[-1] == (
        "manual docker stop/run: info  swap median 21.0 s [swaps 20.0 .. 22.0] "
        "(the fake loads in 20 s)"
    )
    assert lines[-1] == "```"


def test_the_report_leaves_out_variants_that_did_not_run() -> None:
    swaps = [s for s in _run() if s.variant in ("explicit", "manual")]
    text = switch.report(swaps, _options())
    assert "ryx without sleep mode" not in text
    assert "ryx with sleep mode, explicit: PASS" in text


def _setup(tmp_path: Path) -> Setup:
    return Setup(
        image="example/fake:1",
        models_dir=switch.make_models_dir(tmp_path / "models"),
        workdir=tmp_path,
        env={"FAKE_VLLM_LOAD_SECONDS": "20", "FAKE_VLLM_WAKE_SECONDS": "0.3"},
        timeout=120.0,
    )


def test_each_ryx_variant_runs_two_models_on_gpu_0_under_its_policy(tmp_path: Path) -> None:
    setup = _setup(tmp_path)
    for variant in (PLAIN, SLEEP, EXPLICIT):
        config = setup.config(variant, [18601, 18602, 18603])
        assert config.gpu.policy == variant.policy
        assert list(config.models) == [variant.key("a"), variant.key("b")]
        a, b = (config.models[variant.key(m)] for m in ("a", "b"))
        assert (a.port, b.port, config.proxy.port) == (18601, 18602, 18603)
        assert a.devices == b.devices == (0,)
        assert a.sleep_mode == b.sleep_mode == variant.sleep_mode
        assert a.effective_served_name == "switch-a"
        assert a.env["FAKE_VLLM_WAKE_SECONDS"] == "0.3"
        assert a.start_timeout == 120.0
        # The caches are the benchmark's own folders, never the user's.
        assert config.docker.vllm_cache.is_relative_to(tmp_path)
        assert config.docker.hf_cache.is_relative_to(tmp_path)
    explicit = setup.config(EXPLICIT, [18601, 18602, 18603])
    shares = [m.gpu_memory_utilization for m in explicit.models.values()]
    # Both fit on GPU 0 at once, with the default headroom, so only the script's sleep makes room.
    assert sum(shares) <= 1 - explicit.gpu.headroom


def test_a_sleep_mode_model_s_container_serves_the_sleep_routes(tmp_path: Path) -> None:
    config = _setup(tmp_path).config(SLEEP, [18601, 18602, 18603])
    spec = build_spec(SLEEP.key("a"), config, {})
    assert "--enable-sleep-mode" in spec.command
    assert spec.env["VLLM_SERVER_DEV_MODE"] == "1"
    assert spec.name == "ryx-vllm-ryxs-sleep-a"


def test_the_model_folders_hold_a_config_and_sparse_weights(tmp_path: Path) -> None:
    root = switch.make_models_dir(tmp_path / "models")
    for model in ("a", "b"):
        weights = root / f"switch-{model}" / "model.safetensors"
        assert (root / f"switch-{model}" / "config.json").is_file()
        assert weights.stat().st_size == switch.WEIGHTS_BYTES
