"""The window's host groups over ``HostsSupervisor``: a config with two hosts and its bridge."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, cast

from ryx_desktop.core.supervisor import Supervisor
from ryx_desktop.ui.bridge import EngineBridge
from tests.gui.fixtures_engine import VramFeed, managed
from tests.support.fakes import FakeRuntime
from tests.support.hosts_supervisor import HostsSupervisor

#: local: a, b; gpu2: big; c: host any (not placed); remote: an external server.
HOSTS_CONFIG: dict[str, Any] = {
    "hosts": {"gpu2": {"url": "ssh://me@gpu2"}},
    "models": {
        "a": managed(8001, gpu_memory_utilization=0.3),
        "b": managed(8002, gpu_memory_utilization=0.25),
        "big": managed(8003, host="gpu2", gpu_memory_utilization=0.5),
        "c": managed(8004, host="any", gpu_memory_utilization=0.2),
        "remote": {"url": "http://127.0.0.1:9000", "served_name": "remote-model"},
    },
}


@contextlib.contextmanager
def hosts_bridge(supervisor: HostsSupervisor) -> Iterator[tuple[EngineBridge, VramFeed]]:
    """A bridge over ``supervisor`` (typed as the real one, which it stands in for)."""
    vram = VramFeed()
    bridge = EngineBridge(cast(Supervisor, supervisor), FakeRuntime(), vram_source=vram)
    try:
        yield bridge, vram
    finally:
        bridge.close()
