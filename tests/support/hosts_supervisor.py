"""A supervisor over several hosts that a test drives by hand (no engine behind it).

``HostsSupervisor`` is the part of ``Supervisor`` that the bridge, the window and the GPU
monitor read: snapshots, the hosts and their state, and the subscriptions. A test sets a model's
snapshot or a host's problem, and every observer hears it as from the real one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

from ryx_desktop.config import Config
from ryx_desktop.core.spec import LOCAL_HOST
from ryx_desktop.core.states import Instance
from ryx_desktop.core.supervisor import configured_instance

_O = TypeVar("_O")


def _observers(observers: list[_O], observer: _O) -> Callable[[], None]:
    observers.append(observer)
    return lambda: observers.remove(observer)


class HostsSupervisor:
    """Snapshots, hosts and host problems set by the test; observers hear each change."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._instances = {key: configured_instance(config, key) for key in config.models}
        self._problems: dict[str, str | None] = {}
        self.selected: str | None = None
        self.engine_problem: str | None = None
        self._observers: list[Callable[[Instance], None]] = []
        self._host_observers: list[Callable[[str, str | None], None]] = []
        self._config_observers: list[Callable[[Config], None]] = []
        self._null: list[Callable[..., None]] = []

    # ---- what the bridge and the monitor read ---------------------------------------------

    @property
    def hosts(self) -> tuple[str, ...]:
        return (LOCAL_HOST, *(h for h in self.config.hosts if h != LOCAL_HOST))

    @property
    def host_problems(self) -> Mapping[str, str | None]:
        return {host: self._problems.get(host) for host in self.hosts}

    def instances(self) -> list[Instance]:
        return [self._instances[key] for key in self.config.models]

    def get(self, key: str) -> Instance:
        return self._instances[key]

    def sleep_mode_of(self, key: str) -> bool:
        return False

    def subscribe(self, observer: Callable[[Instance], None]) -> Callable[[], None]:
        return _observers(self._observers, observer)

    def subscribe_hosts(self, observer: Callable[[str, str | None], None]) -> Callable[[], None]:
        return _observers(self._host_observers, observer)

    def subscribe_config(self, observer: Callable[[Config], None]) -> Callable[[], None]:
        return _observers(self._config_observers, observer)

    def subscribe_selection(self, observer: Callable[[str | None], None]) -> Callable[[], None]:
        return _observers(self._null, observer)

    def subscribe_engine(self, observer: Callable[[str | None], None]) -> Callable[[], None]:
        return _observers(self._null, observer)

    # ---- what the test does -----------------------------------------------------------------

    def set(self, key: str, **changes: Any) -> Instance:
        """Replace model ``key``'s snapshot with ``changes`` applied and tell the observers."""
        inst = replace(self._instances[key], **changes)
        self._instances[key] = inst
        for observer in list(self._observers):
            observer(inst)
        return inst

    def set_host_problem(self, host: str, problem: str | None) -> None:
        self._problems[host] = problem
        for observer in list(self._host_observers):
            observer(host, problem)

    def reconfigure(self, config: Config) -> None:
        self.config = config
        self._instances = {
            key: self._instances.get(key) or configured_instance(config, key)
            for key in config.models
        }
        for observer in list(self._config_observers):
            observer(config)
