"""Strict decoding of request values, without a model."""

from __future__ import annotations

import pytest

from service.errors import InvalidInput
from service.protocols import codec


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([1, True], "instances[0][1]: token ids must be integers, got a boolean"),
        ([1, 2.0], "instances[0][1]: token ids must be integers, got a number"),
        (["1"], "instances[0][0]: token ids must be integers, got a string"),
        ([2**70], "instances[0][0]: token id 1180591620717411303424 is outside the vocabulary"),
        ("1 2 3", "instances[0]: expected a list of token ids, got a string"),
    ],
)
def test_ids_are_strict_integers(value: object, message: str) -> None:
    with pytest.raises(InvalidInput) as error:
        codec.decode_ids(value, "instances[0]")
    assert error.value.message == message


def test_ids_decode_to_int64() -> None:
    assert codec.decode_ids([1, 2, 3], "x").dtype.name == "int64"


@pytest.mark.parametrize(
    "body",
    [b"{", b'{"a": NaN}', b'{"a": Infinity}', b'{"a": "\\ud800"}', b'{"a": "\xff"}', b"", b"[" * 2000 + b"]" * 2000],
)
def test_bad_json_is_invalid_input(body: bytes) -> None:
    with pytest.raises(InvalidInput):
        codec.parse_json(body)


def test_attention_choices() -> None:
    assert codec.decode_attention("none", "p") == frozenset()
    assert codec.decode_attention(["pooling", "rollout"], "p") == {"attention", "rollout"}
    assert codec.decode_attention("all", "p") == {"all"}
    with pytest.raises(InvalidInput, match="got 'everything'"):
        codec.decode_attention("everything", "p")


@pytest.mark.parametrize("text", ["0", "-1", "abc", "1.5", "99999999999999999999"])
def test_versions_must_be_positive_integers(text: str) -> None:
    with pytest.raises(InvalidInput):
        codec.parse_version(text)
