"""Adding or editing one model: its settings, checked as the config file is, errors by the field.

Managed models (a vLLM container ryx-desktop runs) and remote ones (an OpenAI-compatible server
that already runs at a URL) share the naming fields; a type choice switches between the rest.
Saving writes the whole config atomically through the bridge and applies it to the running
engine; when the edited model runs with a container spec that now differs, the user is offered
a restart. The other models come from the config as it is when Save is pressed; a hand edit of
the edited model made meanwhile fills the fields again instead of being undone. A model path in
the models folder (``/models/...``) that is not there is said at once, under the field, and a
Save refuses it; Browse… picks the folder and fills in its ``/models/...`` path.
"""

from __future__ import annotations

import inspect
import os
import re
import shlex
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ryx_desktop.config import Config, ExternalModelConfig, ModelConfig
from ryx_desktop.core.spec import ANY_HOST, LOCAL_HOST
from ryx_desktop.ui._form import (
    ConfigDialog,
    FieldErrors,
    apply_config,
    check_config,
    config_data,
    number_or_text,
    place,
    put,
    shown,
)
from ryx_desktop.ui._model_path import (
    Exists,
    PickFolder,
    chosen_model_path,
    model_path_problem,
    outside_message,
)
from ryx_desktop.ui._questions import ask_folder, ask_yes_no
from ryx_desktop.ui.bridge import EngineBridge

#: Asked with the keys of running models whose spec changed; True restarts them. It may also
#: return an awaitable of the answer (the default asks with a non-blocking message box).
AskRestart = Callable[[list[str]], bool | Awaitable[bool]]

MANAGED, REMOTE = 0, 1
_FIRST_PORT = 8001


