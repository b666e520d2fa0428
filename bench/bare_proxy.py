"""The reference proxy: the barest aiohttp.web server + aiohttp client that forwards requests.

One catch-all handler reads the request body, forwards method, path, query, body and the
end-to-end headers to the upstream over one shared ``ClientSession``, and relays the answer:
streams (``text/event-stream``) chunk by chunk as ``iter_any()`` yields them, anything else read
whole. No checks, no model rewrite, no metrics: it is the floor that a real proxy built on the same
libraries is compared with.

Run it with ``python -m bench.bare_proxy --port P --upstream http://127.0.0.1:U``; it stops on
SIGTERM or SIGINT. ``--uvloop`` runs it on uvloop (as ``ryx-desktop serve`` runs where uvloop is
installed) instead of asyncio's own loop.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Mapping

import aiohttp
from aiohttp import web

# Headers that belong to one connection (RFC 9110 §7.6.1) or that aiohttp sets itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "host",
        "content-length",
        "content-encoding",
    }
)

SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM: web.AppKey[str] = web.AppKey("upstream", str)


def _forwardable(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}


async def handle(request: web.Request) -> web.StreamResponse:
    """Forward one request and relay its answer."""
    session = request.app[SESSION]
    body = await request.read()
    async with session.request(
        request.method,
        request.app[UPSTREAM] + request.path_qs,
        data=body,
        headers=_forwardable(request.headers),
        auto_decompress=False,
    ) as upstream:
        headers = _forwardable(upstream.headers)
        if upstream.content_type == "text/event-stream":
            response = web.StreamResponse(status=upstream.status, headers=headers)
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
        return web.Response(status=upstream.status, body=await upstream.read(), headers=headers)


def make_app(upstream: str) -> web.Application:
    """The proxy app, forwarding to ``upstream`` (``http://host:port``)."""
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")

    async def session_context(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout()) as s:
            app[SESSION] = s
            yield

    app.cleanup_ctx.append(session_context)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m bench.bare_proxy --port P --upstream URL``."""
    parser = argparse.ArgumentParser(description="The bare aiohttp reference proxy.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:8001")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args(argv)
    loop: asyncio.AbstractEventLoop | None = None
    if args.uvloop:
        try:
            import uvloop
        except ImportError:
            raise SystemExit("--uvloop: uvloop is not installed (pip install uvloop)") from None
        loop = uvloop.new_event_loop()
    web.run_app(
        make_app(args.upstream),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        handle_signals=True,
        loop=loop,
    )


if __name__ == "__main__":
    main()
