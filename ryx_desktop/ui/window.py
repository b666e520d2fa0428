"""The model manager window: every model's state, the VRAM gauges, details and the live log.

Commands go down through the bridge as tasks (``start``, ``stop``, ``sleep``, ... return the
task, so a test can await what a toolbar click set off); state comes up through the bridge's
signals. A right click on a row opens the same model actions as a menu, with a level-2 sleep
("drop weights") besides. No modal dialog blocks the loop: questions and dialogs are opened with
``open()``, and engine errors show in a banner at the top of the window.

With several Docker engines (``hosts:``) the table groups the models under a header row per
host, spanning the table, whose light turns red with the reason while that host's engine does
not answer (see ``instances_model``); headers cannot be selected, so every action still
applies to a model's row.
"""

from __future__ import annotations

import asyncio
import html
import time
from collections.abc import Awaitable, Callable
from typing import Any

from PySide6.QtCore import QItemSelectionModel, QPoint, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMainWindow,
    QMenu,
    QSplitter,
    QStyle,
    QTableView,
    QTabWidget,
    QTextBrowser,
    QToolBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ryx_desktop.config import Config
from ryx_desktop.core.routing import resolve_model
from ryx_desktop.core.states import Instance, InstanceState
from ryx_desktop.ui._questions import ask_yes_no
from ryx_desktop.ui.bridge import EngineBridge
from ryx_desktop.ui.gauge import VramPanel
from ryx_desktop.ui.host_groups import host_title
from ryx_desktop.ui.instances_model import (
    Column,
    InstancesTableModel,
    ProgressDelegate,
    progress_text,
)
from ryx_desktop.ui.log_view import Clipboard, LogView
from ryx_desktop.ui.model_dialog import ModelDialog
from ryx_desktop.ui.settings import AutostartEntry, SettingsDialog
from ryx_desktop.ui.state_text import sleep_detail, state_word

TITLE = "Model manager"  # Qt adds " — ryx-desktop" (the application display name)

#: Asks the user a yes/no question (title, text) without blocking the loop.
Confirm = Callable[[str, str], Awaitable[bool]]

#: The toolbar's actions, left to right.
ACTIONS = (
    "start",
    "stop",
    "restart",
    "sleep",
    "wake",
    "select",
    "logs",
    "add",
    "edit",
    "remove",
    "settings",
    "setup",
)
#: The row's right-click menu: the toolbar's model actions and a level-2 sleep (None: a line).
ROW_MENU = (
    "start",
    "stop",
    "restart",
    None,
    "sleep",
    "sleep-deep",
    "wake",
    None,
    "select",
    "logs",
    "edit",
    "remove",
)
_ACTION_TEXT = {
    "start": "Start",
    "stop": "Stop",
    "restart": "Restart",
    "sleep": "Sleep",
    "sleep-deep": "Sleep (drop weights)",
    "wake": "Wake",
    "select": "Select",
    "logs": "Logs",
    "add": "Add",
    "edit": "Edit",
    "remove": "Remove",
    "settings": "Settings",
    "setup": "Setup",
}
_ACTION_TIPS = {
    "start": "Start the model and wait until it is ready",
    "stop": "Stop the model and remove its container",
    "restart": "Stop the model, then start it with the current config",
    "sleep": "Free the GPU: vLLM keeps the weights in host RAM and wakes in about a second",
    "sleep-deep": "Free the GPU and host RAM: a wake reloads the weights from disk",
    "wake": "Wake the sleeping model and wait until it answers",
    "select": "Make this the model that answers requests naming no model",
    "logs": "Show the live log of the model's container",
    "add": "Add a model to the config",
    "edit": "Edit the model's settings",
    "remove": "Remove the model from the config (stopping it first)",
    "settings": "Proxy, Docker and GPU settings",
    "setup": "What ryx-desktop needs (Docker, GPUs, the image), and find the models on disk",
}
#: The sleep actions' tip on a model that cannot sleep.
NO_SLEEP_TIP = (
    "This model does not run with vLLM's sleep mode: set `sleep_mode: true` for it "
    "(its next start turns it on)"
)
_SLEEP_ACTIONS = ("sleep", "sleep-deep")
_STARTABLE = frozenset({InstanceState.STOPPED, InstanceState.FAILED})
_RESTARTABLE = frozenset(
    {InstanceState.READY, InstanceState.UNHEALTHY, InstanceState.SLEEPING, InstanceState.FAILED}
)


