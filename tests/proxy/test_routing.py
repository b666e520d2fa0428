"""Routing: which model a request goes to, what the model's server receives, X-Ryx-Model.

Two external models on two fake vLLM processes make the routing observable: each fake records
what it received (``/fake/requests``), including the ``model`` field after the proxy's rewrite.
"""

from __future__ import annotations

from typing import Any

import pytest

from ryx_desktop.config import Config
from tests.proxy.helpers import assert_error, chat, client_for, external, make_config, serve
from tests.support.proxy import running_proxy
from tests.support.upstream import FakeUpstream


def two_models(alpha: FakeUpstream, beta: FakeUpstream, **proxy: Any) -> Config:
    return make_config(
        {
            "alpha": external(alpha, "alpha-served", "a1"),
            "beta": external(beta, "beta-served", "b1", "second"),
        },
        default_model="alpha",
        **proxy,
    )


def received_models(upstream: FakeUpstream) -> list[Any]:
    """The ``model`` field of each generation request the fake received, in order."""
    return [r["json"].get("model") for r in upstream.requests() if r["method"] == "POST"]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("name", "key", "served"),
    [
        ("beta-served", "beta", "beta-served"),  # served name
        ("b1", "beta", "beta-served"),  # alias
        ("second", "beta", "beta-served"),  # another alias
        ("beta", "beta", "beta-served"),  # key
        ("alpha-served", "alpha", "alpha-served"),
        ("a1", "alpha", "alpha-served"),
        ("alpha", "alpha", "alpha-served"),
    ],
)
async def test_model_field_matches_served_names_aliases_and_keys(
    alpha: FakeUpstream, beta: FakeUpstream, name: str, key: str, served: str
) -> None:
    async with serve(two_models(alpha, beta)) as client:
        response = await client.post("/v1/chat/completions", json=chat(model=name))
    assert response.status_code == 200, response.text
    assert response.headers["X-Ryx-Model"] == key
    assert response.json()["model"] == served
    target, other = (beta, alpha) if key == "beta" else (alpha, beta)
    assert received_models(target) == [served]  # rewritten to the served name when it differed
    assert received_models(other) == []


@pytest.mark.asyncio
async def test_served_name_is_forwarded_byte_for_byte(
    alpha: FakeUpstream, beta: FakeUpstream
) -> None:
    """A body that already names the served name is not re-encoded (its other fields intact)."""
    body = chat(model="beta-served", temperature=0.25, extra_field={"kept": [1, 2]})
    async with serve(two_models(alpha, beta)) as client:
        response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    [received] = [r for r in beta.requests() if r["method"] == "POST"]
    assert received["json"] == body
    assert received["path"] == "/v1/chat/completions"


@pytest.mark.asyncio
@pytest.mark.parametrize("model", [None, ""], ids=["absent", "empty"])
async def test_no_model_goes_to_the_selected_model(
    alpha: FakeUpstream, beta: FakeUpstream, model: str | None
) -> None:
    config = two_models(alpha, beta)
    assert config.default_model == "alpha"
    async with serve(config) as client:
        response = await client.post("/v1/chat/completions", json=chat(model=model))
    assert response.status_code == 200
    assert response.headers["X-Ryx-Model"] == "alpha"
    assert received_models(alpha) == ["alpha-served"]  # the model field was filled in
    assert received_models(beta) == []


@pytest.mark.asyncio
async def test_default_model_may_name_an_alias(alpha: FakeUpstream, beta: FakeUpstream) -> None:
    config = make_config(
        {"alpha": external(alpha, "alpha-served"), "beta": external(beta, "beta-served", "b1")},
        default_model="b1",
    )
    async with serve(config) as client:
        response = await client.post("/v1/completions", json={"prompt": "hello"})
    assert response.status_code == 200
    assert response.headers["X-Ryx-Model"] == "beta"
    assert received_models(beta) == ["beta-served"]


@pytest.mark.asyncio
async def test_unknown_model_falls_back_to_the_selected_model_by_default(
    alpha: FakeUpstream, beta: FakeUpstream
) -> None:
    config = two_models(alpha, beta)
    assert config.proxy.fallback_unknown is True
    async with serve(config) as client:
        response = await client.post("/v1/chat/completions", json=chat(model="gpt-4o"))
    assert response.status_code == 200
    assert response.headers["X-Ryx-Model"] == "alpha"
    assert received_models(alpha) == ["alpha-served"]


