"""The desktop with a second host: the gauge reads that host's probe (``Engine.gpu_probes``)
beside this machine's, and the window groups the models by host."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtWidgets import QApplication

from ryx_desktop.adapters.multi_engine import MultiEngineRuntime
from ryx_desktop.app import Engine
from ryx_desktop.config import Config
from ryx_desktop.core.gpu import GpuProbe, GpuReading, GpuStatus
from ryx_desktop.core.ports import Clock
from ryx_desktop.core.supervisor import Supervisor
from ryx_desktop.desktop import start_desktop
from ryx_desktop.ui.instances_model import LIGHT_ROLE, HostHeader
from tests.gui.test_desktop_startup import (  # the desktop's own test rig
    GIB,
    Rig,
    run_loop,
    write_config,
)
from tests.support.fakes import FakeRuntime
from tests.support.host_fakes import FakePorts
from tests.support.waiting import wait_for


class RemoteProbe:
    """gpu2's GPUs as nvidia-smi over SSH would read them."""

    def __init__(self) -> None:
        self.reads = 0
        self.closed = False

    async def read(self) -> GpuReading:
        self.reads += 1
        gpu = GpuStatus(index=0, name="NVIDIA H200", total_bytes=141 * GIB, used_bytes=GIB)
        return GpuReading(gpus=(gpu,))

    async def close(self) -> None:
        self.closed = True


@dataclass
class EngineWithRemoteGpus(Engine):
    """The engine as ``build_engine`` makes it with ``hosts:``, as far as the gauge reads it."""

    remote: Mapping[str, GpuProbe] = field(default_factory=dict)

    @property
    def gpu_probes(self) -> Mapping[str, GpuProbe]:
        return self.remote


class HostsRig(Rig):
    """The desktop's rig with a second host: one runtime over two in-memory engines, its host
    reports wired to the supervisor as ``build_engine`` wires them."""

    def __init__(self) -> None:
        super().__init__(tray=True)
        self.remote = RemoteProbe()
        self.ports = FakePorts()

    def _engine(
        self, config: Config, environ: Mapping[str, str], *, clock: Clock, gpu_probe: GpuProbe
    ) -> Engine:
        supervisor: Supervisor | None = None

        def on_host(host: str, problem: str | None) -> None:
            if supervisor is not None:
                supervisor.host_changed(host, problem)

        runtime = MultiEngineRuntime(
            {"local": self.runtime, "gpu2": FakeRuntime("gpu2")},
            self.ports.open_port,
            self.ports.close_port,
            on_host=on_host,
            clock=clock,
        )
        supervisor = Supervisor(
            config,
            runtime,
            self.health,
            clock,
            environ=environ,
            probe_interval=0.05,
            gpu_probe=gpu_probe,
            gpu_probes={"gpu2": self.remote},
        )
        self.engine = EngineWithRemoteGpus(
            config,
            runtime,
            self.health,  # type: ignore[arg-type]  # the fake has the same methods
            supervisor,
            remote={"gpu2": self.remote},
        )
        return self.engine


def test_the_gauge_reads_every_hosts_probe_and_the_window_groups_by_host(
    qapp: QApplication, tmp_path: Path
) -> None:
    environ = {
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "RYX_DATA_DIR": str(tmp_path / "data"),
    }
    config_file = write_config(tmp_path / "config.yaml", hosts={"gpu2": {"url": "ssh://gpu2"}})
    rig = HostsRig()

    async def scenario() -> None:
        desktop = await start_desktop(qapp, config_file, environ, rig.deps)
        try:
            await wait_for(
                lambda: len(desktop.window.vram_panel.gauges()) == 2, "both hosts' gauges"
            )
            titles = [g.title() for g in desktop.window.vram_panel.gauges()]
            assert titles == [
                "local \u00b7 GPU 0: Fake GPU",
                "gpu2 \u00b7 GPU 0: NVIDIA H200",
            ]
            model = desktop.window.model
            assert model.grouped
            assert model.header_row("local") == 0 and model.header_row("gpu2") == 2
            await wait_for(lambda: model.index(2, 0).data(LIGHT_ROLE) == "ok", "gpu2's light")
            assert HostHeader("gpu2") not in model.model_keys()
        finally:
            await desktop.shutdown()
        assert rig.remote.reads >= 1
        assert not rig.remote.closed  # the engine's, not the monitor's to close

    quits = qapp.quitOnLastWindowClosed()
    qapp.setQuitOnLastWindowClosed(False)
    try:
        run_loop(qapp, scenario())
    finally:
        qapp.setQuitOnLastWindowClosed(quits)
