"""The local OpenAI-compatible proxy: one base URL for every model, started on demand.

An ``aiohttp`` low-level server on the running event loop (qasync's in the GUI, plain asyncio in
``ryx-desktop serve``) with aiohttp's client for the upstream. It knows ``core`` and ``config``,
never Qt.
"""

from ryx_desktop.proxy._security import resolve_api_key
from ryx_desktop.proxy._server import ProxyServer

__all__ = ["ProxyServer", "resolve_api_key"]
