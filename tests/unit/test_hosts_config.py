"""``hosts:`` in the config and each model's ``host:``: what validates, what is refused, where."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from ryx_desktop.config import (
    Config,
    ConfigFileError,
    ModelConfig,
    dump_config,
    load_config,
    parse_config,
    save_config,
)
from ryx_desktop.config._hosts import HostConfig


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigFileError) as info:
        parse_config(text, "c.yaml")
    return info.value.errors


ALL_KINDS = """\
hosts:
  box2:
    url: ssh://me@box2:2222
    models_dir: /srv/vllm-models
    image: vllm/vllm-openai:v0.9.0
    ssh:
      identity_file: ~/.ssh/id_box2
      config_file: ~/.ssh/config
      options: [ServerAliveInterval=15, StrictHostKeyChecking accept-new]
  box3: {context: box3-ctx}
  second-engine: {url: "unix:///run/docker-b.sock"}
  lab: {url: "tcp://10.0.0.5:2376", tls: {ca: /etc/ryx/ca.pem, cert: ~/c.pem, key: ~/k.pem}}
  trusted: {url: "tcp://10.0.0.6:2375", insecure: true}
models:
  pinned: {model: /models/a, port: 8001, host: box2}
  anywhere: {model: /models/b, port: 8002, host: any}
  here: {model: /models/c, port: 8003}
  here-too: {model: /models/d, port: 8004, host: null}
  said-local: {model: /models/e, port: 8005, host: local}
  outside: {url: "http://127.0.0.1:9000"}