_COLUMN_WIDTHS = {
    Column.STATE: 170,
    Column.NAME: 170,
    Column.CATEGORY: 80,
    Column.SIZE: 80,
    Column.PORT: 70,
    Column.BUDGET: 90,
    Column.VRAM: 90,
    Column.REQUESTS: 150,
    Column.UPTIME: 80,
}


def action_states(
    inst: Instance | None, selected: str | None, can_sleep: bool = False
) -> dict[str, bool]:
    """Which actions apply to ``inst`` (the table's current row, None: no row).

    ``can_sleep``: the model runs with vLLM's sleep mode (Sleep applies once it is ready).
    """
    row = inst is not None
    managed = inst is not None and not inst.external
    state = inst.state if inst is not None else None
    stoppable = inst is not None and (
        inst.running or (state is InstanceState.FAILED and inst.container_id is not None)
    )
    return {
        "start": managed and state in _STARTABLE,
        "stop": managed and stoppable,
        "restart": managed and state in _RESTARTABLE,
        "sleep": managed and can_sleep and state is InstanceState.READY,
        "sleep-deep": managed and can_sleep and state is InstanceState.READY,
        "wake": managed and state is InstanceState.SLEEPING,
        "select": row and inst is not None and inst.key != selected,
        "logs": managed,
        "add": True,
        "edit": row,
        "remove": row,
        "settings": True,
        "setup": True,
    }


def requests_per_second(
    before: tuple[float, int | None] | None, after: tuple[float, int | None]
) -> float | None:
    """Requests per second between two (time, requests total) samples; None when unknown.

    A total that went down (the proxy restarted) counts from zero.
    """
    if before is None:
        return None
    (t0, n0), (t1, n1) = before, after
    if n0 is None or n1 is None or t1 <= t0:
        return None
    done = n1 - n0 if n1 >= n0 else n1
    return done / (t1 - t0)


