"""The chat tab's model picker: the configured models, starting on the selected one.

It follows the selection (the tray's or the window's) until the user picks a model; it follows
models being added and removed, keeping the user's pick while that model is still configured
and going back to the selected one when it is not.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QWidget

from ryx_desktop.config import Config
from ryx_desktop.ui.bridge import EngineBridge


class ModelPicker(QComboBox):
    """A combo of the configured models; its data is each model's key."""

    modelChanged = Signal()  # the choice, or the list, changed

    def __init__(self, bridge: EngineBridge, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("chat-model")
        self.setToolTip("The model the next message goes to, with the whole history")
        self._bridge = bridge
        self.picked = False  # the user chose a model: stop following the selection
        self.activated.connect(self._on_activated)
        bridge.configChanged.connect(self.fill)
        bridge.selectionChanged.connect(self._on_selection)
        self.fill(bridge.config)

    def current_model(self) -> str | None:
        """The key of the model the next message goes to."""
        key = self.currentData()
        return str(key) if key is not None else None

    def models(self) -> list[str]:
        return [str(self.itemData(i)) for i in range(self.count())]

    def set_model(self, key: str) -> None:
        """Pick model ``key`` (as the user's choice)."""
        index = self.findData(key)
        if index >= 0:
            self.setCurrentIndex(index)
            self.picked = True
            self.modelChanged.emit()

    def fill(self, config: Config) -> None:
        """List the configured models, keeping the choice while its model is still there."""
        keep = self.current_model()
        self.clear()
        for key, model in config.models.items():
            name = model.display_name(key)
            self.addItem(key if name == key else f"{name} ({key})", key)
        if not (self.picked and keep in config.models):
            self.picked = False
            keep = self._bridge.selected() or keep
        index = self.findData(keep) if keep is not None else -1
        self.setCurrentIndex(max(index, 0) if self.count() else -1)
        self.modelChanged.emit()

    def _on_selection(self, key: str | None) -> None:
        if not self.picked and key is not None:
            index = self.findData(key)
            if index >= 0:
                self.setCurrentIndex(index)
                self.modelChanged.emit()

    def _on_activated(self, _index: int) -> None:
        self.picked = True
        self.modelChanged.emit()
