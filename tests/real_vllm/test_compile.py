"""torch.compile on the real server: its cache kept between starts, and its failure found.

Without ``--enforce-eager`` vLLM compiles the model's graphs at every start unless its cache
(``/root/.cache/vllm``) outlives the container: ``docker.vllm_cache`` keeps it on the host, so a
second start finds what the first compiled, and is faster. And when compiling fails (here: no
C++ compiler, made so with ``CXX`` pointing nowhere), vLLM's last lines are a generic "Engine
core initialization failed. See root cause above."; the cause, far above them, is the reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from ryx_desktop.config import Config
from ryx_desktop.core.errors import ContainerExitedError
from ryx_desktop.core.states import InstanceState
from tests.real_vllm import provision
from tests.real_vllm.conftest import MakeSupervisor

pytestmark = pytest.mark.asyncio

#: Like the other tests' flags, but compiled: no --enforce-eager.
COMPILED = ["--dtype", "float32"]
#: What vLLM 0.32 logs when it saves its compiled model into its cache, and when a later start
#: finds it there (loaded, or found and compiled again after a load failure).
_AOT_SAVED = re.compile(r"saved AOT compiled function to (?P<path>/root/\.cache/vllm/\S+)")
_AOT_LOADED = re.compile(
    r"(?:Directly load AOT compilation from path|due to a load failure from) "
    r"(?P<path>/root/\.cache/vllm/[^\s,]+)"
)
_INIT_ENGINE = re.compile(r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+) s")


def _log(client: docker.DockerClient, name: str) -> str:
    return bytes(client.containers.get(name).logs()).decode("utf-8", "replace")


async def test_the_second_start_finds_the_compile_cache_and_is_faster(
    make_real_config: Callable[..., Config],
    tiny_model: provision.TinyModel,
    supervisor: MakeSupervisor,
    docker_client: docker.DockerClient,
    remove_after: Callable[[str], str],
    tmp_path: Path,
) -> None:
    cache = tmp_path / "vllm-cache"
    config = make_real_config(
        {"compiled": {"model": tiny_model, "extra_args": COMPILED}},
        docker={"vllm_cache": str(cache)},
    )
    name = remove_after("ryx-vllm-compiled")
    sup = supervisor(config)
    await sup.open()

    assert (await sup.ensure_ready("compiled")).state is InstanceState.READY
    first = _log(docker_client, name)
    await sup.stop("compiled")
    saved = _AOT_SAVED.search(first)
    assert saved is not None, first[-3000:]
    assert _AOT_LOADED.search(first) is None
    assert any((cache / "torch_compile_cache").rglob("*")), "nothing in docker.vllm_cache"

    assert (await sup.ensure_ready("compiled")).state is InstanceState.READY
    second = _log(docker_client, name)
    await sup.stop("compiled")
    # The second start finds what the first saved, at the same path in the kept folder. (vLLM
    # 0.32's CPU build then fails to finalise it, "'function' object has no attribute
    # 'finalize_loading'", and compiles again: still faster, as the figures below show.)
    loaded = _AOT_LOADED.search(second)
    assert loaded is not None, second[-3000:]
    assert loaded["path"] == saved["path"]
    # vLLM's own figure for building its engine (warm-up and compile included).
    took_first = float(_INIT_ENGINE.findall(first)[-1])
    took_second = float(_INIT_ENGINE.findall(second)[-1])
    assert took_second < took_first, (took_first, took_second)


async def test_a_cause_far_above_the_tail_is_the_reason(
    make_real_config: Callable[..., Config],
    tiny_model: provision.TinyModel,
    supervisor: MakeSupervisor,
    remove_after: Callable[[str], str],
    tmp_path: Path,
) -> None:
    remove_after("ryx-vllm-nocc")
    config = make_real_config(
        {
            "nocc": {
                "model": tiny_model,
                "extra_args": COMPILED,
                "env": {"CXX": "/usr/bin/no-such-compiler"},
            }
        },
        docker={"vllm_cache": str(tmp_path / "empty-cache")},
    )
    sup = supervisor(config)
    await sup.open()
    with pytest.raises(ContainerExitedError) as caught:
        await sup.ensure_ready("nocc")
    failure = sup.get("nocc").failure
    assert sup.get("nocc").state is InstanceState.FAILED
    assert failure is not None
    assert "torch.compile found no working C++ compiler in the image" in failure.message
    assert "--enforce-eager" in failure.hint
    assert caught.value.message == failure.message
    # The evidence is far above the tail the user sees, which ends in the generic line.
    assert not any("C++ compiler" in line for line in failure.log_tail), failure.log_tail
    assert any("Engine core initialization failed" in line for line in failure.log_tail)
