"""The settings dialogs' save: the config file is written atomically, then the engine follows it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ryx_desktop.app import make_config_applier
from ryx_desktop.config import Config, load_config
from ryx_desktop.core.errors import ConfigError
from ryx_desktop.core.supervisor import Supervisor
from tests.support.fakes import FakeHealth, FakeRuntime, VirtualClock

pytestmark = pytest.mark.asyncio


def config_of(**models: Any) -> Config:
    return Config.model_validate(
        {"models": {key: {"model": f"/models/{key}", "port": port} for key, port in models.items()}}
    )


def supervisor_for(config: Config) -> Supervisor:
    runtime = FakeRuntime()
    return Supervisor(config, runtime, FakeHealth(runtime), VirtualClock())


async def test_saves_the_file_then_reconfigures(tmp_path: Path) -> None:
    path = tmp_path / "ryx" / "config.yaml"  # the folder does not exist yet
    sup = supervisor_for(config_of(a=8001))
    new = config_of(a=8001, b=8002)
    await make_config_applier(sup, path)(new)
    assert load_config(path) == new
    assert sup.config is new and [i.key for i in sup.instances()] == ["a", "b"]
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]  # no temp file left


async def test_a_file_that_cannot_be_written_is_a_config_error_and_nothing_changes(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the config's folder should be\n")
    old = config_of(a=8001)
    sup = supervisor_for(old)
    with pytest.raises(ConfigError) as caught:
        await make_config_applier(sup, blocker / "config.yaml")(config_of(a=8001, b=8002))
    assert caught.value.message.startswith(f"cannot save {blocker / 'config.yaml'}")
    assert str(blocker) in caught.value.hint
    assert sup.config is old and [i.key for i in sup.instances()] == ["a"]


async def test_an_unreadable_file_is_not_overwritten_and_keeps_its_own_hint(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"models: [unclosed\n")
    sup = supervisor_for(config_of(a=8001))
    with pytest.raises(ConfigError) as caught:
        await make_config_applier(sup, path)(config_of(a=8001, b=8002))
    assert "refusing to overwrite" in caught.value.message
    assert caught.value.hint == "Fix or move the file by hand, then save again."
    assert path.read_bytes() == b"models: [unclosed\n"
    assert [i.key for i in sup.instances()] == ["a"]
