"""Which ``proxy.api_key`` values a client could ever send, checked when the config is read.

Clients send the key as ``Authorization: Bearer KEY``. A key that no header can carry passes
every later check and then refuses every request, so the config check rejects it:

* a blank or whitespace-only key, on any host. Beyond loopback the key is required and this one
  can never match; on loopback it is surely a slip too (a key was meant, or none), so it is an
  error rather than a silent "no key": no key is written by leaving ``api_key`` out (or ``null``);
* whitespace at either end: HTTP trims a header value, and the key is read after the spaces
  that follow ``Bearer``, so such a key does not survive the trip;
* control characters other than a tab (a line break), which a header value cannot hold;
* ``env:NAME`` with no name, or a name no shell can export. The variable's value is read when the
  proxy starts, not here: the config file is the same whichever environment runs it.
"""

from __future__ import annotations

import re

ENV_PREFIX = "env:"
#: The names a shell can export: ``export NAME=...``.
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def api_key_problem(value: str) -> str | None:
    """Why ``value``, ``proxy.api_key`` as written, could never let a client in; else None."""
    if value.startswith(ENV_PREFIX):
        return _env_name_problem(value.removeprefix(ENV_PREFIX))
    if not value.strip():
        return (
            "the key is blank, so no client could ever send it "
            "(write the key itself, or env:NAME to read it from an environment variable; "
            "leave api_key out for no key, which only a loopback host allows)"
        )
    if value != value.strip():
        return (
            "the key starts or ends with whitespace, which does not survive in the "
            "'Authorization: Bearer KEY' header a client sends (HTTP trims header values, and "
            "the key is what follows the spaces after Bearer), so remove it"
        )
    if any(char != "\t" and (ord(char) < 32 or ord(char) == 127) for char in value):
        return (
            "the key holds a control character (like a line break), which an HTTP header "
            "cannot carry, so remove it"
        )
    return None


def _env_name_problem(name: str) -> str | None:
    if not name.strip():
        return (
            "env: names no environment variable to read the key from "
            "(write env:NAME, like env:RYX_API_KEY)"
        )
    if not ENV_NAME.fullmatch(name):
        return (
            f"{name!r} after env: is not an environment variable name "
            "(letters, digits and _, not starting with a digit, like env:RYX_API_KEY)"
        )
    return None
