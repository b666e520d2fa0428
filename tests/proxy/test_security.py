"""Who may use the proxy: Host (DNS rebinding, see Ollama CVE-2024-28224), Origin/CORS, API key."""

from __future__ import annotations

import pytest

from ryx_desktop.config import Config
from ryx_desktop.core.errors import ConfigError
from tests.proxy.helpers import (
    assert_error,
    chat,
    check_error_payload,
    client_for,
    external,
    make_config,
    raw_request,
    request_bytes,
    serve,
)
from tests.support.proxy import running_proxy
from tests.support.upstream import FakeUpstream

APP = "http://app.example:3000"
KEY = "s3cret-key"


def config(alpha: FakeUpstream, **proxy: object) -> Config:
    return make_config({"alpha": external(alpha, "alpha-served", "a1")}, **proxy)


def posted(upstream: FakeUpstream) -> list[dict]:
    return [r for r in upstream.requests() if r["method"] == "POST"]


# --------------------------------------------------------------------------- Host


@pytest.mark.asyncio
@pytest.mark.parametrize("name", ["localhost", "127.0.0.1", "[::1]", "LocalHost"])
async def test_loopback_host_with_our_port_is_served(alpha: FakeUpstream, name: str) -> None:
    async with (
        running_proxy(config(alpha)) as proxy,
        client_for(proxy) as client,
    ):
        host = f"{name}:{proxy.port}"
        models = await client.get("/v1/models", headers={"Host": host})
        completion = await client.post("/v1/chat/completions", json=chat(), headers={"Host": host})
    assert models.status_code == 200
    assert completion.status_code == 200


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "host",
    [
        "evil.com:{port}",
        "localhost.evil.com:{port}",
        "127.0.0.2:{port}",
        "localhost:{other}",
        "127.0.0.1:{other}",
        "localhost",  # no port
        "127.0.0.1",
    ],
)
async def test_other_hosts_are_refused_with_403(alpha: FakeUpstream, host: str) -> None:
    async with (
        running_proxy(config(alpha)) as proxy,
        client_for(proxy) as client,
    ):
        value = host.format(port=proxy.port, other=proxy.port + 1)
        models = await client.get("/v1/models", headers={"Host": value})
        health = await client.get("/health", headers={"Host": value})
        completion = await client.post("/v1/chat/completions", json=chat(), headers={"Host": value})
    for response in (models, health, completion):
        error = assert_error(response, 403, "host_not_allowed")
        assert f"localhost:{proxy.port}" in error["message"]
    assert posted(alpha) == []  # nothing reached the model


@pytest.mark.asyncio
@pytest.mark.parametrize("bad", ["/", "?", "#", "@"])
async def test_host_with_url_syntax_is_400(alpha: FakeUpstream, bad: str) -> None:
    async with running_proxy(config(alpha)) as proxy:
        hosts = [f"localhost:{proxy.port}{bad}x", f"evil.com{bad}localhost:{proxy.port}"]
        responses = [
            await raw_request(proxy.port, request_bytes(proxy.port, host=host)) for host in hosts
        ]
    for response in responses:
        assert response.status == 400, response
        assert response.headers["content-type"].startswith("application/json")
        check_error_payload(response.json(), "bad_host")


@pytest.mark.asyncio
async def test_request_without_host_is_400(alpha: FakeUpstream) -> None:
    async with running_proxy(config(alpha)) as proxy:
        response = await raw_request(proxy.port, request_bytes(proxy.port, host=""))
    assert response.status == 400
    error = check_error_payload(response.json(), "bad_request")  # aiohttp's parser refuses it
    assert "Host" in error["message"]


# --------------------------------------------------------------------------- Origin and CORS


@pytest.mark.asyncio
async def test_unlisted_origin_is_403(alpha: FakeUpstream) -> None:
    async with serve(config(alpha, allowed_origins=[APP])) as client:
        evil = {"Origin": "http://evil.example"}
        models = await client.get("/v1/models", headers=evil)
        completion = await client.post("/v1/chat/completions", json=chat(), headers=evil)
        preflight = await client.options(
            "/v1/chat/completions",
            headers={**evil, "Access-Control-Request-Method": "POST"},
        )
        lookalike = await client.get("/v1/models", headers={"Origin": APP + ".evil.example"})
    for response in (models, completion, preflight, lookalike):
        assert_error(response, 403, "origin_not_allowed")
        assert "access-control-allow-origin" not in response.headers
    assert posted(alpha) == []


@pytest.mark.asyncio
async def test_no_origin_is_allowed_but_gets_no_cors_headers(alpha: FakeUpstream) -> None:
    async with serve(config(alpha)) as client:
        response = await client.post("/v1/chat/completions", json=chat())
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.asyncio
async def test_listed_origin_gets_cors_headers(alpha: FakeUpstream) -> None:
    async with serve(config(alpha, allowed_origins=[APP + "/"])) as client:
        origin = {"Origin": APP}
        completion = await client.post("/v1/chat/completions", json=chat(), headers=origin)
        models = await client.get("/v1/models", headers=origin)
        refused = await client.post("/v1/chat/completions", content=b"{", headers=origin)
    for response in (completion, models, refused):
        assert response.headers["Access-Control-Allow-Origin"] == APP
        assert response.headers["Vary"] == "Origin"
    assert completion.status_code == 200
    assert "X-Ryx-Model" in completion.headers["Access-Control-Expose-Headers"]
    assert_error(refused, 400, "invalid_json")  # errors are readable by the page too


