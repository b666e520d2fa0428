"""Fixtures for the proxy tests: fake vLLM processes on this host, and a server that stalls.

No Docker here: every model is an external (``url:``) model in front of the stdlib fake vLLM
(``tests/fake_vllm/server.py``) run as a subprocess, so routing, forwarding and the fake's
``/fake/requests`` record are all real sockets. The shared fakes live for the session; tests
that kill a fake or count its disconnects get one of their own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.proxy.helpers import StallingUpstream
from tests.support.upstream import FakeUpstream, start_fake_upstream

#: The fake's pause between streamed tokens for the "slow" fakes: a long stream takes seconds.
TOKEN_DELAY = 0.05


@pytest.fixture(scope="session")
def upstream_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("upstreams")


@pytest.fixture(scope="session")
def _alpha(upstream_dir: Path) -> Iterator[FakeUpstream]:
    upstream = start_fake_upstream(upstream_dir, served_name="alpha-served")
    yield upstream
    upstream.stop()


@pytest.fixture(scope="session")
def _beta(upstream_dir: Path) -> Iterator[FakeUpstream]:
    upstream = start_fake_upstream(upstream_dir, served_name="beta-served")
    yield upstream
    upstream.stop()


@pytest.fixture(scope="session")
def _slow(upstream_dir: Path) -> Iterator[FakeUpstream]:
    upstream = start_fake_upstream(
        upstream_dir, served_name="slow-served", env={"FAKE_VLLM_TOKEN_DELAY": str(TOKEN_DELAY)}
    )
    yield upstream
    upstream.stop()


@pytest.fixture
def alpha(_alpha: FakeUpstream) -> FakeUpstream:
    """The shared fake serving ``alpha-served``, its request record cleared."""
    _alpha.clear_requests()
    return _alpha


@pytest.fixture
def beta(_beta: FakeUpstream) -> FakeUpstream:
    """The shared fake serving ``beta-served``, its request record cleared."""
    _beta.clear_requests()
    return _beta


@pytest.fixture
def slow(_slow: FakeUpstream) -> FakeUpstream:
    """The shared fake serving ``slow-served`` one token per TOKEN_DELAY (disconnects not counted
    here: use ``new_upstream`` for that)."""
    _slow.clear_requests()
    return _slow


@pytest.fixture
def new_upstream(tmp_path: Path) -> Iterator[Callable[..., FakeUpstream]]:
    """Start a fake of the test's own (``slow=True``: with the token delay); stopped after."""
    started: list[FakeUpstream] = []

    def start(served_name: str = "own-served", *, slow: bool = False) -> FakeUpstream:
        env = {"FAKE_VLLM_TOKEN_DELAY": str(TOKEN_DELAY)} if slow else None
        upstream = start_fake_upstream(tmp_path, served_name=served_name, env=env)
        started.append(upstream)
        return upstream

    yield start
    for upstream in started:
        upstream.stop()


@pytest_asyncio.fixture
async def stalling() -> AsyncIterator[StallingUpstream]:
    """An upstream that never answers a POST (``read_timeout`` must end the wait)."""
    upstream = StallingUpstream(mid_stream=False)
    await upstream.start()
    yield upstream
    await upstream.close()


@pytest_asyncio.fixture
async def stalling_mid_body() -> AsyncIterator[StallingUpstream]:
    """An upstream that sends a JSON answer's headers and first bytes, then goes silent."""
    upstream = StallingUpstream(mid_stream=False, mid_body=True)
    await upstream.start()
    yield upstream
    await upstream.close()


@pytest_asyncio.fixture
async def stalling_mid_stream() -> AsyncIterator[StallingUpstream]:
    """An upstream that starts an event stream, sends one event, then goes silent."""
    upstream = StallingUpstream(mid_stream=True)
    await upstream.start()
    yield upstream
    await upstream.close()
