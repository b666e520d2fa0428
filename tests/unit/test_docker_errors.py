"""The translation of docker SDK exceptions into user-facing errors, with real exception objects.

The texts below are what Docker 20.10 and the docker SDK 7 really say (captured from a live engine).
"""

from __future__ import annotations

import docker.errors
import pytest
import requests
import requests.exceptions
import urllib3.exceptions

from ryx_desktop.adapters._docker_errors import (
    conflicting_port,
    connection_problem,
    image_missing,
    is_port_conflict,
    pull_failed,
    short_reason,
    translate,
)
from ryx_desktop.core.errors import (
    DockerError,
    DockerPermissionError,
    DockerUnavailableError,
    ImageMissingError,
    NoGpuRuntimeError,
    PortInUseError,
    RyxError,
)

START_URL = "http+docker://localhost/v1.41/containers/f4c9/start"
PORT_ALLOCATED = (
    "driver failed programming external connectivity on endpoint ryx-vllm-b (c142): "
    "Bind for 127.0.0.1:8001 failed: port is already allocated"
)
ADDRESS_IN_USE = (
    "driver failed programming external connectivity on endpoint ryx-vllm-b (0430): "
    "Error starting userland proxy: listen tcp4 127.0.0.1:18002: bind: address already in use"
)
NO_GPU = 'could not select device driver "" with capabilities: [[gpu]]'
NO_SUCH_HOST = (
    'Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io on '
    "10.255.255.53:53: no such host"
)


def api_error(
    explanation: str,
    status: int = 500,
    url: str = START_URL,
    cls: type[docker.errors.APIError] = docker.errors.APIError,
) -> docker.errors.APIError:
    """An APIError as the SDK raises it: an HTTP response plus Docker's explanation."""
    response = requests.Response()
    response.status_code = status
    response.reason = {404: "Not Found", 409: "Conflict", 400: "Bad Request"}.get(
        status, "Internal Server Error"
    )
    response.url = url
    kind = "Client" if status < 500 else "Server"
    message = f"{status} {kind} Error: {response.reason} for url: {url}"
    return cls(message, response=response, explanation=explanation)


def sdk_connection_error(inner: OSError) -> docker.errors.DockerException:
    """What ``docker.from_env()`` raises when it cannot fetch the API version."""
    cause = requests.exceptions.ConnectionError(
        urllib3.exceptions.ProtocolError("Connection aborted.", inner)
    )
    try:
        try:
            raise cause
        except requests.exceptions.ConnectionError as exc:
            raise docker.errors.DockerException(
                f"Error while fetching server API version: {exc}"
            ) from exc
    except docker.errors.DockerException as outer:
        return outer


def assert_one_line(error: RyxError) -> None:
    assert error.message
    assert "\n" not in error.message
    assert error.hint
    assert str(error) == error.message


# --------------------------------------------------------------------------- engine unreachable


def test_socket_file_missing_names_the_address() -> None:
    exc = sdk_connection_error(FileNotFoundError(2, "No such file or directory"))
    error = translate(exc, address="unix:///nonexistent.sock")
    assert isinstance(error, DockerUnavailableError)
    assert error.message == (
        "no Docker engine answers at unix:///nonexistent.sock (socket file not found)"
    )
    assert "systemctl start docker" in error.hint
    assert_one_line(error)


def test_stringified_sdk_error_without_cause_is_understood() -> None:
    # docker.from_env() chains nothing in some paths: only the text tells.
    exc = docker.errors.DockerException(
        "Error while fetching server API version: ('Connection aborted.', "
        "FileNotFoundError(2, 'No such file or directory'))"
    )
    error = translate(exc, address="unix:///nonexistent/docker.sock")
    assert isinstance(error, DockerUnavailableError)
    assert "unix:///nonexistent/docker.sock" in error.message
    assert "socket file not found" in error.message


def test_connection_refused_over_tcp() -> None:
    exc = docker.errors.DockerException(
        "Error while fetching server API version: HTTPConnectionPool(host='127.0.0.1', port=1): "
        'Max retries exceeded with url: /version (Caused by NewConnectionError("HTTPConnection'
        "(host='127.0.0.1', port=1): Failed to establish a new connection: [Errno 111] "
        'Connection refused"))'
    )
    error = translate(exc, address="tcp://127.0.0.1:1")
    assert isinstance(error, DockerUnavailableError)
    assert error.message == "no Docker engine answers at tcp://127.0.0.1:1 (connection refused)"


