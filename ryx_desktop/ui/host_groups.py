"""How the models table groups its rows by host: a header row per host, then its models.

Pure functions over snapshots, for ``instances_model``: a model is listed under its host
(``any`` until a ``host: any`` model is placed), an external server under "Other servers".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ryx_desktop.core.spec import ANY_HOST
from ryx_desktop.core.states import Instance

OTHER_SERVERS = "Other servers"
ANY_HOST_TITLE = "Any host"


@dataclass(frozen=True, slots=True)
class HostHeader:
    """The header row of one host's group (``host`` "": external servers)."""

    host: str


#: A row of the table: a model's key, or a group's header.
Row = str | HostHeader


def group_of(inst: Instance) -> str:
    """The group a model is listed in: its host, or "" for an external server."""
    return "" if inst.external else inst.host


def group_rows(
    keys: Sequence[str], instances: Mapping[str, Instance], hosts: Sequence[str]
) -> list[Row]:
    """The table's rows: ``keys`` as they are with one host; with several, each host's header
    followed by its models (config order), every host listed even without a model, then
    models on hosts not listed (``any``: not placed yet), then the external servers."""
    if len(hosts) <= 1:
        return list(keys)
    groups: dict[str, list[str]] = {host: [] for host in hosts}
    for key in keys:
        groups.setdefault(group_of(instances[key]), []).append(key)
    externals = groups.pop("", [])
    if externals:
        groups[""] = externals
    rows: list[Row] = []
    for host, members in groups.items():
        if members or host in hosts:
            rows.append(HostHeader(host))
            rows.extend(members)
    return rows


def host_title(host: str) -> str:
    """A group header's name: the host, "Any host" or "Other servers"."""
    if host == "":
        return OTHER_SERVERS
    if host == ANY_HOST:
        return ANY_HOST_TITLE
    return host
