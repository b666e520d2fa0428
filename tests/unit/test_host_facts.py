"""The host facts the sleep planner reads: available RAM and a model's weight size."""

from __future__ import annotations

from pathlib import Path

import pytest

from ryx_desktop.adapters.host import LocalHostFacts, read_available_ram, sum_weights


def test_available_ram_is_memavailable_in_bytes(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:   12345678 kB\n")
    assert read_available_ram(meminfo) == 12345678 * 1024


@pytest.mark.parametrize("text", ["MemTotal: 1 kB\n", "MemAvailable: lots kB\n", ""])
def test_available_ram_unknown_is_none(tmp_path: Path, text: str) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(text)
    assert read_available_ram(meminfo) is None
    assert read_available_ram(tmp_path / "missing") is None


def test_weights_are_the_weight_files_only(tmp_path: Path) -> None:
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "model-00001-of-00002.safetensors").write_bytes(b"x" * 1000)
    (model / "sub" / "model-00002-of-00002.safetensors").write_bytes(b"x" * 500)
    (model / "config.json").write_text("{}")
    (model / "tokenizer.json").write_text("{" + " " * 5000 + "}")
    assert sum_weights(model) == 1500
    assert sum_weights(tmp_path / "empty-or-missing") is None


@pytest.mark.asyncio
async def test_the_adapter_reads_off_the_loop(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemAvailable: 2048 kB\n")
    (tmp_path / "w.bin").write_bytes(b"12345")
    facts = LocalHostFacts(meminfo)
    assert await facts.available_ram() == 2048 * 1024
    assert await facts.weights_bytes(str(tmp_path)) == 5
