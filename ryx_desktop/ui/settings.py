"""The settings dialog: proxy, GPU, Docker and general settings, and "Start at login".

Like the model dialog it checks the whole candidate config as the config file is checked and
shows each problem next to its field; saving writes the file atomically through the bridge and
applies it to the running engine. The proxy's own settings (address, port, key, origins) take
effect when the proxy restarts, which the dialog says. The models come from the config as it is
when Save is pressed, so a hand edit of a model made meanwhile is kept; a hand edit of these
settings made meanwhile fills the fields again instead of being undone.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QVBoxLayout,
    QWidget,
)

from ryx_desktop.config import Config
from ryx_desktop.core.errors import RyxError
from ryx_desktop.core.routing import resolve_model
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
from ryx_desktop.ui.bridge import EngineBridge

PROXY_NOTE = "Changes to the proxy (address, port, key, origins) apply when the proxy restarts."


class AutostartEntry(Protocol):
    """The freedesktop autostart entry ("Start at login"); file I/O, so called off the Qt thread."""

    def enabled(self) -> bool: ...

    def enable(self) -> object: ...

    def disable(self) -> None: ...


class SettingsDialog(ConfigDialog):
    """Edit the settings that are not about one model; saving applies them to the engine."""

    def __init__(
        self,
        bridge: EngineBridge,
        autostart: AutostartEntry | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(bridge, parent)
        self._autostart = autostart
        # A stat of one file: cheap enough to read here; writing it goes to an executor.
        self._autostart_was = autostart.enabled() if autostart is not None else False
        self.setWindowTitle("ryx-desktop settings")
        self.errors = FieldErrors(QLabel())
        self.fields: dict[str, QLineEdit] = {}
        config = bridge.config

        proxy = QFormLayout()
        self._line(proxy, "proxy.host", "Address", "127.0.0.1 (another address needs a key)")
        self._line(proxy, "proxy.port", "Port", "8420")
        self._line(proxy, "proxy.api_key", "API key", "none; env:NAME reads it from NAME")
        self.fields["proxy.api_key"].setEchoMode(QLineEdit.EchoMode.Password)
        self.origins = QPlainTextEdit()
        self.origins.setPlaceholderText("browser origins allowed by CORS, one per line")
        self.origins.setFixedHeight(56)
        proxy.addRow("Allowed origins", self.errors.wrap("proxy.allowed_origins", self.origins))
        self.auto_start = QCheckBox("Start a stopped model when a request asks for it")
        proxy.addRow("", self.errors.wrap("proxy.auto_start", self.auto_start))
        note = QLabel(PROXY_NOTE)
        note.setWordWrap(True)
        proxy.addRow(note)

        gpu = QFormLayout()
        self.policy = QComboBox()
        self.policy.addItem("exclusive: one model per GPU at a time", "exclusive")
        self.policy.addItem("fractional: share GPUs by memory budget", "fractional")
        gpu.addRow("Policy", self.errors.wrap("gpu.policy", self.policy))
        self._line(gpu, "gpu.headroom", "Headroom", "share of each GPU never planned, e.g. 0.05")

        docker = QFormLayout()
        self._line(docker, "docker.host", "Docker host", "empty: DOCKER_HOST or the local engine")
        self._line(docker, "docker.image", "Image", "vllm/vllm-openai:latest")
        self._line(docker, "docker.models_dir", "Models folder", "mounted read-only at /models")
        self._line(docker, "docker.hf_cache", "Hugging Face cache", "~/.cache/huggingface")
        self._line(docker, "docker.vllm_cache", "vLLM compile cache", "~/.cache/ryx-desktop/vllm")

        general = QFormLayout()
        self.default_model = QComboBox()
        general.addRow("Default model", self.errors.wrap("default_model", self.default_model))
        self._line(general, "idle_ttl", "Idle timeout (s)", "empty: models are never stopped")
        self.start_at_login = QCheckBox("Start ryx-desktop when I log in")
        self.start_at_login.setEnabled(autostart is not None)
        general.addRow("", self.start_at_login)

        layout = QVBoxLayout(self)
        for title, form in (
            ("Proxy", proxy),
            ("GPU", gpu),
            ("Docker", docker),
            ("General", general),
        ):
            box = QGroupBox(title)
            box.setLayout(form)
            layout.addWidget(box)
        layout.addWidget(self.errors.general)
        layout.addWidget(self.buttons)
        self._fill(config)
        self.start_at_login.setChecked(self._autostart_was)

    # ---- saving -----------------------------------------------------------------------------

    async def _submit(self) -> bool:
        config = self._bridge.config
        checked = check_config(self._data(config))
        if checked.config is None:
            self.errors.show(place(checked.problems, self.errors.fields))
            return False
        self.errors.show([])
        if checked.config != config:
            failure = await apply_config(self._bridge, checked.config)
            if failure is not None:
                self.errors.show([(None, failure)])
                return False
        failure = await self._apply_autostart()
        if failure is not None:
            self.errors.show([(None, failure)])
            return False
        self.accept()
        return True

    async def _apply_autostart(self) -> str | None:
        entry = self._autostart
        wanted = self.start_at_login.isChecked()
        if entry is None or wanted == self._autostart_was:
            return None
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, entry.enable if wanted else entry.disable)
        except RyxError as exc:
            return f"{exc.message.rstrip('.')}. {exc.hint}" if exc.hint else exc.message
        except OSError as exc:
            return f"Cannot change the login autostart entry: {exc.strerror or exc}"
        self._autostart_was = wanted
        return None

    # ---- fields <-> config data -------------------------------------------------------------

    def _data(self, config: Config) -> dict[str, Any]:
        text = {field: edit.text().strip() for field, edit in self.fields.items()}
        proxy = config.proxy.model_dump()
        put(proxy, "host", text["proxy.host"])
        put(proxy, "port", number_or_text(text["proxy.port"]))
        proxy["api_key"] = text["proxy.api_key"] or None
        lines = self.origins.toPlainText().splitlines()
        proxy["allowed_origins"] = [line.strip() for line in lines if line.strip()]
        proxy["auto_start"] = self.auto_start.isChecked()
        gpu = config.gpu.model_dump()
        gpu["policy"] = self.policy.currentData()
        put(gpu, "headroom", number_or_text(text["gpu.headroom"]))
        docker = config.docker.model_dump()
        docker["host"] = text["docker.host"] or None
        for field in ("image", "models_dir", "hf_cache", "vllm_cache"):
            put(docker, field, text[f"docker.{field}"])
        return {
            **config_data(config),
            "proxy": proxy,
            "gpu": gpu,
            "docker": docker,
            "idle_ttl": number_or_text(text["idle_ttl"]),
            "default_model": self._default_model(config),
        }

    def _default_model(self, config: Config) -> str | None:
        """The chosen key; the config's own spelling (an alias, say) when it means that model."""
        key = self.default_model.currentData()
        current = config.default_model
        if key is not None and current is not None and resolve_model(config, current) == key:
            return current
        return key if isinstance(key, str) else None

    def _fill(self, config: Config) -> None:
        values = {
            "proxy.host": config.proxy.host,
            "proxy.port": config.proxy.port,
            "proxy.api_key": config.proxy.api_key,
            "gpu.headroom": config.gpu.headroom,
            "docker.host": config.docker.host,
            "docker.image": config.docker.image,
            "docker.models_dir": config.docker.models_dir,
            "docker.hf_cache": config.docker.hf_cache,
            "docker.vllm_cache": config.docker.vllm_cache,
            "idle_ttl": config.idle_ttl,
        }
        for field, value in values.items():
            self.fields[field].setText(shown(value))
        self.origins.setPlainText("\n".join(config.proxy.allowed_origins))
        self.auto_start.setChecked(config.proxy.auto_start)
        self.policy.setCurrentIndex(max(0, self.policy.findData(config.gpu.policy)))
        self.default_model.clear()
        self.default_model.addItem("(none)", None)
        for key, model in config.models.items():
            self.default_model.addItem(f"{model.display_name(key)} ({key})", key)
        default = resolve_model(config, config.default_model) if config.default_model else None
        self.default_model.setCurrentIndex(max(0, self.default_model.findData(default)))

    def _changed(self, before: Config, after: Config) -> bool:
        """Whether a setting of this dialog differs (the models are not edited here)."""
        return _settings_of(before) != _settings_of(after)

    def _line(self, form: QFormLayout, field: str, label: str, placeholder: str) -> None:
        edit = QLineEdit()
        edit.setObjectName(field)
        edit.setPlaceholderText(placeholder)
        self.fields[field] = edit
        form.addRow(label, self.errors.wrap(field, edit))


def _settings_of(config: Config) -> Config:
    """``config`` without its models: what the settings dialog shows."""
    return config.model_copy(update={"models": {}})
