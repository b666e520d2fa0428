"""GPU planning and vLLM log-progress parsing: pure functions."""

from __future__ import annotations

import pytest

from ryx_desktop.core.errors import BudgetExceededError
from ryx_desktop.core.planner import GpuClaim, gpus_of, plan_evictions
from ryx_desktop.core.progress import parse_load_progress
from ryx_desktop.core.states import InstanceState

READY = InstanceState.READY


def claim(key: str, gpus: set[int], share: float, **kw: object) -> GpuClaim:
    return GpuClaim(key, frozenset(gpus), share, **kw)  # type: ignore[arg-type]


def test_gpus_of_devices_settings() -> None:
    assert gpus_of("all", [0, 1]) == {0, 1}
    assert gpus_of("none", [0, 1]) == set()
    assert gpus_of((1,), [0, 1]) == {1}


def test_exclusive_evicts_holders_of_shared_gpus_only() -> None:
    target = claim("t", {0}, 0.3)
    others = [
        claim("a", {0}, 0.3, state=READY, in_flight=3),
        claim("b", {1}, 0.3, state=READY),
        claim("c", {0, 1}, 0.3, state=InstanceState.STOPPED),
        claim("d", {0, 1}, 0.3, state=InstanceState.STARTING),
    ]
    assert plan_evictions(target, others, "exclusive", 0.05) == ["a", "d"]


def test_fractional_evicts_lru_idle_per_gpu_until_it_fits() -> None:
    target = claim("t", {0}, 0.5)
    others = [
        claim("new", {0}, 0.3, state=READY, last_used=50.0),
        claim("old", {0}, 0.3, state=READY, last_used=10.0),
        claim("never", {0}, 0.1, state=READY, last_used=None),
    ]
    # 0.7 used + 0.5 > 0.95: drop "never" (0.1) then "old" (0.3) -> 0.3 + 0.5 fits.
    assert plan_evictions(target, others, "fractional", 0.05) == ["never", "old"]


def test_fractional_headroom_counts_and_busy_models_block() -> None:
    target = claim("t", {0}, 0.5)
    others = [claim("a", {0}, 0.5, state=READY, in_flight=1)]
    assert plan_evictions(target, others, "fractional", 0.0) == []
    with pytest.raises(BudgetExceededError) as caught:
        plan_evictions(target, others, "fractional", 0.05)
    assert "only 45% of its 95% budget" in caught.value.message


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("Loading safetensors checkpoint shards:   0% Completed | 0/4 [00:00<?, ?it/s]", 0.0),
        (
            "Loading safetensors checkpoint shards:  50% Completed | 2/4 [00:01<00:01, 1.5it/s]",
            50.0,
        ),
        ("Loading pt checkpoint shards: 100% Completed | 1/1 [00:03<00:00,  3.01s/it]", 100.0),
        ("INFO:     Application startup complete.", None),
    ],
)
def test_parse_load_progress(line: str, expected: float | None) -> None:
    parsed = parse_load_progress(line)
    assert (parsed[0] if parsed else None) == expected
