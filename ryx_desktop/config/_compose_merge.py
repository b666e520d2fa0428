"""Saving a compose file's models into a config: beside the models it has, never silently over one.

``config import-compose --write`` adds the imported models to the config file's own. A model
key the config has already is an error that names it, unless the user asked to ``replace`` it;
a replaced model keeps its place, new ones come last. Of the Docker settings, only those the
compose file gave (the image, the mounted folders) change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ryx_desktop.config._errors import ConfigError
from ryx_desktop.config._schema import AnyModel, Config

REPLACE_HINT = (
    "Add --replace to overwrite {them} with the compose file's, or give the service another "
    "key (an io.ryx.model label or another container_name) and import again."
)


@dataclass(frozen=True, slots=True)
class Merged:
    """The config to save (not validated as a whole yet) and the keys it replaced."""

    config: Config
    replaced: tuple[str, ...]


def merge_imported(base: Config, imported: Config, *, replace: bool, source: str) -> Merged:
    """``base`` with ``imported``'s models and Docker settings; ``source`` names the file.

    ConfigError when a key is in both and ``replace`` is false: nothing is overwritten unasked.
    """
    clash = tuple(key for key in imported.models if key in base.models)
    if clash and not replace:
        names = ", ".join(repr(key) for key in clash)
        what = f"a model called {names}" if len(clash) == 1 else f"models called {names}"
        raise ConfigError(
            f"{source} has {what}, which the config has already",
            REPLACE_HINT.format(them="it" if len(clash) == 1 else "them"),
        )
    models: dict[str, AnyModel] = {**base.models, **imported.models}
    given = {name: getattr(imported.docker, name) for name in imported.docker.model_fields_set}
    docker = base.docker.model_copy(update=given)
    default = base.default_model
    if default is None or not _names_a_model(default, models):
        default = imported.default_model
    update = {"models": models, "docker": docker, "default_model": default}
    return Merged(base.model_copy(update=update), clash)


def _names_a_model(name: str, models: Mapping[str, AnyModel]) -> bool:
    """Whether ``name`` is a key, served name or alias of one of ``models``."""
    return name in models or any(
        name == model.effective_served_name or name in model.aliases for model in models.values()
    )