@pytest.mark.asyncio
async def test_unknown_model_is_404_without_fallback(
    alpha: FakeUpstream, beta: FakeUpstream
) -> None:
    config = two_models(alpha, beta, fallback_unknown=False)
    async with serve(config) as client:
        unknown = await client.post("/v1/chat/completions", json=chat(model="gpt-4o"))
        known = await client.post("/v1/chat/completions", json=chat(model="b1"))
        nameless = await client.post("/v1/chat/completions", json=chat())
    error = assert_error(unknown, 404, "model_not_found")
    assert "gpt-4o" in error["message"]
    assert known.status_code == 200 and known.headers["X-Ryx-Model"] == "beta"
    assert nameless.status_code == 200 and nameless.headers["X-Ryx-Model"] == "alpha"
    assert received_models(alpha) == ["alpha-served"]
    assert received_models(beta) == ["beta-served"]


@pytest.mark.asyncio
async def test_select_changes_where_a_request_without_model_goes(
    alpha: FakeUpstream, beta: FakeUpstream
) -> None:
    async with (
        running_proxy(two_models(alpha, beta)) as proxy,
        client_for(proxy) as client,
    ):
        before = await client.post("/v1/chat/completions", json=chat())
        selected = await client.post("/api/instances/b1/select")
        after = await client.post("/v1/chat/completions", json=chat())
        fallback = await client.post("/v1/chat/completions", json=chat(model="unknown"))
        instances = (await client.get("/api/instances")).json()
        assert proxy.supervisor.selected == "beta"
    assert before.headers["X-Ryx-Model"] == "alpha"
    assert selected.status_code == 200
    assert selected.headers["X-Ryx-Model"] == "beta"
    assert selected.json()["key"] == "beta" and selected.json()["selected"] is True
    assert after.headers["X-Ryx-Model"] == "beta"
    assert fallback.headers["X-Ryx-Model"] == "beta"
    assert instances["selected"] == "beta"
    assert received_models(alpha) == ["alpha-served"]
    assert received_models(beta) == ["beta-served", "beta-served"]


@pytest.mark.asyncio
async def test_select_of_an_unknown_model_is_404(alpha: FakeUpstream, beta: FakeUpstream) -> None:
    async with (
        running_proxy(two_models(alpha, beta)) as proxy,
        client_for(proxy) as client,
    ):
        response = await client.post("/api/instances/nope/select")
        assert proxy.supervisor.selected == "alpha"
    assert_error(response, 404, "model_not_found")


@pytest.mark.asyncio
async def test_control_endpoint_rejects_get_with_405(
    alpha: FakeUpstream, beta: FakeUpstream
) -> None:
    async with (
        running_proxy(two_models(alpha, beta)) as proxy,
        client_for(proxy) as client,
    ):
        response = await client.get("/api/instances/beta/select")
        assert proxy.supervisor.selected == "alpha"
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["Allow"] == "POST"


@pytest.mark.asyncio
async def test_every_forwarded_response_carries_x_ryx_model(
    alpha: FakeUpstream, beta: FakeUpstream
) -> None:
    """Streams, plain answers, every endpoint, and the upstream's own errors alike."""
    async with serve(two_models(alpha, beta)) as client:
        async with client.stream(
            "POST", "/v1/chat/completions", json=chat(model="b1", stream=True)
        ) as stream:
            assert stream.status_code == 200
            assert stream.headers["X-Ryx-Model"] == "beta"
            await stream.aread()
        completion = await client.post("/v1/completions", json={"model": "a1", "prompt": "x"})
        embedding = await client.post("/v1/embeddings", json={"model": "beta", "input": "x"})
        refused = await client.post("/v1/chat/completions", json={"model": "b1"})  # no messages
    assert completion.headers["X-Ryx-Model"] == "alpha"
    assert embedding.headers["X-Ryx-Model"] == "beta"
    assert refused.status_code == 400  # the fake's own refusal, relayed as it is
    assert refused.headers["X-Ryx-Model"] == "beta"