class ModelDialog(ConfigDialog):
    """Add (``key`` None) or edit the model ``key``; saving applies it to the running engine."""

    def __init__(
        self,
        bridge: EngineBridge,
        key: str | None,
        parent: QWidget | None = None,
        *,
        ask_restart: AskRestart | None = None,
        pick_folder: PickFolder | None = None,
        path_exists: Exists = os.path.exists,
    ) -> None:
        super().__init__(bridge, parent)
        self._key = key
        self._ask_restart: AskRestart = ask_restart or self._question
        self._pick_folder: PickFolder = pick_folder or self._ask_folder
        self._exists = path_exists
        self.setWindowTitle(f"Edit model {key}" if key else "Add a model")
        self.errors = FieldErrors(QLabel())
        self.fields: dict[str, QLineEdit] = {}

        self.kind = QComboBox()
        self.kind.addItem("Managed: a vLLM container that ryx-desktop runs")
        self.kind.addItem("Remote: a server that already runs at a URL")
        self.kind.setEnabled(key is None)
        form = self._form = QFormLayout()
        form.addRow("Type", self.kind)
        self._line("key", "Key", "e.g. small-coder (the container is ryx-vllm-<key>)")
        self.fields["key"].setReadOnly(key is not None)
        self._line("name", "Name", "shown in the tray and the window; default: the key")
        self._line("served_name", "Served name", "what clients send as model")
        self._line("aliases", "Aliases", "other names, comma separated")
        self._line("category", "Category", "general, coding, ...")
        self._line("size", "Size", "small, medium, powerful, ...")
        self._rows: tuple[list[QWidget], list[QWidget]] = ([], [])  # managed, remote only
        managed, remote = self._rows
        self.host = QComboBox()
        self.host.setObjectName("host")
        for host in bridge.hosts():
            self.host.addItem(_host_item(host), host)
        self.host.addItem("any: the host with room, when it starts", ANY_HOST)
        self.host.currentIndexChanged.connect(self._check_model_path)
        self._host_row = self._row("host", "Host", self.host)
        managed.append(self._host_row)
        managed.append(self._model_row())
        managed.append(self._line("port", "Port", "host port on 127.0.0.1"))
        managed.append(self._line("image", "Image", "default: the Docker settings' image"))
        managed.append(self._line("gpu_memory_utilization", "GPU memory share", "0 to 1: 0.3"))
        managed.append(self._line("max_model_len", "Max model length", "empty: vLLM's default"))
        managed.append(self._line("devices", "GPUs", "all, none, or indexes like 0, 1"))
        managed.append(self._line("extra_args", "Extra vLLM args", "e.g. --trust-remote-code"))
        self.env = QPlainTextEdit()
        self.env.setPlaceholderText("NAME=VALUE, one per line")
        self.env.setFixedHeight(64)
        managed.append(self._row("env", "Environment", self.env))
        self.sleep_mode = QCheckBox("Sleep instead of stopping (vLLM sleep mode)")
        managed.append(self._row("sleep_mode", "", self.sleep_mode))
        managed.append(self._line("idle_ttl", "Idle timeout (s)", "empty: the general setting"))
        remote.append(self._line("url", "URL", "http://host:port of an OpenAI-compatible server"))
        self.kind.currentIndexChanged.connect(self._show_rows)
        self.kind.currentIndexChanged.connect(self._check_model_path)
        self._show_rows(MANAGED)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.errors.general)
        layout.addWidget(self.buttons)
        self._fill(bridge.config)

    # ---- saving -----------------------------------------------------------------------------

    async def _submit(self) -> bool:
        config = self._bridge.config
        key = self._key if self._key is not None else self.fields["key"].text().strip()
        entry, problems = self._entry()
        if self._key is not None and key not in config.models:
            self.errors.show([(None, f"{key} is no longer in the config (removed meanwhile).")])
            return False
        if self._key is None and key in config.models:
            problems.append(("key", f"there is already a model called {key!r}"))
        missing = self._model_path_problem()
        if missing is not None and self._model_path_changed():
            problems.append(("model", missing))
        # Validated with the model last, so a clash with another model is blamed on this one.
        others = {k: m for k, m in config.models.items() if k != key}
        checked = check_config({**config_data(config), "models": {**others, key: entry}})
        problems += place(checked.problems, self.errors.fields, ("models", key), whole="key")
        if problems:
            self.errors.show(problems)
            return False
        self.errors.show([])
        new = self._with_model(config, key, entry)
        failure = await apply_config(self._bridge, new)
        if failure is not None:
            self.errors.show([(None, failure)])
            return False
        inst = self._bridge.instance(key)
        if inst.running and inst.config_changed and await self._offer_restart([key]):
            self._bridge.spawn(self._bridge.restart(key))
        self.accept()
        return True

    def _with_model(self, config: Config, key: str, entry: dict[str, Any]) -> Config:
        """``config`` with ``key`` set to ``entry``, in its place (a new model goes last)."""
        models: dict[str, Any] = dict(config.models)
        models[key] = entry
        checked = check_config({**config_data(config), "models": models})
        assert checked.config is not None, checked.problems  # valid in another order: valid
        return checked.config

    async def _offer_restart(self, keys: list[str]) -> bool:
        answer = self._ask_restart(keys)
        return await answer if inspect.isawaitable(answer) else answer

    async def _question(self, keys: list[str]) -> bool:
        names = ", ".join(self._bridge.instance(k).name for k in keys)
        return await ask_yes_no(
            self,
            "Restart to apply?",
            f"{names} is running with its old settings. Restart it now to apply the change?",
            default_yes=True,
        )

    # ---- the model path ---------------------------------------------------------------------

    def _model_row(self) -> QWidget:
        """The model path's field with its Browse… button."""
        edit = QLineEdit()
        edit.setObjectName("model")
        edit.setPlaceholderText("/models/... or a Hugging Face name")
        edit.textChanged.connect(self._check_model_path)
        self.fields["model"] = edit
        self.browse = QPushButton("Browse…")
        self.browse.setObjectName("browse-model")
        self.browse.setToolTip("Choose the model's folder in the models folder")
        self.browse.clicked.connect(self._on_browse)
        box = QWidget()
        row = QHBoxLayout(box)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(edit)
        row.addWidget(self.browse)
        return self._row("model", "Model path", box)

    def _on_browse(self) -> None:
        self._bridge.spawn(self.browse_model())

    async def browse_model(self) -> bool:
        """Ask for the model's folder and fill in its ``/models/...`` path; True when filled."""
        models_dir = self._bridge.config.docker.models_dir
        start = models_dir if self._exists(str(models_dir)) else Path.home()
        chosen = await self._pick_folder(start)
        if chosen is None:
            return False
        path = chosen_model_path(chosen, models_dir)
        if path is None:
            self.errors.show_field("model", outside_message(chosen, models_dir))
            return False
        self.fields["model"].setText(path)  # checked again as it changes
        return True

    def _check_model_path(self, *_: object) -> None:
        """Say under the field, as it is typed, when the path is not in the models folder."""
        self.errors.show_field("model", self._model_path_problem() or "")

    def _model_path_problem(self) -> str | None:
        if self.kind.currentIndex() != MANAGED:
            return None
        text = self.fields["model"].text().strip()
        if not text or self.host.currentData() != LOCAL_HOST:
            return None  # on another host (or any): its folder is not on this machine
        return model_path_problem(text, self._bridge.config.docker, self._exists)

    def _model_path_changed(self) -> bool:
        """Whether the path is another than the edited model's (every path of a new model is)."""
        existing = self._bridge.config.models.get(self._key) if self._key is not None else None
        text = self.fields["model"].text().strip()
        return not isinstance(existing, ModelConfig) or existing.model != text

    async def _ask_folder(self, start: Path) -> Path | None:
        return await ask_folder(self, "Choose the model's folder", start)

    # ---- fields <-> config data -------------------------------------------------------------

    def _entry(self) -> tuple[dict[str, Any], list[tuple[str | None, str]]]:
        """The model's settings as config data, and the fields that could not even be read."""
        text = {field: edit.text().strip() for field, edit in self.fields.items()}
        managed = self.kind.currentIndex() == MANAGED
        existing = self._bridge.config.models.get(self._key) if self._key is not None else None
        kept = existing is not None and isinstance(existing, ModelConfig) == managed
        # Start from the model as it is, so settings without a field here (start_timeout) stay.
        entry: dict[str, Any] = existing.model_dump() if existing is not None and kept else {}
        unreadable: list[tuple[str | None, str]] = []
        entry["name"] = text["name"] or None
        entry["served_name"] = text["served_name"] or None
        entry["aliases"] = [a.strip() for a in text["aliases"].split(",") if a.strip()]
        put(entry, "category", text["category"])
        put(entry, "size", text["size"])
        if not managed:
            put(entry, "url", text["url"])
            return entry, unreadable
        put(entry, "model", text["model"])
        entry["host"] = self.host.currentData()
        put(entry, "port", number_or_text(text["port"]))
        entry["image"] = text["image"] or None
        put(entry, "gpu_memory_utilization", number_or_text(text["gpu_memory_utilization"]))
        entry["max_model_len"] = number_or_text(text["max_model_len"])
        put(entry, "devices", _devices(text["devices"]))
        try:
            entry["extra_args"] = shlex.split(text["extra_args"])
        except ValueError as exc:
            unreadable.append(("extra_args", f"cannot split the arguments: {exc}"))
            entry.pop("extra_args", None)
        env, bad_lines = _env(self.env.toPlainText())
        entry["env"] = env
        unreadable += [("env", line) for line in bad_lines]
        entry["sleep_mode"] = self.sleep_mode.isChecked()
        entry["idle_ttl"] = number_or_text(text["idle_ttl"])
        return entry, unreadable

    def _changed(self, before: Config, after: Config) -> bool:
        """Whether the edited model differs (a model removed meanwhile is said so on Save)."""
        key = self._key
        return (
            key is not None and key in after.models and before.models.get(key) != after.models[key]
        )

    def _fill(self, config: Config) -> None:
        model = config.models.get(self._key) if self._key is not None else None
        if model is None:
            self.fields["port"].setText(str(_free_port(config)))
            return
        self.kind.setCurrentIndex(REMOTE if isinstance(model, ExternalModelConfig) else MANAGED)
        self.fields["key"].setText(self._key or "")
        self.fields["name"].setText(model.name or "")
        self.fields["served_name"].setText(model.served_name or "")
        self.fields["aliases"].setText(", ".join(model.aliases))
        self.fields["category"].setText(model.category)
        self.fields["size"].setText(model.size)
        if isinstance(model, ExternalModelConfig):
            self.fields["url"].setText(model.url)
            return
        found = self.host.findData(model.host)
        if found < 0:  # a host no longer under hosts: (the config check says so on Save)
            self.host.addItem(model.host, model.host)
            found = self.host.count() - 1
        self.host.setCurrentIndex(found)
        self._show_rows(MANAGED)
        for field in ("model", "port", "image", "gpu_memory_utilization", "max_model_len"):
            self.fields[field].setText(shown(getattr(model, field)))
        self.fields["idle_ttl"].setText(shown(model.idle_ttl))
        devices = model.devices
        self.fields["devices"].setText(
            devices if isinstance(devices, str) else ", ".join(map(str, devices))
        )
        self.fields["extra_args"].setText(shlex.join(model.extra_args))
        self.env.setPlainText("\n".join(f"{k}={v}" for k, v in model.env.items()))
        self.sleep_mode.setChecked(model.sleep_mode)

    def _show_rows(self, kind: int) -> None:
        for index, rows in enumerate(self._rows):
            for row in rows:
                self._form.setRowVisible(row, index == kind)
        # One engine: nothing to choose (a model's host stays what it is).
        several = len(self._bridge.hosts()) > 1 or self.host.currentData() != LOCAL_HOST
        self._form.setRowVisible(self._host_row, kind == MANAGED and several)

    def _line(self, field: str, label: str, placeholder: str) -> QWidget:
        edit = QLineEdit()
        edit.setObjectName(field)
        edit.setPlaceholderText(placeholder)
        self.fields[field] = edit
        return self._row(field, label, edit)

    def _row(self, field: str, label: str, widget: QWidget) -> QWidget:
        """A form row: ``widget`` with its error line; returns the row's field widget."""
        row = self.errors.wrap(field, widget)
        self._form.addRow(label, row)
        return row


def _host_item(host: str) -> str:
    return "local: this machine's Docker engine" if host == LOCAL_HOST else host


def _devices(text: str) -> object:
    """``all``, ``none`` or GPU indexes (``0, 1`` or ``[0, 1]``); anything else for the schema."""
    if text.lower() in ("", "all", "none"):
        return text.lower() or None
    parts = [p for p in re.split(r"[,\s]+", text.strip("[] ")) if p]
    return [number_or_text(p) for p in parts]


def _env(text: str) -> tuple[dict[str, str], list[str]]:
    """``NAME=VALUE`` lines as a mapping, and a sentence for each line that is not one."""
    env: dict[str, str] = {}
    bad: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            bad.append(f"line {number}: write NAME=VALUE, not {line.strip()!r}")
        else:
            env[name.strip()] = value.strip()
    return env, bad


def _free_port(config: Config) -> int:
    """The first port from 8001 that neither the proxy nor another model uses."""
    taken = {m.port for m in config.models.values() if isinstance(m, ModelConfig)}
    taken.add(config.proxy.port)
    port = _FIRST_PORT
    while port in taken:
        port += 1
    return port
