"""The two ways a request body is read: ``parse_small`` on the loop, ``parse_large`` in a thread.

``parse_large`` does not depend on the size of its input, so small bodies show here that it
finds what ``json.loads`` finds, refuses what it refuses, and that its ``model`` rewrite (a
splice into the bytes) gives the body ``json.loads`` would give with ``model`` replaced.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from ryx_desktop.proxy._body import LARGE_BODY, RequestBody, parse_large, parse_small
from ryx_desktop.proxy._errors import ProxyError

PARSERS = [parse_small, parse_large]
SERVED = 'served/näme "quoted"'

BODIES = {
    "model first": b'{"model": "a", "messages": [{"role": "user", "content": "hi"}]}',
    "model last, stream": b'{"messages": [], "stream": true, "model": "a"}',
    "model twice": b'{"model": "a", "x": {"model": "inner"}, "model" : "b" }',
    "no model": b'{"messages": [{"role": "user", "content": "hi"}], "stream": false}',
    "empty": b"{}",
    "empty with space": b"{ \n }",
    "model not a string": b'{"model": ["a", {"b": 1}], "n": 1.5e3}',
    "whitespace around": b' \r\n\t{ "model" :\n"a" , "stream" : true } \n',
    "stream a string": b'{"model": "a", "stream": "true"}',
    "non-ascii": '{"messages": [{"content": "日本語 ✓"}], "model": "ä", "z": "é"}'.encode(),
    "escapes": b'{"messages": ["\\u00e9\\n\\"", "\\ud83d\\ude00"], "model": "\\u00e4"}',
    "bom": '\ufeff{"messages": ["日本"], "model": "ä"}'.encode("utf-8"),
    "utf-16": '{"messages": ["日本"], "model": "ä", "stream": true}'.encode("utf-16-le"),
    "utf-32": '{"model": "a", "messages": ["x"]}'.encode("utf-32"),
}


def expected(raw: bytes) -> dict[str, Any]:
    body = json.loads(raw)
    body["model"] = SERVED
    return body


@pytest.mark.parametrize("parse", PARSERS)
@pytest.mark.parametrize("raw", BODIES.values(), ids=BODIES.keys())
def test_finds_what_json_loads_finds(parse: Callable[[bytes], RequestBody], raw: bytes) -> None:
    body = parse(raw)
    parsed = json.loads(raw)
    assert body.model == parsed.get("model")
    assert body.stream is (parsed.get("stream") is True)
    assert json.loads(body.with_model(SERVED)) == expected(raw)


UTF8_BODIES = {name: raw for name, raw in BODIES.items() if not name.startswith("utf-")}


@pytest.mark.parametrize("raw", UTF8_BODIES.values(), ids=UTF8_BODIES.keys())
def test_the_large_rewrite_changes_nothing_but_the_model(raw: bytes) -> None:
    body = parse_large(raw)
    assert body.raw is raw  # UTF-8 bodies are forwarded as they came
    prefix, suffix = body.with_model("m").split(b'"m"')
    if "model" in json.loads(raw):
        assert raw.startswith(prefix)
        assert raw.endswith(suffix)
    else:  # added in front of the other members
        assert raw.startswith(prefix.removesuffix(b'"model": '))
        assert raw.endswith(suffix.removeprefix(b", "))


def test_utf16_is_forwarded_as_utf8() -> None:
    raw = BODIES["utf-16"]
    body = parse_large(raw)
    assert body.raw == raw.decode("utf-16-le").encode()
    assert json.loads(body.with_model(SERVED).decode("utf-8")) == expected(raw)


def test_a_large_body_is_forwarded_as_it_came_when_the_model_is_kept() -> None:
    messages = [{"role": "user", "content": f"message {i} ✓"} for i in range(20_000)]
    raw = json.dumps({"messages": messages, "model": "x"}, ensure_ascii=False).encode()
    assert len(raw) > LARGE_BODY
    body = parse_large(raw)
    assert body.raw is raw
    assert body.model == "x"
    rewritten = body.with_model(SERVED)
    assert rewritten.startswith(raw[: raw.rindex(b'"model"')])
    assert json.loads(rewritten) == expected(raw)


REFUSED = {
    "truncated": (b'{"model": "a1", "messages": [', "invalid_json"),
    "empty": (b"", "invalid_json"),
    "not utf-8": (b"\xff\xfe\xfd", "invalid_json"),
    "trailing comma": (b'{"a": 1,}', "invalid_json"),
    "no colon": (b'{"a" 1}', "invalid_json"),
    "key not a string": (b"{1: 2}", "invalid_json"),
    "extra data": (b'{"a": 1} {}', "invalid_json"),
    "missing comma": (b'{"a": 1 "b": 2}', "invalid_json"),
    "bad value": (b'{"a": tru}', "invalid_json"),
    "no value": (b'{"a": }', "invalid_json"),
    "control character": (b'{"a": "x\ny"}', "invalid_json"),
    "array": (b"[1, 2]", "invalid_body"),
    "string": (b'"a string"', "invalid_body"),
    "null": (b"null", "invalid_body"),
    "broken array": (b"[1, 2", "invalid_json"),
}


@pytest.mark.parametrize("parse", PARSERS)
@pytest.mark.parametrize(("raw", "code"), REFUSED.values(), ids=REFUSED.keys())
def test_refuses_what_json_loads_refuses(
    parse: Callable[[bytes], RequestBody], raw: bytes, code: str
) -> None:
    with pytest.raises(ProxyError) as refused:
        parse(raw)
    assert refused.value.status == 400
    assert refused.value.code == code


DEEP = 100_000


@pytest.mark.parametrize("parse", PARSERS)
@pytest.mark.parametrize(
    "raw",
    [
        b'{"x":' + b"[" * DEEP + b"]" * DEEP + b"}",
        b'{"x":' + b'{"a":' * DEEP + b"1" + b"}" * DEEP + b"}",
        b"[" * DEEP + b"]" * DEEP,
    ],
    ids=["arrays", "objects", "top-level"],
)
def test_a_body_nested_too_deeply_is_invalid_json(
    parse: Callable[[bytes], RequestBody], raw: bytes
) -> None:
    with pytest.raises(ProxyError) as refused:
        parse(raw)
    assert (refused.value.status, refused.value.code) == (400, "invalid_json")
    assert "nested too deeply" in refused.value.message