@pytest.mark.asyncio
async def test_preflight_of_a_listed_origin_is_204(alpha: FakeUpstream) -> None:
    async with serve(config(alpha, allowed_origins=[APP], api_key=KEY)) as client:
        response = await client.options(
            "/v1/chat/completions",
            headers={
                "Origin": APP,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
    # A browser sends no credentials with a preflight: it must pass without the key.
    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["Access-Control-Allow-Origin"] == APP
    methods = {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
    assert {"GET", "POST"} <= methods
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert posted(alpha) == []


@pytest.mark.asyncio
async def test_options_without_origin_is_405(alpha: FakeUpstream) -> None:
    async with serve(config(alpha)) as client:
        response = await client.options("/v1/chat/completions")
    assert_error(response, 405, "method_not_allowed")


# --------------------------------------------------------------------------- API key


@pytest.mark.asyncio
async def test_api_key_is_required_when_set(alpha: FakeUpstream) -> None:
    async with serve(config(alpha, api_key=KEY)) as client:
        missing = await client.post("/v1/chat/completions", json=chat())
        wrong = await client.post(
            "/v1/chat/completions", json=chat(), headers={"Authorization": "Bearer nope"}
        )
        not_bearer = await client.get("/v1/models", headers={"Authorization": KEY})
        models = await client.get("/v1/models")
        metrics = await client.get("/metrics")
        right = await client.post(
            "/v1/chat/completions", json=chat(), headers={"Authorization": f"Bearer {KEY}"}
        )
        health = await client.get("/health")  # liveness stays open
    for response in (missing, wrong, not_bearer, models, metrics):
        assert_error(response, 401, "invalid_api_key")
    assert right.status_code == 200
    assert health.status_code == 200
    assert len(posted(alpha)) == 1


@pytest.mark.asyncio
async def test_api_key_from_the_environment(alpha: FakeUpstream) -> None:
    environ = {"RYX_TEST_PROXY_KEY": "from-env"}
    cfg = config(alpha, api_key="env:RYX_TEST_PROXY_KEY")
    async with serve(cfg, environ=environ) as client:
        right = await client.get("/v1/models", headers={"Authorization": "Bearer from-env"})
        literal = await client.get(
            "/v1/models", headers={"Authorization": "Bearer env:RYX_TEST_PROXY_KEY"}
        )
    assert right.status_code == 200
    assert_error(literal, 401, "invalid_api_key")


@pytest.mark.asyncio
async def test_api_key_from_an_unset_variable_refuses_to_start(alpha: FakeUpstream) -> None:
    cfg = config(alpha, api_key="env:RYX_TEST_UNSET")
    with pytest.raises(ConfigError, match="RYX_TEST_UNSET"):
        async with running_proxy(cfg, environ={}):
            pass


@pytest.mark.asyncio
async def test_proxy_key_is_not_forwarded_upstream(alpha: FakeUpstream) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    async with serve(config(alpha, api_key=KEY), headers=auth) as client:
        response = await client.post("/v1/chat/completions", json=chat())
    assert response.status_code == 200
    [received] = posted(alpha)
    assert "authorization" not in received["headers"]


@pytest.mark.asyncio
async def test_client_authorization_is_forwarded_when_no_key_is_set(alpha: FakeUpstream) -> None:
    async with serve(config(alpha), headers={"Authorization": "Bearer upstream-key"}) as client:
        response = await client.post("/v1/chat/completions", json=chat())
    assert response.status_code == 200
    [received] = posted(alpha)
    assert received["headers"]["authorization"] == "Bearer upstream-key"


@pytest.mark.asyncio
async def test_non_loopback_host_without_key_refuses_to_start(alpha: FakeUpstream) -> None:
    cfg = config(alpha)  # the config itself is loopback; the override exposes it
    with pytest.raises(ConfigError, match="API key is required"):
        async with running_proxy(cfg, host="0.0.0.0"):
            pass


@pytest.mark.asyncio
async def test_non_loopback_host_with_key_starts_and_checks_the_key(alpha: FakeUpstream) -> None:
    async with serve(config(alpha, api_key=KEY), host="0.0.0.0") as client:
        anonymous = await client.get("/v1/models")
        keyed = await client.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"})
    assert_error(anonymous, 401, "invalid_api_key")
    assert keyed.status_code == 200


@pytest.mark.asyncio
async def test_control_endpoints_need_post_and_the_key(alpha: FakeUpstream) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    async with serve(config(alpha, api_key=KEY)) as client:
        no_key = await client.post("/api/instances/alpha/select")
        no_key_list = await client.get("/api/instances")
        get = await client.get("/api/instances/alpha/select", headers=auth)
        put = await client.put("/api/instances/alpha/start", headers=auth)
        keyed = await client.post("/api/instances/alpha/select", headers=auth)
        keyed_list = await client.get("/api/instances", headers=auth)
    assert_error(no_key, 401, "invalid_api_key")
    assert_error(no_key_list, 401, "invalid_api_key")
    for response in (get, put):
        assert_error(response, 405, "method_not_allowed")
        assert response.headers["Allow"] == "POST"
    assert keyed.status_code == 200 and keyed.json()["selected"] is True
    assert keyed_list.status_code == 200
