"""The tray icon: the selected model's state at a glance, a menu of every model, notifications.

The icon's colour is the selected model's state (see ``icons.state_icon``), amber while any
other model loads or wakes (a request through the proxy may start one); its tooltip names the
model, its state, every other model loading or waking (``loading Coder 40 %``), the VRAM in use
and the proxy URL. The context menu is rebuilt from the bridge's live snapshots each time it
opens, so it never shows stale states; a model that runs with vLLM's sleep mode gets Sleep
(level 1) and Wake beside Start and Stop. Commands go down through the bridge as coroutines;
the tray itself never waits on the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction, QActionGroup, QClipboard, QIcon
from PySide6.QtWidgets import QMenu, QSystemTrayIcon

from ryx_desktop.core.gpu import VramReport
from ryx_desktop.core.states import Instance, InstanceState
from ryx_desktop.ui.bridge import EngineBridge
from ryx_desktop.ui.icons import state_icon
from ryx_desktop.ui.state_text import (
    asleep_level,
    is_waking,
    load_percent,
    sleep_detail,
    state_text,
)

__all__ = ["Notification", "TrayIcon", "activity_text", "load_percent", "state_text", "vram_text"]

APP_NAME = "ryx-desktop"
GIB = 1024**3
MESSAGE_MS = 6000

#: An icon is drawn once per (state, rounded load %) and reused.
_IconKey = tuple[InstanceState | None, int | None]


@dataclass(frozen=True, slots=True)
class Notification:
    """One tray message as it was shown."""

    title: str
    message: str
    warning: bool = False


def activity_text(inst: Instance) -> str:
    """What a starting model is doing, for the tooltip: ``loading Coder 40 %``, ``waking Coder``."""
    word = "waking" if is_waking(inst) else "loading"
    percent = load_percent(inst)
    return f"{word} {inst.name}" + (f" {percent} %" if percent is not None else "")


def _elsewhere(inst: Instance) -> bool:
    """A managed model placed on another host than this machine's engine."""
    return not inst.external and inst.host not in ("local", "any")


def vram_text(report: VramReport | None) -> str | None:
    """``VRAM 7.5 / 24.0 GiB`` over every GPU (per host with several: ``VRAM local 7.5 / 24.0
    GiB · gpu2 30.0 / 80.0 GiB``); None when nothing was measured."""
    if report is None or not report.found:
        return None
    by_host: dict[str, list[tuple[int, int]]] = {}
    for g in report.gpus:
        if g.used_bytes is not None and g.total_bytes is not None:
            by_host.setdefault(g.host, []).append((g.used_bytes, g.total_bytes))
    if not by_host:
        return None
    parts = [
        f"{sum(u for u, _ in gpus) / GIB:.1f} / {sum(t for _, t in gpus) / GIB:.1f} GiB"
        for gpus in by_host.values()
    ]
    if len(by_host) == 1:
        return f"VRAM {parts[0]}"
    return "VRAM " + " · ".join(f"{host} {part}" for host, part in zip(by_host, parts, strict=True))


