"""What the config dialogs share: validation as the YAML loader does it, and errors by field.

A dialog builds the whole candidate config as plain data and validates it through the pydantic
schema, exactly as the loader validates a file, so a value the file would refuse is refused
here with the loader's own words. Each problem's location (``("models", "a", "port")``) picks
the field whose error line shows it; what belongs to no field goes to the dialog's general line.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QVBoxLayout, QWidget

from ryx_desktop.config import Config, dotted, validation_problems
from ryx_desktop.ui.bridge import EngineBridge

Loc = tuple[str | int, ...]

_ERROR_STYLE = "color: #c62828;"


@dataclass(frozen=True, slots=True)
class Checked:
    """A candidate config: valid (``config``) or refused (``problems``: location, sentence)."""

    config: Config | None
    problems: tuple[tuple[Loc, str], ...] = ()


def config_data(config: Config) -> dict[str, Any]:
    """``config``'s top-level settings as the data the schema validates (sections kept whole)."""
    return {name: getattr(config, name) for name in Config.model_fields}


def check_config(data: Mapping[str, Any]) -> Checked:
    """Validate ``data`` as a whole config file would be validated."""
    try:
        return Checked(Config.model_validate(dict(data)))
    except ValidationError as exc:
        # The loader's wording, so the file check and the dialogs say the same thing, and
        # every problem at once: the checks across models run on what validated.
        return Checked(None, tuple(validation_problems(exc, dict(data))))


def place(
    problems: Iterable[tuple[Loc, str]],
    fields: Collection[str],
    prefix: Loc = (),
    whole: str | None = None,
) -> list[tuple[str | None, str]]:
    """Each problem with the field it belongs to (None: the general line).

    A location below ``prefix`` goes to the longest field name that starts it (``extra_args[1]``
    goes to ``extra_args``); ``prefix`` itself goes to ``whole``. Problems left over keep their
    dotted location in the sentence, since no field points at it.
    """
    placed: list[tuple[str | None, str]] = []
    for loc, message in problems:
        field: str | None = None
        if loc[: len(prefix)] == prefix:
            rest = loc[len(prefix) :]
            field = whole if not rest else None
            for end in range(len(rest), 0, -1):
                if dotted(rest[:end]) in fields:
                    field = dotted(rest[:end])
                    break
        if field is None and loc:
            message = f"{dotted(loc)}: {message}"
        placed.append((field, message))
    return placed


def number_or_text(text: str) -> int | float | str | None:
    """A field's text as YAML would read it: a number when it is one, None when empty."""
    text = text.strip()
    if not text:
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def put(data: dict[str, Any], field: str, value: object) -> None:
    """Set ``field``; an empty value leaves it out, so the schema's default (or error) applies."""
    if value is None or value == "":
        data.pop(field, None)
    else:
        data[field] = value


def shown(value: object) -> str:
    """A config value as a field's text (``None`` empty, ``600.0`` as ``600``)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class FieldErrors:
    """The red error line under each field, and the general line for the rest."""

    def __init__(self, general: QLabel) -> None:
        self._general = _style(general)
        self._labels: dict[str, QLabel] = {}

    @property
    def fields(self) -> Collection[str]:
        return self._labels.keys()

    @property
    def general(self) -> QLabel:
        """The line for problems of no one field (the dialog places it above its buttons)."""
        return self._general

    def wrap(self, field: str, widget: QWidget) -> QWidget:
        """``widget`` with an (empty, hidden) error line under it, for a form row."""
        box = QWidget()
        layout = QVBoxLayout(box)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(widget)
        label = _style(QLabel())
        label.setObjectName(f"error:{field}")
        layout.addWidget(label)
        self._labels[field] = label
        return box

    def show(self, placed: Iterable[tuple[str | None, str]]) -> None:
        """Show these problems (field, sentence); every other line is cleared."""
        by_field: dict[str | None, list[str]] = {}
        for field, message in placed:
            by_field.setdefault(field if field in self._labels else None, []).append(message)
        for field, label in [*self._labels.items(), (None, self._general)]:
            _set_text(label, "\n".join(by_field.get(field, [])))
        self._fit()

    def show_field(self, field: str, message: str) -> None:
        """Show ``message`` on ``field``'s line alone ("" clears it); the other lines stay."""
        _set_text(self._labels[field], message)
        self._fit()

    def _fit(self) -> None:
        """Grow the window when wrapped error lines need more height than it has."""
        window = self._general.window()
        layout = window.layout()
        if layout is None or not layout.hasHeightForWidth():
            return
        layout.activate()
        needed = layout.totalHeightForWidth(window.width())
        if needed > window.height():
            window.resize(window.width(), needed)

    def text(self, field: str | None) -> str:
        """What the error line of ``field`` (None: the general line) says now."""
        label = self._general if field is None else self._labels[field]
        return label.text() if not label.isHidden() else ""


