"""Starts of the real vLLM server that fail, and what ryx-desktop makes of them.

Each is a failure a user meets: a model whose kernels the backend refuses (vLLM's ``/health``
says 200 before any forward pass, so only the first answer shows it), a flag this vLLM does
not know (argparse exits 2), a model folder that is not there (nothing is created). Each must
end ``failed`` with vLLM's own reason in one sentence, a hint, and the log tail.
"""

from __future__ import annotations

from collections.abc import Callable

import docker
import pytest

from ryx_desktop.config import Config
from ryx_desktop.core.errors import ContainerExitedError, ModelPathMissingError
from ryx_desktop.core.states import InstanceState
from tests.real_vllm import provision
from tests.real_vllm.conftest import MakeSupervisor

pytestmark = pytest.mark.asyncio


async def test_a_model_that_cannot_answer_is_failed_not_ready(
    make_real_config: Callable[..., Config],
    tiny_model_h16: provision.TinyModel,
    supervisor: MakeSupervisor,
    remove_after: Callable[[str], str],
) -> None:
    # vLLM's CPU attention has no kernel for head_dim 16: the server comes up, /health says 200,
    # and the first request kills the engine. Without the first-answer check this was "ready".
    remove_after("ryx-vllm-h16")
    sup = supervisor(make_real_config({"h16": {"model": tiny_model_h16}}))
    await sup.open()
    with pytest.raises(ContainerExitedError) as caught:
        await sup.ensure_ready("h16")
    inst = sup.get("h16")
    assert inst.state is InstanceState.FAILED
    assert inst.failure is not None
    message = caught.value.message
    assert message.startswith("h16 failed to start: ")
    # vLLM's "Unsupported CPU attention configuration: head_dim=16", said in a user's words
    assert "the CPU backend cannot run this model's attention (head size 16)" in message, message
    assert inst.failure.message == message
    assert "head size the CPU build supports" in inst.failure.hint
    assert inst.failure.log_tail, "the failure keeps the log tail"


async def test_an_unknown_flag_is_failed_naming_the_flag(
    make_real_config: Callable[..., Config],
    tiny_model: provision.TinyModel,
    supervisor: MakeSupervisor,
    remove_after: Callable[[str], str],
) -> None:
    remove_after("ryx-vllm-flagged")
    config = make_real_config(
        {"flagged": {"model": tiny_model, "extra_args": ["--enforce-eager", "--no-such-flag"]}}
    )
    sup = supervisor(config)
    await sup.open()
    with pytest.raises(ContainerExitedError) as caught:
        await sup.ensure_ready("flagged")
    assert "--no-such-flag" in caught.value.message, caught.value.message
    assert "exited with code 2" in caught.value.message
    assert "extra_args" in caught.value.hint, caught.value.hint
    assert sup.get("flagged").state is InstanceState.FAILED


async def test_a_missing_model_folder_creates_nothing(
    make_real_config: Callable[..., Config],
    supervisor: MakeSupervisor,
    docker_client: docker.DockerClient,
) -> None:
    sup = supervisor(make_real_config({"gone": {"model": "/models/not-downloaded-yet"}}))
    await sup.open()
    with pytest.raises(ModelPathMissingError) as caught:
        await sup.ensure_ready("gone")
    assert "/models/not-downloaded-yet" in caught.value.message
    assert caught.value.hint
    assert sup.get("gone").state is InstanceState.FAILED
    assert docker_client.containers.list(all=True, filters={"name": "ryx-vllm-gone"}) == []
