"""Snapshots as JSON and back: what ``/api/instances`` sends and ``status`` reads."""

from __future__ import annotations

import json

import pytest

from ryx_desktop.core.states import (
    Failure,
    Instance,
    InstanceState,
    ModelMetrics,
    Progress,
    ProgressPhase,
    instance_from_json,
    instance_json,
)

FULL = Instance(
    key="coder",
    name="Coder 7B",
    served_name="coder",
    aliases=("c", "code"),
    port=8002,
    url="http://127.0.0.1:8002",
    gpu_memory_utilization=0.45,
    state=InstanceState.FAILED,
    progress=Progress(ProgressPhase.LOAD, 68.0, "loading compiled graphs from the cache"),
    failure=Failure("coder failed to start: x", "do y", 1, ("line 1", "line 2")),
    container_id="abc123",
    in_flight=2,
    metrics=ModelMetrics(1.0, 0.0, 0.25),
    config_changed=True,
    adopted=True,
    note="config changed, restart to apply",
)


@pytest.mark.parametrize(
    "inst",
    [FULL, Instance("a", "a", "a"), Instance("r", "R", "r", external=True, url="http://x:1")],
)
def test_a_snapshot_survives_the_trip_through_json(inst: Instance) -> None:
    wire = json.loads(json.dumps(instance_json(inst)))
    assert instance_from_json(wire) == inst


def test_the_clock_times_do_not_travel() -> None:
    timed = Instance("a", "a", "a", state=InstanceState.READY, started_at=5.0, last_used=9.0)
    back = instance_from_json(instance_json(timed))
    assert (back.started_at, back.last_used) == (None, None)
    assert back.state is InstanceState.READY


@pytest.mark.parametrize(
    "broken",
    [{}, {"key": "a", "name": "a", "served_name": "a", "state": "dozing"}, {"key": "a"}],
)
def test_other_shapes_are_refused(broken: dict[str, object]) -> None:
    with pytest.raises((KeyError, TypeError, ValueError)):
        instance_from_json(broken)