"""


def test_every_kind_of_host_validates() -> None:
    config = parse_config(ALL_KINDS, "c.yaml")
    hosts = config.hosts
    assert {name: host.kind for name, host in hosts.items()} == {
        "box2": "ssh",
        "box3": "context",
        "second-engine": "unix",
        "lab": "tcp",
        "trusted": "tcp",
    }
    box2 = hosts["box2"]
    assert box2.models_dir == PurePosixPath("/srv/vllm-models")
    assert box2.image == "vllm/vllm-openai:v0.9.0"
    assert box2.ssh is not None
    assert box2.ssh.identity_file == Path.home() / ".ssh/id_box2"  # a file on this machine
    assert box2.ssh.options == ("ServerAliveInterval=15", "StrictHostKeyChecking accept-new")
    lab = hosts["lab"]
    assert lab.tls is not None and lab.tls.verify is True
    assert (lab.tls.ca, lab.tls.cert) == (Path("/etc/ryx/ca.pem"), Path.home() / "c.pem")
    assert hosts["trusted"].insecure and hosts["trusted"].tls is None
    assert hosts["box3"].context == "box3-ctx" and hosts["box3"].url is None


def test_a_model_runs_on_the_local_engine_unless_it_names_a_host() -> None:
    models = parse_config(ALL_KINDS, "c.yaml").models
    hosts = {key: getattr(model, "host", None) for key, model in models.items()}
    assert hosts == {
        "pinned": "box2",
        "anywhere": "any",
        "here": "local",
        "here-too": "local",
        "said-local": "local",
        "outside": None,  # an external server has no host
    }


def test_no_hosts_section_and_an_empty_one_mean_no_extra_engine() -> None:
    assert parse_config("models: {}\n", "c.yaml").hosts == {}
    assert parse_config("hosts:\nmodels: {}\n", "c.yaml").hosts == {}
    assert ModelConfig(model="m", port=8001).host == "local"


@pytest.mark.parametrize(
    ("entry", "token", "error"),
    [
        (
            "{url: http://box2}",
            "http",
            "hosts.box2.url: url must be ssh://user@host[:port], "
            "unix:///path/to/docker.sock or tcp://host:port, got 'http://box2' "
            "(or use context: for a Docker context)",
        ),
        (
            "{url: 'unix://run/docker.sock'}",
            "'unix",
            "hosts.box2.url: a unix:// url needs an absolute socket path, "
            "like unix:///var/run/docker.sock",
        ),
        (
            "{url: 'ssh://me@box2:99999'}",
            "'ssh",
            "hosts.box2.url: the port in 'ssh://me@box2:99999' must be a number from 1 to 65535",
        ),
        (
            "{url: 'ssh://me@box2/srv'}",
            "'ssh",
            "hosts.box2.url: 'ssh://me@box2/srv' must not have a path: write ssh://me@box2",
        ),
        (
            "{url: 'ssh://me:secret@box2'}",
            "'ssh",
            "hosts.box2.url: a url must not hold a password: use a key "
            "(ssh: {identity_file: ...}) instead",
        ),
        (
            "{url: 'tcp://box2', insecure: true}",
            "'tcp",
            "hosts.box2.url: a tcp:// url needs a port, like tcp://box2:2376",
        ),
        (
            "{}",
            "box2",
            "hosts.box2: a host needs url: (ssh://user@host[:port], "
            "unix:///path/to/docker.sock or tcp://host:port) or context: (a Docker context name)",
        ),
        (
            "{url: 'ssh://box2', context: box2}",
            "context",
            "hosts.box2.context: set url or context, not both",
        ),
        (
            "{context: 'my context'}",
            "'my",
            "hosts.box2.context: 'my context' is not a Docker context name "
            "(`docker context ls` lists them)",
        ),
        (
            "{url: 'ssh://box2', models_dir: ~/models}",
            "~/models",
            "hosts.box2.models_dir: models_dir must be an absolute path on that "
            "host, like /srv/vllm-models, got '~/models' (`~` is not expanded there)",
        ),
        (
            "{url: 'ssh://box2', ssh: {options: [ServerAliveInterval=15, -v]}}",
            "-v",
            "hosts.box2.ssh.options[1]: ssh option '-v' must read Name=value, "
            "like ServerAliveInterval=15 (what `ssh -o` takes)",
        ),
        (
            "{url: 'ssh://box2', ssh: {identity: ~/.ssh/id}}",
            "identity",
            "hosts.box2.ssh.identity: unknown setting 'identity'",
        ),
        (
            "{url: 'unix:///run/d.sock', ssh: {config_file: /x}}",
            "ssh:",
            "hosts.box2.ssh: ssh settings only apply to an ssh:// url",
        ),
        (
            "{context: box2, tls: {cert: /c, key: /k}}",
            "tls",
            "hosts.box2.tls: tls settings only apply to a tcp:// url",
        ),
        (
            "{url: 'ssh://box2', insecure: true}",
            "insecure",
            "hosts.box2.insecure: insecure only applies to a tcp:// url",
        ),
        (
            "{url: 'tcp://box2:2376', tls: {cert: /c, key: /k}, insecure: true}",
            "insecure",
            "hosts.box2.insecure: insecure: true means no TLS, so it cannot go "
            "with tls: (remove one of them)",
        ),
        (
            "{url: 'tcp://box2:2376', tls: {ca: /ca.pem, cert: /c.pem}}",
            "tls",
            "hosts.box2.tls.key: tls needs key: the engine (dockerd --tlsverify) "
            "lets in only clients with a certificate it signed, so give both cert and key",
        ),
    ],
)
def test_each_mistake_in_a_host_is_told_where_it_is(entry: str, token: str, error: str) -> None:
    line = f"  box2: {entry}"
    column = line.index(token) + 1  # the mistake, or the key of the setting it is about
    assert errors_of(f"hosts:\n{line}\n") == [f"c.yaml:2:{column}: {error}"]


def test_tcp_without_tls_is_refused_with_the_way_out() -> None:
    [error] = errors_of("hosts:\n  lab:\n    url: tcp://10.0.0.5:2375\n")
    assert error.startswith("c.yaml:3:10: hosts.lab.url: a tcp:// engine needs tls: {ca, cert, ")
    assert "anyone who can reach the port controls Docker" in error
    assert "insecure: true only on a network you trust" in error
    # saying insecure: false out loud changes nothing
    [again] = errors_of("hosts:\n  lab: {url: 'tcp://10.0.0.5:2375', insecure: false}\n")
    assert "hosts.lab.url: a tcp:// engine needs tls:" in again


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "local",
            "'local' cannot name a host: `host: local` already means the engine of the docker: "
            "section; pick another name",
        ),
        (
            "any",
            "'any' cannot name a host: `host: any` already means any host with room; "
            "pick another name",
        ),
        (
            "Box_2",
            "host name 'Box_2' must be lowercase letters, digits and '-' (like gpu-box-2), "
            "starting and ending with a letter or digit",
        ),
        (
            "box-",
            "host name 'box-' must be lowercase letters, digits and '-' (like gpu-box-2), "
            "starting and ending with a letter or digit",
        ),
    ],
)
def test_reserved_and_malformed_host_names_are_refused_at_the_name(name: str, message: str) -> None:
    assert errors_of(f"hosts:\n  {name}: {{url: 'ssh://box2'}}\n") == [
        f"c.yaml:2:3: hosts.{name}: {message}"
    ]


def test_an_unknown_host_lists_the_known_ones() -> None:
    text = (
        "hosts:\n"
        "  box3: {url: 'ssh://box3'}\n"
        "  box2: {url: 'ssh://box2'}\n"
        "models:\n"
        "  a: {model: /models/a, port: 8001, host: box9}\n"
    )
    assert errors_of(text) == [
        "c.yaml:5:43: models.a.host: host 'box9' is not under hosts: (known: local, box2, box3; "
        "`any` lets ryx-desktop pick one)"
    ]
    [alone] = errors_of("models:\n  a: {model: /models/a, port: 8001, host: box2}\n")
    assert "host 'box2' is not under hosts: (known: local;" in alone


def test_an_external_model_cannot_have_a_host() -> None:
    text = "hosts:\n  box2: {url: 'ssh://box2'}\nmodels:\n  far: {url: 'http://x:9', host: box2}\n"
    assert errors_of(text) == [
        "c.yaml:4:28: models.far.host: a `url:` model is an external server that is never "
        "started, so it cannot also set host"
    ]


def test_host_problems_come_with_every_other_problem_at_once() -> None:
    text = (
        "hosts:\n"
        "  box2: {url: 'tcp://box2:2375'}\n"  # 2: no TLS
        "  local: {url: 'ssh://me@box4'}\n"  # 3: reserved
        "models:\n"
        "  a: {model: /models/a, port: 8001, host: box9}\n"  # 5: unknown host
        "  b: {model: /models/b, port: 8001, host: box2}\n"  # 6: port clash; box2 is known
        "  c: {model: /models/c, port: 8003, host: 7, max_model_len: 0}\n"  # 7: two bad values
    )
    errors = errors_of(text)
    assert [e.split(": ")[0:2] for e in errors] == [
        ["c.yaml:2:15", "hosts.box2.url"],
        ["c.yaml:3:3", "hosts.local"],
        ["c.yaml:5:43", "models.a.host"],
        ["c.yaml:6:31", "models.b.port"],
        ["c.yaml:7:43", "models.c.host"],
        ["c.yaml:7:61", "models.c.max_model_len"],
    ]
    assert "host 'box9' is not under hosts: (known: local, box2;" in errors[2]
    assert errors[4].endswith("expected text, got 7")


def test_a_broken_host_still_counts_as_known_to_its_models() -> None:
    # only the host's own mistake is told: fixing it leaves nothing wrong with the model
    text = "hosts:\n  box2: {url: 'ftp://box2'}\nmodels:\n  a: {model: m, port: 8001, host: box2}\n"
    [error] = errors_of(text)
    assert error.startswith("c.yaml:2:15: hosts.box2.url: url must be ssh://")


def test_hosts_that_are_not_a_mapping_are_one_problem() -> None:
    text = "hosts: [box2]\nmodels:\n  a: {model: m, port: 8001, host: box2}\n"
    assert errors_of(text) == ["c.yaml:1:8: hosts: expected a mapping, got a list"]


def test_hosts_and_model_hosts_round_trip_through_save_and_load(tmp_path: Path) -> None:
    config = parse_config(ALL_KINDS, "c.yaml")
    path = tmp_path / "config.yaml"
    save_config(config, path)
    assert load_config(path) == config
    text = path.read_text()
    assert "    url: ssh://me@box2:2222\n" in text
    assert "      identity_file: ~/.ssh/id_box2\n" in text  # local files stay home-relative
    assert "      cert: ~/c.pem\n" in text and "      ca: /etc/ryx/ca.pem\n" in text
    assert "    insecure: true\n" in text
    # host: is written only where it is not the default
    assert text.count("    host: ") == 2
    assert "    host: box2\n" in text and "    host: any\n" in text


def test_a_config_without_hosts_writes_no_hosts_section() -> None:
    config = Config(models={"a": ModelConfig(model="m", port=8001)})
    text = dump_config(config)
    assert "hosts" not in text and "host:" not in text.split("models:")[1]
    assert parse_config(text, "c.yaml") == config


def test_a_host_built_in_code_reports_its_kind() -> None:
    assert HostConfig(url="ssh://box2").kind == "ssh"
    assert HostConfig(url="unix:///run/d.sock").kind == "unix"
    assert HostConfig(url="tcp://h:2375", insecure=True).kind == "tcp"
    assert HostConfig(context="c").kind == "context"