def test_engine_gone_mid_session_is_unavailable() -> None:
    exc = requests.exceptions.ConnectionError(
        urllib3.exceptions.ProtocolError(
            "Connection aborted.", ConnectionRefusedError(111, "Connection refused")
        )
    )
    error = translate(exc, address="unix:///var/run/docker.sock")
    assert isinstance(error, DockerUnavailableError)
    assert "(connection refused)" in error.message


def test_default_address_when_none_given() -> None:
    exc = sdk_connection_error(FileNotFoundError(2, "No such file or directory"))
    assert "unix:///var/run/docker.sock" in translate(exc).message


def test_permission_denied_on_the_socket() -> None:
    exc = sdk_connection_error(PermissionError(13, "Permission denied"))
    error = translate(exc, address="unix:///var/run/docker.sock")
    assert isinstance(error, DockerPermissionError)
    assert error.message == (
        "permission denied on the Docker socket at unix:///var/run/docker.sock: "
        "this user may not use Docker"
    )
    assert "usermod -aG docker" in error.hint
    assert connection_problem(exc) == "permission"


def test_api_errors_are_never_connection_problems() -> None:
    assert connection_problem(api_error("permission denied while mounting")) is None


# --------------------------------------------------------------------------- images


def test_image_not_found_on_create() -> None:
    exc = api_error(
        "No such image: ryx-test/does-not-exist:1",
        404,
        "http+docker://localhost/v1.41/containers/create?name=ryx-x",
        docker.errors.ImageNotFound,
    )
    error = translate(exc)
    assert isinstance(error, ImageMissingError)
    assert "image ryx-test/does-not-exist:1 is not available locally" in error.message
    assert "docker pull" in error.hint
    assert_one_line(error)


def test_image_named_by_the_caller_wins() -> None:
    exc = api_error("No such image: x:1", 404, cls=docker.errors.ImageNotFound)
    assert (
        "image vllm/vllm-openai:latest " in translate(exc, image="vllm/vllm-openai:latest").message
    )


def test_pull_without_registry() -> None:
    exc = api_error(NO_SUCH_HOST, 500, "http+docker://localhost/v1.41/images/create")
    error = pull_failed("ryx-test/does-not-exist:1", exc)
    assert isinstance(error, ImageMissingError)
    assert error.message == (
        "image ryx-test/does-not-exist:1 is not available locally and could not be pulled: "
        "cannot resolve registry-1.docker.io (no such host)"
    )
    assert "docker load" in error.hint


def test_pull_with_engine_down_stays_an_engine_problem() -> None:
    exc = sdk_connection_error(ConnectionRefusedError(111, "Connection refused"))
    assert isinstance(pull_failed("x:1", exc, address="tcp://h:2375"), DockerUnavailableError)


def test_pull_refused_with_404_is_a_pull_failure() -> None:
    exc = api_error(
        "pull access denied for ryx-test/nope, repository does not exist or may require "
        "'docker login': denied: requested access to the resource is denied",
        404,
        "http+docker://localhost/v1.41/images/create?tag=1&fromImage=ryx-test%2Fnope",
        docker.errors.ImageNotFound,
    )
    error = pull_failed("ryx-test/nope:1", exc)
    assert isinstance(error, ImageMissingError)
    assert error.message == (
        "image ryx-test/nope:1 is not available locally and could not be pulled: "
        "pull access denied for ryx-test/nope, repository does not exist or may require "
        "'docker login': denied: requested access to the resource is denied"
    )


def test_pull_access_denied() -> None:
    reason = (
        "pull access denied for ryx-test/nope, repository does not exist or may require "
        "'docker login': denied: requested access to the resource is denied"
    )
    error = image_missing("ryx-test/nope:1", reason)
    assert error.message.startswith(
        "image ryx-test/nope:1 is not available locally and could not be pulled: "
        "pull access denied for ryx-test/nope"
    )


