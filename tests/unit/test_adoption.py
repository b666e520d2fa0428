"""Adopting a container that already runs says what it found: ready, or still loading.

A container that answers is taken over as ready at once (no "starting" on the way, in the log or
in the snapshots); one still loading shows as starting and is waited for.
"""

from __future__ import annotations

import logging

import pytest

from ryx_desktop.core.spec import build_spec
from ryx_desktop.core.states import InstanceState
from tests.unit.test_supervisor import Rig, model

pytestmark = pytest.mark.asyncio

LOGGER = "ryx_desktop.core"


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith(LOGGER)]


async def test_a_ready_container_is_adopted_as_ready(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig({"a": model(8001)})
    cid = rig.runtime.add_running(
        "a", 8001, "/models/m8001", spec_hash=build_spec("a", rig.config).spec_hash
    )
    with caplog.at_level(logging.INFO, logger=LOGGER):
        await rig.sup.open()
    assert rig.states("a") == [InstanceState.READY]  # never shown as starting
    inst = rig.sup.get("a")
    assert inst.adopted and inst.container_id == cid and inst.started_at is not None
    said = messages(caplog)
    assert f"a: adopted its running container {cid}, ready" in said
    assert not any("starting" in line for line in said), said
    assert rig.starts() == []
    await rig.sup.close()


async def test_a_loading_container_is_adopted_as_starting_and_waited_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = Rig({"a": model(8001)})
    cid = rig.runtime.add_running("a", 8001, "/models/m8001", spec_hash=None)
    rig.runtime.containers[cid].serving = False  # still loading its weights
    with caplog.at_level(logging.INFO, logger=LOGGER):
        await rig.sup.open()
    assert rig.sup.get("a").state is InstanceState.STARTING
    assert f"a: adopted its running container {cid}, still loading" in messages(caplog)
    rig.runtime.containers[cid].serving = True
    await rig.clock.advance(2)
    assert rig.sup.get("a").state is InstanceState.READY
    assert rig.starts() == []
    await rig.sup.close()