class TrayIcon(QObject):
    """A ``QSystemTrayIcon`` that follows the engine through an ``EngineBridge``."""

    openManagerRequested = Signal()
    showLogsRequested = Signal(str)  # model key
    quitRequested = Signal(bool)  # True: stop every model first
    settingsRequested = Signal()
    notified = Signal(str, str)  # title, message

    def __init__(
        self,
        bridge: EngineBridge,
        *,
        clipboard: QClipboard | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._bridge = bridge
        self._clipboard = clipboard
        self._icons: dict[_IconKey, QIcon] = {}
        self._icon_key: _IconKey | None = None
        self._actions: dict[str, QAction] = {}
        self._submenus: list[QMenu] = []
        self._groups: list[QActionGroup] = []
        # The state each model was last seen in: a change of it is what notifications tell.
        self._states: dict[str, InstanceState] = {i.key: i.state for i in bridge.instances()}
        # The sleep level each model was last seen asleep at (None: awake or on its way).
        self._asleep: dict[str, int | None] = {i.key: asleep_level(i) for i in bridge.instances()}
        self.notifications: list[Notification] = []

        self._tray = QSystemTrayIcon(self)
        # QSystemTrayIcon does not own its menu; a menu needs a widget parent, so we keep it.
        self._menu = QMenu()
        self._menu.aboutToShow.connect(self.rebuild_menu)
        self._tray.setContextMenu(self._menu)
        self._tray.activated.connect(self._on_activated)

        bridge.instanceChanged.connect(self._on_instance)
        bridge.selectionChanged.connect(self._on_selection)
        bridge.vramChanged.connect(self._on_vram)
        bridge.commandFailed.connect(self._on_command_failed)
        bridge.configChanged.connect(self._on_config)
        bridge.engineChanged.connect(lambda _problem: self.refresh())
        self.refresh()
        self.rebuild_menu()

    # ---- public --------------------------------------------------------------------------------

    @property
    def tray(self) -> QSystemTrayIcon:
        return self._tray

    @property
    def menu(self) -> QMenu:
        return self._menu

    def show(self) -> None:
        self._tray.show()

    def hide(self) -> None:
        self._tray.hide()

    def is_visible(self) -> bool:
        return self._tray.isVisible()

    def action(self, name: str) -> QAction | None:
        """The menu's action called ``name`` (its objectName, e.g. ``start:<key>``) right now."""
        return self._actions.get(name)

    def notify(self, title: str, message: str, *, warning: bool = False) -> None:
        """Show a message from the tray (what the app itself has to say, e.g. a config problem)."""
        self._notify(title, message, warning=warning)

    def refresh(self) -> None:
        """Redraw the icon and tooltip from the live state (e.g. after the proxy URL changed)."""
        self._show_state(self._selected_instance())

    def loading_others(self) -> list[Instance]:
        """The models other than the selected one that are loading or waking, in config order."""
        selected = self._bridge.selected()
        return [
            i
            for i in self._bridge.instances()
            if i.key != selected and i.state is InstanceState.STARTING
        ]

    def rebuild_menu(self) -> None:
        """Fill the menu from the live snapshots (connected to the menu's ``aboutToShow``)."""
        self._menu.clear()
        for old in (*self._submenus, *self._groups):
            old.deleteLater()
        self._submenus.clear()
        self._groups.clear()
        self._actions.clear()
        bridge = self._bridge
        instances = bridge.instances()

        if bridge.engine_problem is not None:
            waiting = self._add(self._menu, "engine-waiting", "Waiting for the Docker engine…")
            waiting.setToolTip(bridge.engine_problem)
            waiting.setEnabled(False)
        url = bridge.proxy_url
        if url:
            copy = self._add(self._menu, "copy-proxy-url", f"Copy proxy URL: {url}")
            copy.setEnabled(self._clipboard is not None)
            copy.triggered.connect(partial(self._copy, url))
        else:
            self._add(self._menu, "proxy-off", "Proxy not running").setEnabled(False)
        self._menu.addSeparator()

        selected = bridge.selected()
        heads = self._group()
        choices = self._group()
        for inst in instances:
            self._add_model(inst, inst.key == selected, heads, choices)
        self._menu.addSeparator()

        stop_all = self._add(self._menu, "stop-all", "Stop all")
        stop_all.setEnabled(any(i.running for i in instances if not i.external))
        stop_all.triggered.connect(lambda: bridge.spawn(bridge.stop_all()))
        manager = self._add(self._menu, "open-manager", "Open model manager")
        manager.triggered.connect(self.openManagerRequested.emit)
        settings = self._add(self._menu, "settings", "Settings…")
        settings.triggered.connect(self.settingsRequested.emit)
        self._menu.addSeparator()
        quit_ = self._add(self._menu, "quit", "Quit")
        quit_.setToolTip("Models keep running")
        quit_.triggered.connect(lambda: self.quitRequested.emit(False))
        stop_quit = self._add(self._menu, "stop-all-quit", "Stop all and quit")
        stop_quit.triggered.connect(lambda: self.quitRequested.emit(True))

    # ---- menu ----------------------------------------------------------------------------------

    def _add_model(
        self, inst: Instance, selected: bool, heads: QActionGroup, choices: QActionGroup
    ) -> None:
        """One submenu per model: its title carries the state and the radio check."""
        key = inst.key
        bridge = self._bridge
        # Styles draw a checked action that has an icon as a sunken icon, not as a radio dot:
        # the words say it too.
        host = f" on {inst.host}" if _elsewhere(inst) else ""
        title = f"{inst.name}{host} — {state_text(inst)}" + ("  (selected)" if selected else "")
        sub = QMenu(title, self._menu)
        sub.setObjectName(f"menu:{key}")
        sub.setIcon(self._icon(inst.state, load_percent(inst)))
        self._submenus.append(sub)
        head = sub.menuAction()
        head.setObjectName(f"menu:{key}")
        head.setCheckable(True)
        head.setChecked(selected)
        heads.addAction(head)
        self._actions[head.objectName()] = head
        self._menu.addMenu(sub)

        use = self._add(sub, f"model:{key}", "Use for requests with no model")
        use.setCheckable(True)
        use.setChecked(selected)
        choices.addAction(use)
        use.triggered.connect(partial(self._select, key))
        if inst.external:
            where = self._add(sub, f"url:{key}", inst.url or "")
            where.setEnabled(False)
            return
        sub.addSeparator()
        state = inst.state
        idle = state in (InstanceState.STOPPED, InstanceState.FAILED)
        start = self._add(sub, f"start:{key}", "Start")
        start.setEnabled(idle)
        start.triggered.connect(lambda: bridge.spawn(bridge.start(key)))
        stop = self._add(sub, f"stop:{key}", "Stop")
        stop.setEnabled(
            state is not InstanceState.STOPPING and (inst.running or inst.container_id is not None)
        )
        stop.triggered.connect(lambda: bridge.spawn(bridge.stop(key)))
        restart = self._add(sub, f"restart:{key}", "Restart")
        restart.setEnabled(inst.running or state is InstanceState.FAILED)
        restart.triggered.connect(lambda: bridge.spawn(bridge.restart(key)))
        if bridge.sleep_mode_of(key):
            sleep = self._add(sub, f"sleep:{key}", "Sleep")
            sleep.setToolTip("Free the GPU; the weights wait in host RAM for a quick wake")
            sleep.setEnabled(state is InstanceState.READY)
            sleep.triggered.connect(lambda: bridge.spawn(bridge.sleep(key, 1)))
            wake = self._add(sub, f"wake:{key}", "Wake")
            wake.setEnabled(state is InstanceState.SLEEPING)
            wake.triggered.connect(lambda: bridge.spawn(bridge.wake(key)))
        sub.addSeparator()
        logs = self._add(sub, f"logs:{key}", "Show logs")
        logs.setEnabled(inst.container_id is not None or inst.failure is not None)
        logs.triggered.connect(lambda: self.showLogsRequested.emit(key))

    def _add(self, menu: QMenu, name: str, text: str) -> QAction:
        action = menu.addAction(text)
        action.setObjectName(name)
        self._actions[name] = action
        return action

    def _group(self) -> QActionGroup:
        group = QActionGroup(self._menu)
        group.setExclusive(True)
        self._groups.append(group)
        return group

    def _select(self, key: str, _checked: bool = False) -> None:
        self._bridge.select(key)

    def _copy(self, url: str, _checked: bool = False) -> None:
        if self._clipboard is not None:
            self._clipboard.setText(url)

    def _on_activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        # Linux convention: a left click opens the window; the right click gets the menu.
        if reason is QSystemTrayIcon.ActivationReason.Trigger:
            self.openManagerRequested.emit()

    # ---- icon and tooltip ----------------------------------------------------------------------

    def _selected_instance(self) -> Instance | None:
        key = self._bridge.selected()
        return next((i for i in self._bridge.instances() if i.key == key), None)

    def _icon(self, state: InstanceState | None, percent: int | None) -> QIcon:
        key = (state, percent)
        icon = self._icons.get(key)
        if icon is None:
            icon = self._icons[key] = state_icon(state, percent)
        return icon

    def _show_state(self, inst: Instance | None) -> None:
        key: _IconKey = (None, None) if inst is None else (inst.state, load_percent(inst))
        others = self.loading_others()
        if others and key[0] is not InstanceState.STARTING:
            key = (InstanceState.STARTING, load_percent(others[0]))  # amber: something loads
        if key != self._icon_key:
            self._icon_key = key
            self._tray.setIcon(self._icon(*key))
        tooltip = self._tooltip(inst)
        if tooltip != self._tray.toolTip():
            self._tray.setToolTip(tooltip)

    def _tooltip(self, inst: Instance | None) -> str:
        lines = [APP_NAME]
        if self._bridge.engine_problem is not None:
            lines.append("Waiting for the Docker engine")
        lines.append(f"{inst.name}: {state_text(inst)}" if inst else "No model selected")
        if inst is not None and asleep_level(inst) is not None:
            lines.append(sleep_detail(inst.sleep_level, inst.host_ram_bytes))
        lines += [activity_text(other) for other in self.loading_others()]
        vram = vram_text(self._bridge.vram())
        if vram is not None:
            lines.append(vram)
        url = self._bridge.proxy_url
        lines.append(f"Proxy {url}" if url else "Proxy off")
        return "\n".join(lines)

    # ---- engine events -------------------------------------------------------------------------

    def _on_instance(self, inst: Instance) -> None:
        previous = self._states.get(inst.key)
        self._states[inst.key] = inst.state
        if previous is not None and previous is not inst.state:
            self._notify_transition(previous, inst)
        was_asleep = self._asleep.get(inst.key)
        self._asleep[inst.key] = asleep_level(inst)
        if previous is not None and was_asleep is None and self._asleep[inst.key] is not None:
            self._notify_asleep(inst)
        self.refresh()  # the selected model, or another one loading (a request's cold start)

    def _on_selection(self, _key: str | None) -> None:
        self.refresh()

    def _on_vram(self, _report: VramReport) -> None:
        self.refresh()

    def _on_config(self, _config: object) -> None:
        self.refresh()  # the selected model may have been renamed or removed

    def _on_command_failed(self, key: str, message: str, hint: str) -> None:
        inst = next((i for i in self._bridge.instances() if i.key == key), None)
        if inst is not None and inst.failure is not None and inst.failure.message == message:
            return  # the failed state was announced already, with the same reason and hint
        title = f"{inst.name}: not done" if inst is not None else f"{APP_NAME}: not done"
        self._notify(title, _with_hint(message, hint), warning=True)

    def _notify_transition(self, previous: InstanceState, inst: Instance) -> None:
        state = inst.state
        if state is InstanceState.READY and not inst.external:
            where = f"port {inst.port}" if inst.port is not None else inst.url or ""
            if _elsewhere(inst):
                where += f" (host {inst.host}, through SSH)"
            self._notify(f"{inst.name} is ready", f"Serving {inst.served_name} on {where}")
        elif state is InstanceState.FAILED:
            failure = inst.failure
            reason = failure.message.splitlines()[0] if failure and failure.message else ""
            hint = failure.hint if failure else ""
            self._notify(f"{inst.name} failed", _with_hint(reason, hint), warning=True)
        elif state is InstanceState.STOPPED and "idle" in inst.note:
            self._notify(f"{inst.name} stopped", _sentence(inst.note))
        elif previous is InstanceState.READY and state in (
            InstanceState.UNHEALTHY,
            InstanceState.UNREACHABLE,
        ):
            self._notify(f"{inst.name} is {state.value}", _sentence(inst.note or "no answer"))

    def _notify_asleep(self, inst: Instance) -> None:
        """Tell what the engine put to sleep on its own (idle, or to make room for another)."""
        if "idle" in inst.note or "make room" in inst.note:
            self._notify(f"{inst.name} is asleep", _sentence(inst.note))

    def _notify(self, title: str, message: str, *, warning: bool = False) -> None:
        self.notifications.append(Notification(title, message, warning))
        icon = (
            QSystemTrayIcon.MessageIcon.Warning
            if warning
            else QSystemTrayIcon.MessageIcon.Information
        )
        self._tray.showMessage(title, message, icon, MESSAGE_MS)
        self.notified.emit(title, message)


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else f"{text}."


def _with_hint(message: str, hint: str) -> str:
    return f"{message}\n{hint}" if hint else message