@pytest.mark.parametrize(
    ("text", "short"),
    [
        (NO_SUCH_HOST, "cannot resolve registry-1.docker.io (no such host)"),
        (
            'Get "https://r.example/v2/": dial tcp 10.0.0.1:443: connect: connection refused',
            "cannot connect to 10.0.0.1:443 (connection refused)",
        ),
        (
            "manifest for x:1 not found: manifest unknown: manifest unknown",
            "manifest for x:1 not found: manifest unknown",
        ),
        ("", "unknown reason"),
        ("x" * 500, "x" * 199 + "…"),
    ],
)
def test_short_reason(text: str, short: str) -> None:
    assert short_reason(text) == short


# --------------------------------------------------------------------------- ports


def test_port_allocated_by_one_of_our_containers() -> None:
    exc = api_error(PORT_ALLOCATED)
    assert is_port_conflict(exc)
    assert conflicting_port(exc) == 8001
    error = translate(exc, port=8001, port_holder="ryx-vllm-medium-general")
    assert isinstance(error, PortInUseError)
    assert error.message == "port 8001 is already used by container ryx-vllm-medium-general"
    assert "another `port:`" in error.hint
    assert_one_line(error)


def test_port_held_by_a_plain_program() -> None:
    exc = api_error(ADDRESS_IN_USE)
    assert conflicting_port(exc) == 18002
    error = translate(exc, port=18002)
    assert isinstance(error, PortInUseError)
    assert error.message == "port 18002 is already in use by another program"


def test_port_from_ipv6_binding_and_from_the_caller() -> None:
    assert conflicting_port(api_error("Bind for :::8003 failed: port is already allocated")) == 8003
    vague = api_error("port is already allocated")
    assert conflicting_port(vague) is None
    assert translate(vague, port=8004).message == "port 8004 is already in use by another program"


def test_not_a_port_conflict() -> None:
    assert not is_port_conflict(api_error(NO_GPU))
    assert conflicting_port(api_error(NO_GPU)) is None


# --------------------------------------------------------------------------- GPUs, names, rest


def test_no_gpu_runtime() -> None:
    error = translate(api_error(NO_GPU), action="start container ryx-vllm-medium-general")
    assert isinstance(error, NoGpuRuntimeError)
    assert error.message == (
        f"Docker has no GPU runtime to give GPUs to container ryx-vllm-medium-general ({NO_GPU})"
    )
    assert "NVIDIA container toolkit" in error.hint
    assert "devices: none" in error.hint


def test_name_conflict() -> None:
    exc = api_error(
        'Conflict. The container name "/ryx-vllm-x" is already in use by container "64d8". '
        "You have to remove (or rename) that container to be able to reuse that name.",
        409,
    )
    error = translate(exc, action="create container ryx-vllm-x")
    assert type(error) is DockerError
    assert error.message == "the container name ryx-vllm-x is already taken by another container"
    assert "docker rm -f ryx-vllm-x" in error.hint


def test_missing_bind_source() -> None:
    exc = api_error(
        'invalid mount config for type "bind": bind source path does not exist: /nonexist/x', 400
    )
    error = translate(exc)
    assert type(error) is DockerError
    assert error.message == "the folder /nonexist/x to mount into the container does not exist"
    assert "docker.models_dir" in error.hint


def test_anything_else_keeps_dockers_explanation() -> None:
    exc = api_error(
        "You cannot remove a running container 64d8. Stop the container before attempting "
        "removal or force remove",
        409,
    )
    error = translate(exc, action="remove container 64d8")
    assert type(error) is DockerError
    assert error.message == (
        "Docker could not remove container 64d8: You cannot remove a running container 64d8. "
        "Stop the container before attempting removal or force remove"
    )
    assert "docker info" in error.hint


def test_not_found_without_action() -> None:
    exc = api_error("No such container: nope", 404, cls=docker.errors.NotFound)
    error = translate(exc)
    assert type(error) is DockerError
    assert error.message == "Docker failed: No such container: nope"


def test_timeout_and_unknown_exceptions() -> None:
    timeout = translate(requests.exceptions.ReadTimeout("read timed out"), address="unix:///s")
    assert type(timeout) is DockerError
    assert timeout.message == "the Docker engine at unix:///s did not answer in time"
    other = translate(ValueError("bad\nthing"), action="list containers")
    assert type(other) is DockerError
    assert other.message == "Docker could not list containers: bad thing"


def test_ryx_errors_pass_through() -> None:
    error = PortInUseError("port 1 is taken")
    assert translate(error) is error
