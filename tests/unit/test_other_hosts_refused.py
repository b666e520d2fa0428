"""A model set to run on another host is refused, not started on the local engine by mistake."""

from __future__ import annotations

import pytest

from ryx_desktop.config import Config
from ryx_desktop.core.errors import ConfigError
from ryx_desktop.core.supervisor import Supervisor
from tests.support.fakes import FakeHealth, FakeRuntime, VirtualClock

pytestmark = pytest.mark.asyncio


def config(**model: object) -> Config:
    return Config.model_validate(
        {
            "hosts": {"gpu2": {"url": "ssh://me@gpu2"}},
            "models": {"a": {"model": "/models/a", "port": 8001, **model}},
        }
    )


async def test_a_model_on_another_host_is_refused_at_open_and_at_reconfigure() -> None:
    runtime = FakeRuntime()
    here = Supervisor(config(), runtime, FakeHealth(runtime), VirtualClock())
    await here.open(watch=False)  # hosts described, every model local: fine
    with pytest.raises(ConfigError) as caught:
        await here.reconfigure(config(host="gpu2"))
    assert "a on 'gpu2'" in caught.value.message and "host:" in caught.value.hint
    assert here.config.models["a"].host == "local"  # the running config is unchanged
    await here.close()

    elsewhere = Supervisor(config(host="gpu2"), runtime, FakeHealth(runtime), VirtualClock())
    with pytest.raises(ConfigError, match="not in this version yet"):
        await elsewhere.open(watch=False)
    assert runtime.calls == []  # nothing was started or even listed