def details_html(inst: Instance | None, selected: str | None, show_host: bool = False) -> str:
    """The details pane for one model, as HTML (every value escaped); ``show_host``: with its
    host (the app drives several Docker engines)."""
    if inst is None:
        return "<p>Select a model in the table.</p>"
    e = html.escape
    rows = [
        ("Name", inst.name),
        ("Key", inst.key),
        ("Served name", inst.served_name),
        ("Aliases", ", ".join(inst.aliases) or "none"),
        ("Port", str(inst.port) if inst.port is not None else "external"),
        ("URL", inst.url or "none"),
        ("State", state_word(inst)),
    ]
    if show_host and inst.host:
        rows.insert(4, ("Host", host_title(inst.host)))
    if inst.state is InstanceState.SLEEPING and inst.sleep_level is not None:
        rows.append(("Asleep", sleep_detail(inst.sleep_level, inst.host_ram_bytes)))
    if inst.key == selected:
        rows.append(("Selected", "yes: answers requests that name no model"))
    if inst.state is InstanceState.STARTING:
        rows.append(("Progress", progress_text(inst.progress)))
        if inst.progress is not None and inst.progress.detail:
            rows.append(("Detail", inst.progress.detail))
    if inst.container_id:
        rows.append(("Container", inst.container_id + (" (adopted)" if inst.adopted else "")))
    if inst.note:
        rows.append(("Note", inst.note))
    if inst.config_changed:
        rows.append(("Config", "runs with an older config: restart to apply the new one"))
    body = "".join(f"<tr><th align='left'>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
    out = f"<h3>{e(inst.name)}</h3><table cellspacing='4'>{body}</table>"
    failure = inst.failure
    if failure is not None:
        out += f"<h4 style='color:#d23c3c'>Failed: {e(failure.message)}</h4>"
        if failure.hint:
            out += f"<p><b>Hint:</b> {e(failure.hint)}</p>"
        if failure.exit_code is not None:
            out += f"<p>Exit code: {failure.exit_code}</p>"
        if failure.log_tail:
            out += "<p>Last log lines:</p><pre>" + e("\n".join(failure.log_tail)) + "</pre>"
    return out


def config_without(config: Config, key: str, selected: str | None) -> Config:
    """``config`` with model ``key`` removed; a default that named it moves to another model.

    The new default is the selected model when that is another one, else the first remaining
    model, else none.
    """
    models = {k: m for k, m in config.models.items() if k != key}
    default = config.default_model
    if default is not None and resolve_model(config, default) == key:
        if selected is not None and selected != key and selected in models:
            default = selected
        else:
            default = next(iter(models), None)
    return config.model_copy(update={"models": models, "default_model": default})


class ManagerWindow(QMainWindow):
    """The model manager. Closing it hides it while ``hide_on_close`` (the tray keeps running)."""

    closed = Signal()
    #: The page brought forward (``models``, ``chat``, ``setup``).
    pageShown = Signal(str)

    def __init__(
        self,
        bridge: EngineBridge,
        *,
        clipboard: Clipboard | None = None,
        confirm: Confirm | None = None,
        clock: Callable[[], float] | None = None,
        autostart: AutostartEntry | None = None,
        chat_page: QWidget | None = None,
        setup_page: QWidget | None = None,
        parent: QWidget | None = None,
    ) -> None:
        """``chat_page`` and ``setup_page`` become the window's Chat and Setup pages (beside
        Models) when given."""
        super().__init__(parent)
        self._bridge = bridge
        self._confirm: Confirm = confirm if confirm is not None else self._ask
        self._clock = clock if clock is not None else time.monotonic
        self._autostart = autostart
        self._rate_sample: tuple[float, int | None] | None = None
        self._dialogs: list[QDialog] = []
        self._kept_key: str | None = None  # the current row's key across a model reset
        self._details_source = ""
        self._shown_once = False
        self.hide_on_close = True
        self.setWindowTitle(TITLE)
        self.resize(1100, 760)

        self.model = InstancesTableModel(bridge, self._clock, self)
        self.table = self._build_table()
        self.details = QTextBrowser(self)
        self.details.setObjectName("details")
        self.details.setOpenExternalLinks(False)
        self.vram_panel = VramPanel(bridge, self)
        self.log_view = LogView(bridge, clipboard=clipboard, parent=self)
        self.tabs = QTabWidget(self)
        self.tabs.addTab(self.details, "Details")
        self.tabs.addTab(self.log_view, "Log")

        self._notice = QLabel(self)
        self._notice.setObjectName("notice")
        self._notice.setWordWrap(True)
        self._notice.setTextFormat(Qt.TextFormat.PlainText)
        self._banner = self._build_banner()

        splitter = QSplitter(Qt.Orientation.Vertical, self)
        splitter.addWidget(self.table)
        splitter.addWidget(self.vram_panel)
        splitter.addWidget(self.tabs)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 0)
        splitter.setStretchFactor(2, 3)
        # The pages: the models (table, gauge, details and log), and the chat and setup pages.
        self.pages = QTabWidget(self)
        self.pages.setObjectName("pages")
        self.pages.setDocumentMode(True)
        self._page_index: dict[str, int] = {"models": self.pages.addTab(splitter, "Models")}
        if chat_page is not None:
            self._page_index["chat"] = self.pages.addTab(chat_page, "Chat")
        if setup_page is not None:
            self._page_index["setup"] = self.pages.addTab(setup_page, "Setup")
        self.pages.currentChanged.connect(lambda _index: self.pageShown.emit(self.current_page()))
        central = QWidget(self)
        layout = QVBoxLayout(central)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self._banner)
        layout.addWidget(self.pages, 1)
        self.setCentralWidget(central)

        self._actions = self._build_toolbar()
        self.row_menu = self._build_row_menu()
        self._proxy_label = QLabel(self)
        self._proxy_label.setObjectName("proxy-status")
        self._proxy_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._rate_label = QLabel("N/A req/s", self)
        self._rate_label.setObjectName("request-rate")
        self._engine_label = QLabel(self)
        self._engine_label.setObjectName("engine-status")
        self._engine_label.setStyleSheet("color: #c0392b;")
        self.statusBar().addPermanentWidget(self._engine_label)
        self.statusBar().addPermanentWidget(self._proxy_label)
        self.statusBar().addPermanentWidget(self._rate_label)
        self.set_proxy_status(bridge.proxy_url)
        self._engine_notice = False
        # What the banner says: the latest notice, and beneath it a config file problem while
        # there is one (each as text, hint).
        self._main_notice: tuple[str, str] | None = None
        self._config_problem: tuple[str, str] | None = None
        bridge.engineChanged.connect(self.set_engine_problem)
        self.set_engine_problem(bridge.engine_problem)

        self._ticker = QTimer(self)
        self._ticker.setInterval(1000)
        self._ticker.timeout.connect(self._tick)
        self._ticker.start()

        bridge.instanceChanged.connect(self._on_instance)
        bridge.selectionChanged.connect(self._on_selection)
        bridge.commandFailed.connect(self._on_command_failed)
        self.model.modelAboutToBeReset.connect(self._remember_row)
        self.model.modelReset.connect(self._span_headers)
        self.model.modelReset.connect(self._restore_row)
        self.table.selectionModel().currentRowChanged.connect(self._on_current_row)
        self._span_headers()
        first = bridge.selected() or self.model.first_key()
        if first is not None:
            self.select_model(first)
        self._refresh()

    # ---- building ----------------------------------------------------------------------------

    def _build_table(self) -> QTableView:
        table = QTableView(self)
        table.setObjectName("instances")
        table.setModel(self.model)
        table.setItemDelegateForColumn(Column.STATE, ProgressDelegate(table))
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.verticalHeader().setVisible(False)
        table.setAlternatingRowColors(True)
        table.setWordWrap(False)
        header = table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(Column.SERVED, QHeaderView.ResizeMode.Stretch)
        for column, width in _COLUMN_WIDTHS.items():
            table.setColumnWidth(column, width)
        table.doubleClicked.connect(lambda _index: self.show_logs(self.current_key()))
        table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        table.customContextMenuRequested.connect(self._open_row_menu)
        return table

    def _build_banner(self) -> QFrame:
        banner = QFrame(self)
        banner.setObjectName("banner")
        banner.setFrameShape(QFrame.Shape.StyledPanel)
        banner.setStyleSheet("QFrame#banner { background: #fff4d6; border: 1px solid #f0a020; }")
        dismiss = QToolButton(banner)
        dismiss.setObjectName("dismiss-notice")
        dismiss.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_TitleBarCloseButton))
        dismiss.setAutoRaise(True)
        dismiss.setToolTip("Dismiss")
        dismiss.clicked.connect(self._dismiss_notice)
        row = QHBoxLayout(banner)
        row.setContentsMargins(8, 4, 4, 4)
        row.addWidget(self._notice, 1)
        row.addWidget(dismiss)
        banner.hide()
        return banner

    def _build_toolbar(self) -> dict[str, QAction]:
        toolbar = QToolBar("Models", self)
        toolbar.setObjectName("toolbar")
        toolbar.setMovable(False)
        self.addToolBar(toolbar)
        handlers: dict[str, Callable[[], object]] = {
            "start": self.start,
            "stop": self.stop,
            "restart": self.restart,
            "sleep": self.sleep,
            "sleep-deep": lambda: self.sleep(level=2),
            "wake": self.wake,
            "select": self.select,
            "logs": lambda: self.show_logs(self.current_key()),
            "add": lambda: self.open_model_dialog(None),
            "edit": lambda: self.open_model_dialog(self.current_key()),
            "remove": self.remove,
            "settings": self.open_settings,
            "setup": lambda: self.show_page("setup"),
        }
        actions: dict[str, QAction] = {}
        for name, handler in handlers.items():
            action = QAction(_ACTION_TEXT[name], self)
            action.setObjectName(name)
            action.setToolTip(_ACTION_TIPS[name])
            action.triggered.connect(lambda _checked=False, handler=handler: handler())
            actions[name] = action
        for name in ACTIONS:
            if name == "setup" and "setup" not in self._page_index:
                continue
            toolbar.addAction(actions[name])
            if name in ("restart", "wake", "logs"):
                toolbar.addSeparator()
        return actions

    def _build_row_menu(self) -> QMenu:
        """The right-click menu of a row; it shares the toolbar's actions (and their states)."""
        menu = QMenu(self)
        menu.setObjectName("row-menu")
        menu.setToolTipsVisible(True)
        for name in ROW_MENU:
            if name is None:
                menu.addSeparator()
            else:
                menu.addAction(self._actions[name])
        return menu

    # ---- lookups -------------------------------------------------------------------------------

    def action(self, name: str) -> QAction:
        """The action called ``name`` (see ``ACTIONS`` and ``ROW_MENU``)."""
        return self._actions[name]

    def show_page(self, name: str) -> None:
        """Bring the page ``name`` forward: ``models``, and ``chat`` or ``setup`` when given."""
        self.pages.setCurrentIndex(self._page_index[name])

    def current_page(self) -> str:
        """The name of the page in front."""
        index = self.pages.currentIndex()
        return next(name for name, i in self._page_index.items() if i == index)

    def current_key(self) -> str | None:
        """The key of the table's selected row (None: no row)."""
        index = self.table.selectionModel().currentIndex()
        return self.model.key_at(index.row()) if index.isValid() else None

    def notice_text(self) -> str:
        """The banner's text ("" while hidden)."""
        return self._notice.text() if not self._banner.isHidden() else ""

    def proxy_status_text(self) -> str:
        return self._proxy_label.text()

    def request_rate_text(self) -> str:
        return self._rate_label.text()

    # ---- what the app and the tray call ------------------------------------------------------

    def select_model(self, key: str) -> None:
        """Select model ``key``'s row in the table (not the model requests go to)."""
        row = self.model.row_of(key)
        if row is None:
            return
        flags = (
            QItemSelectionModel.SelectionFlag.ClearAndSelect
            | QItemSelectionModel.SelectionFlag.Rows
        )
        self.table.selectionModel().setCurrentIndex(self.model.index(row, 0), flags)
        self._scroll_to(row)

    def _scroll_to(self, row: int) -> None:
        """Bring ``row`` into view, with its host's header right above it when that fits."""
        if row > 0 and self.model.key_at(row - 1) is None:
            self.table.scrollTo(self.model.index(row - 1, 0))
        self.table.scrollTo(self.model.index(row, 0))

    def show_logs(self, key: str | None) -> None:
        """Select ``key``'s row and bring its live log to the front."""
        if key is None:
            return
        self.select_model(key)
        self.tabs.setCurrentWidget(self.log_view)
        self.log_view.follow(key)
        self.log_view.text_edit.setFocus()

    def show_notice(self, text: str, hint: str = "") -> None:
        """Show ``text`` (and ``hint``) in the banner at the top until dismissed.

        A config file problem stays beneath it while there is one.
        """
        self._main_notice = (text, hint)
        self._show_notices()

    def hide_notice(self) -> None:
        """Hide the latest notice (a config file problem stays while there is one)."""
        self._main_notice = None
        self._show_notices()

    def _dismiss_notice(self) -> None:
        """The banner's close button: the notices shown now are not shown again."""
        self._main_notice = None
        self._banner.hide()

    def _show_notices(self) -> None:
        shown = [
            f"{text}\n{hint}" if hint else text
            for text, hint in filter(None, (self._main_notice, self._config_problem))
        ]
        if not shown:
            self._banner.hide()
            return
        self._notice.setText("\n".join(shown))
        self._banner.show()

    def set_engine_problem(self, problem: str | None) -> None:
        """Say that the Docker engine does not answer (and why), or that it does again."""
        if problem is None:
            self._engine_label.setText("")
            self._engine_label.hide()
            if self._engine_notice:
                self._engine_notice = False
                self.hide_notice()
            return
        self._engine_label.setText("Docker engine unreachable")
        self._engine_label.setToolTip(problem)
        self._engine_label.show()
        self._engine_notice = True
        self.show_notice(
            f"Waiting for the Docker engine: {problem}",
            "ryx-desktop keeps trying and takes over the running models once it answers.",
        )

    def set_config_problem(self, problem: str | None, hint: str = "") -> None:
        """Say why the config file's latest content is not in effect, or that it is (None).

        The problem stays in the banner, beneath any later notice, until it is over.
        """
        if problem is None and self._config_problem is None:
            return
        self._config_problem = (problem, hint) if problem is not None else None
        self._show_notices()

    def set_proxy_status(self, url: str | None, note: str = "") -> None:
        """Show where the proxy listens, or why it is off."""
        if url is not None:
            self._proxy_label.setText(f"Proxy: {url}")
        else:
            self._proxy_label.setText(f"Proxy off: {note}" if note else "Proxy off")

    def sample_requests(self) -> float | None:
        """Take a sample of the proxy's request count and show the rate since the last one."""
        sample = (self._clock(), self._bridge.requests_total())
        rate = requests_per_second(self._rate_sample, sample)
        self._rate_sample = sample
        if sample[1] is None:
            self._rate_label.setText("N/A req/s")
        elif rate is not None:
            self._rate_label.setText(f"{rate:.1f} req/s")
        return rate

    # ---- commands (each returns its task) -----------------------------------------------------

    def start(self, key: str | None = None) -> asyncio.Task[Any] | None:
        key = key or self.current_key()
        return self._bridge.spawn(self._bridge.start(key)) if key else None

    def stop(self, key: str | None = None) -> asyncio.Task[Any] | None:
        key = key or self.current_key()
        return self._bridge.spawn(self._bridge.stop(key)) if key else None

    def restart(self, key: str | None = None) -> asyncio.Task[Any] | None:
        key = key or self.current_key()
        return self._bridge.spawn(self._bridge.restart(key)) if key else None

    def sleep(self, key: str | None = None, level: int = 1) -> asyncio.Task[Any] | None:
        """Put the model to sleep: level 1 keeps its weights in host RAM, level 2 drops them."""
        key = key or self.current_key()
        return self._bridge.spawn(self._bridge.sleep(key, level)) if key else None

    def wake(self, key: str | None = None) -> asyncio.Task[Any] | None:
        key = key or self.current_key()
        return self._bridge.spawn(self._bridge.wake(key)) if key else None

    def select(self, key: str | None = None) -> None:
        key = key or self.current_key()
        if key:
            self._bridge.select(key)

    def remove(self, key: str | None = None) -> asyncio.Task[Any] | None:
        """Ask, stop the model if it runs, then save the config without it."""
        key = key or self.current_key()
        return self._bridge.spawn(self._remove(key)) if key else None

    async def _remove(self, key: str) -> bool:
        inst = self._instance(key)
        if inst is None:
            return False
        question = f"Remove {inst.name} ({key}) from the config?"
        if inst.running:
            question += " It is running and will be stopped first."
        if not await self._confirm("Remove model", question):
            return False
        if inst.running or inst.state is InstanceState.STOPPING:
            stopped = await self._bridge.stop(key)
            if stopped is None:
                return False  # the bridge reported why
        new = config_without(self.model.config, key, self._bridge.selected())
        return await self._bridge.apply_config(new)

    def open_model_dialog(self, key: str | None) -> QDialog:
        """Open the add (``key`` None) or edit dialog; it applies the change itself."""
        return self._open_dialog(ModelDialog(self._bridge, key, self))

    def open_settings(self) -> QDialog:
        return self._open_dialog(SettingsDialog(self._bridge, self._autostart, self))

    def _open_dialog(self, dialog: QDialog) -> QDialog:
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self._dialogs.append(dialog)
        dialog.finished.connect(lambda _result: self._dialogs.remove(dialog))
        dialog.open()
        return dialog

    async def _ask(self, title: str, text: str) -> bool:
        return await ask_yes_no(self, title, text, default_yes=False)

    # ---- reacting to the engine --------------------------------------------------------------

    def _on_instance(self, inst: Instance) -> None:
        if inst.key == self.current_key():
            self._refresh()

    def _on_selection(self, _key: str | None) -> None:
        self._refresh()

    def _on_command_failed(self, key: str, message: str, hint: str) -> None:
        self.show_notice(f"{key}: {message}" if key and key not in message else message, hint)
        self.statusBar().showMessage(message, 10_000)

    def _open_row_menu(self, pos: QPoint) -> None:
        index = self.table.indexAt(pos)
        key = self.model.key_at(index.row()) if index.isValid() else None
        if key is None:
            return
        self.select_model(key)
        self._refresh()
        self.row_menu.popup(self.table.viewport().mapToGlobal(pos))

    def _on_current_row(self) -> None:
        key = self.current_key()
        self._refresh()
        if key is not None:
            self.log_view.follow(key)

    def _remember_row(self) -> None:
        self._kept_key = self.current_key()

    def _restore_row(self) -> None:
        kept = self._kept_key
        key = kept if kept is not None and self.model.row_of(kept) is not None else None
        key = key or self.model.first_key()
        if key is not None:
            self.select_model(key)
        else:
            self.log_view.follow(None)
        self._refresh()

    def _span_headers(self) -> None:
        """Each host's header row is one cell across the table."""
        self.table.clearSpans()
        for row in self.model.header_rows():
            self.table.setSpan(row, 0, 1, len(Column))

    def _refresh(self) -> None:
        key = self.current_key()
        inst = self._instance(key)
        selected = self._bridge.selected()
        can_sleep = key is not None and self._bridge.sleep_mode_of(key)
        for name, enabled in action_states(inst, selected, can_sleep).items():
            self._actions[name].setEnabled(enabled)
        managed = inst is not None and not inst.external
        for name in _SLEEP_ACTIONS:
            tip = NO_SLEEP_TIP if managed and not can_sleep else _ACTION_TIPS[name]
            self._actions[name].setToolTip(tip)
        text = details_html(inst, selected, show_host=self.model.grouped)
        if text != self._details_source:  # setHtml resets the reader's scroll position
            self._details_source = text
            self.details.setHtml(text)

    def _instance(self, key: str | None) -> Instance | None:
        if key is None:
            return None
        row = self.model.row_of(key)
        return self.model.instance_at(row) if row is not None else None

    def _tick(self) -> None:
        self.model.refresh_uptime()
        self.sample_requests()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if not self._shown_once:  # the table has its real height only now
            self._shown_once = True
            index = self.table.selectionModel().currentIndex()
            if index.isValid():
                self._scroll_to(index.row())

    def closeEvent(self, event: QCloseEvent) -> None:
        self.closed.emit()
        if self.hide_on_close:
            event.ignore()
            self.hide()
            return
        self._ticker.stop()
        self.log_view.stop()
        event.accept()
