"""The official ``openai`` client against the proxy, in front of an external model."""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest
import pytest_asyncio
from openai import AsyncOpenAI

from tests.fake_vllm.server import embedding_for
from tests.proxy.helpers import external, make_config
from tests.support.proxy import running_proxy
from tests.support.upstream import FakeUpstream

SERVED = "alpha-served"
#: How to name the model: its served name, an alias, or not at all ("": the selected model).
NAMES = [SERVED, "first", ""]


@pytest_asyncio.fixture
async def openai_client(alpha: FakeUpstream, beta: FakeUpstream) -> AsyncIterator[AsyncOpenAI]:
    config = make_config(
        {
            "alpha": external(alpha, SERVED, "first"),
            "beta": external(beta, "beta-served", "second"),
        },
        default_model="alpha",
    )
    async with running_proxy(config) as proxy:
        client = AsyncOpenAI(base_url=f"{proxy.base}/v1", api_key="x", max_retries=0, timeout=10)
        try:
            yield client
        finally:
            await client.close()


def reply(prompt: str) -> str:
    """What the fake answers as ``alpha-served``."""
    return f"fake reply from {SERVED} to: {prompt}"


@pytest.mark.asyncio
@pytest.mark.parametrize("model", NAMES)
async def test_chat(openai_client: AsyncOpenAI, alpha: FakeUpstream, model: str) -> None:
    raw = await openai_client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hello there"}]
    )
    assert raw.headers["x-ryx-model"] == "alpha"
    completion = raw.parse()
    assert completion.model == SERVED
    assert completion.choices[0].message.content == reply("hello there")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == len(reply("hello there").split())
    [received] = [r for r in alpha.requests() if r["method"] == "POST"]
    assert received["json"]["model"] == SERVED


@pytest.mark.asyncio
@pytest.mark.parametrize("model", NAMES)
async def test_streaming_chat(openai_client: AsyncOpenAI, model: str) -> None:
    stream = await openai_client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "stream me"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    deltas: list[str] = []
    finish: list[str] = []
    usage = None
    async with stream:
        async for chunk in stream:
            assert chunk.model == SERVED
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                if choice.delta.content:
                    deltas.append(choice.delta.content)
                if choice.finish_reason:
                    finish.append(choice.finish_reason)
    assert "".join(deltas) == reply("stream me")
    tokens = len(reply("stream me").split())
    assert len(deltas) == tokens  # one chunk per token: relayed, not merged
    assert finish == ["stop"]  # the stream ran to its end ([DONE] ended the iteration)
    assert usage is not None and usage.completion_tokens == tokens


@pytest.mark.asyncio
@pytest.mark.parametrize("model", NAMES)
async def test_completions(openai_client: AsyncOpenAI, model: str) -> None:
    completion = await openai_client.completions.create(model=model, prompt="once upon")
    assert completion.model == SERVED
    assert completion.choices[0].text == reply("once upon")


@pytest.mark.asyncio
async def test_streaming_completions(openai_client: AsyncOpenAI) -> None:
    stream = await openai_client.completions.create(model="first", prompt="a b c", stream=True)
    async with stream:
        texts = [chunk.choices[0].text async for chunk in stream if chunk.choices]
    assert "".join(texts) == reply("a b c")


@pytest.mark.asyncio
@pytest.mark.parametrize("model", NAMES)
async def test_embeddings(openai_client: AsyncOpenAI, model: str) -> None:
    result = await openai_client.embeddings.create(model=model, input=["red", "blue"])
    assert result.model == SERVED
    assert [item.embedding for item in result.data] == [embedding_for("red"), embedding_for("blue")]


@pytest.mark.asyncio
async def test_models_list(openai_client: AsyncOpenAI) -> None:
    page = await openai_client.models.list()
    models = {model.id: model for model in page.data}
    assert list(models) == [SERVED, "beta-served"]  # served names, in config order
    alpha, beta = models[SERVED], models["beta-served"]
    assert alpha.object == "model" and alpha.owned_by == "ryx-desktop"
    extra = alpha.model_extra or {}
    assert extra["state"] == "ready"
    assert extra["aliases"] == ["first"]
    assert extra["key"] == "alpha"
    assert extra["selected"] is True
    assert (beta.model_extra or {})["aliases"] == ["second"]
    assert (beta.model_extra or {})["selected"] is False


@pytest.mark.asyncio
async def test_retrieve_one_model(openai_client: AsyncOpenAI) -> None:
    model = await openai_client.models.retrieve("second")
    assert model.id == "beta-served"
    assert (model.model_extra or {})["key"] == "beta"


@pytest.mark.asyncio
async def test_proxy_errors_parse_as_openai_errors(alpha: FakeUpstream) -> None:
    """The client reads the proxy's error bodies as its own: status, code and message."""
    config = make_config(
        {"alpha": external(alpha, SERVED)}, api_key="the-key", fallback_unknown=False
    )
    async with running_proxy(config) as proxy:
        base = f"{proxy.base}/v1"
        keyed = AsyncOpenAI(base_url=base, api_key="the-key", max_retries=0, timeout=10)
        wrong = AsyncOpenAI(base_url=base, api_key="wrong", max_retries=0, timeout=10)
        try:
            completion = await keyed.completions.create(model=SERVED, prompt="p")
            with pytest.raises(openai.AuthenticationError) as refused:
                await wrong.completions.create(model=SERVED, prompt="p")
            with pytest.raises(openai.NotFoundError) as unknown:
                await keyed.completions.create(model="gpt-4o", prompt="p")
        finally:
            await keyed.close()
            await wrong.close()
    assert completion.choices[0].text == reply("p")
    assert refused.value.status_code == 401
    assert refused.value.code == "invalid_api_key"
    assert unknown.value.status_code == 404
    assert unknown.value.code == "model_not_found"
    assert "gpt-4o" in unknown.value.message
    [received] = [r for r in alpha.requests() if r["method"] == "POST"]
    assert "authorization" not in received["headers"]  # the proxy's key stays here