async def apply_config(bridge: EngineBridge, config: Config) -> str | None:
    """Save and apply ``config`` through the bridge; None when done, else why it failed."""
    failures: list[str] = []

    def record(_key: str, message: str, hint: str) -> None:
        failures.append(f"{message.rstrip('.')}. {hint}" if hint else message)

    bridge.commandFailed.connect(record)
    try:
        done = await bridge.apply_config(config)
    finally:
        bridge.commandFailed.disconnect(record)
    if done:
        return None
    return failures[0] if failures else "The config could not be saved."


def _style(label: QLabel) -> QLabel:
    label.setStyleSheet(_ERROR_STYLE)
    label.setWordWrap(True)
    label.hide()
    return label


def _set_text(label: QLabel, text: str) -> None:
    label.setText(text)
    label.setVisible(bool(text))


#: Said when what a dialog edits changed in the config (a hand edit of the file was loaded)
#: while it was open: its fields were filled from the old settings, so saving them would undo it.
CHANGED_MEANWHILE = (
    "These settings changed in the config file while this dialog was open; it shows them "
    "now. Make your change again, then save."
)


class ConfigDialog(QDialog):
    """A dialog whose Save checks its fields and applies the config, one save at a time.

    Subclasses build their fields (and ``errors``), add ``self.buttons`` to their layout and
    implement ``_submit``, ``_fill`` and ``_changed``; the Save button's slot is a one-line shim
    over ``submit``, which tests await. A save never undoes a change of the config made while
    the dialog was open: when what the dialog edits changed, its fields are filled again from
    the new config and the user is asked to make the change again.
    """

    errors: FieldErrors

    def __init__(self, bridge: EngineBridge, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._bridge = bridge
        self._base = bridge.config  # what the fields were filled from
        self._busy = False
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.accepted.connect(self._on_save)
        self.buttons.rejected.connect(self.reject)

    def _on_save(self) -> None:
        self._bridge.spawn(self.submit())

    async def submit(self) -> bool:
        """Check the fields; when they are valid, save and apply them. True once saved."""
        if self._busy:
            return False
        self._busy = True
        self.buttons.setEnabled(False)
        try:
            if self._refill_if_changed():
                return False
            saved = await self._submit()
            if not saved:  # a save refused because the file changed: the change may be loaded
                self._refill_if_changed(self.errors.text(None))
            return saved
        finally:
            self._busy = False
            self.buttons.setEnabled(True)

    def _refill_if_changed(self, why: str = "") -> bool:
        """Fill the fields again when what they edit changed since they were filled; True then.

        ``why`` (the general line's text) is kept above the note that says so.
        """
        current = self._bridge.config
        base, self._base = self._base, current
        if current is base or not self._changed(base, current):
            return False
        self._fill(current)
        self.errors.show([(None, f"{why}\n{CHANGED_MEANWHILE}" if why else CHANGED_MEANWHILE)])
        return True

    async def _submit(self) -> bool:
        raise NotImplementedError

    def _fill(self, config: Config) -> None:
        """Show ``config``'s values in the fields."""
        raise NotImplementedError

    def _changed(self, before: Config, after: Config) -> bool:
        """Whether what this dialog edits differs between the two configs."""
        raise NotImplementedError
