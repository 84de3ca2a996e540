"""NATS subjects and stream names built from records."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from citymesh.protocol.errors import BadIdentityError, InvalidRecordError
from citymesh.protocol.identity import identity_of, identity_text
from citymesh.protocol.records import KINDS, Record
from citymesh.protocol.subjects import (
    author_filter,
    check_network,
    kind_filter,
    network_filter,
    stream_name,
    subject,
    subject_of,
)

from .builders import NETWORK, make_genesis, secret_key

TOKEN = re.compile(r"\A[a-z0-9_-]+\Z")
"""What citymesh writes into a subject token: never '.', '*', '>', whitespace or anything else."""
STREAM = re.compile(r"\A[A-Z0-9_]+\Z")

GOOD_NETWORKS = ["a", "0", "uclg", "eurocities", "city-net-2", "a" * 32, "x-y"]
BAD_NETWORKS = [
    "", "UCLG", "Uclg", "-uclg", "uclg-", "uc.lg", "uclg.", "uc*", "*", ">", "uc>lg", "uc lg",
    " uclg", "uclg ", "uclg\n", "uclg\t", "uc_lg", "a" * 33, "ucl\u0261", "uclg\u00a0", "ü",
    "uclg\x00", "١٢٣",
]  # fmt: skip


def _authors() -> list[bytes]:
    return [identity_of(make_genesis(secret_key(n))) for n in range(5)] + [bytes(20), b"\xff" * 20]


@pytest.mark.parametrize("network", GOOD_NETWORKS)
def test_subject_tokens_are_valid_nats_tokens(network: str) -> None:
    for author in _authors():
        for kind in KINDS:
            name = subject(network, author, kind)
            tokens = name.split(".")
            assert tokens == ["cm", network, identity_text(author), kind]
            for token in tokens:
                assert TOKEN.match(token), token
                assert not set(token) & {".", "*", ">", " ", "\t", "\r", "\n"}
            assert name.isascii()


def test_subject_of_a_record(every_kind: dict[str, Record]) -> None:
    for kind, record in every_kind.items():
        assert subject_of(record) == f"cm.{NETWORK}.{identity_text(record.author)}.{kind}"


def test_filters() -> None:
    author = _authors()[0]
    assert network_filter("uclg") == "cm.uclg.>"
    assert author_filter("uclg", author) == f"cm.uclg.{identity_text(author)}.*"
    assert kind_filter("uclg", "rating") == "cm.uclg.*.rating"
    # Every filter's literal tokens are plain tokens; wildcards only where meant, whole tokens.
    for pattern in (
        network_filter("uclg"),
        author_filter("uclg", author),
        kind_filter("uclg", "head"),
    ):
        for token in pattern.split("."):
            assert token in {"*", ">"} or TOKEN.match(token)


@pytest.mark.parametrize("network", BAD_NETWORKS)
def test_bad_network_names_are_refused(network: str) -> None:
    author = _authors()[0]
    builders: list[Callable[[], object]] = [
        lambda: check_network(network),
        lambda: subject(network, author, "rating"),
        lambda: network_filter(network),
        lambda: author_filter(network, author),
        lambda: kind_filter(network, "rating"),
        lambda: stream_name(network),
    ]
    for build in builders:
        with pytest.raises(InvalidRecordError) as info:
            build()
        assert info.value.field == "network"
        assert info.value.code == "invalid"


@pytest.mark.parametrize("kind", ["", "poll", "rating.x", "*", ">", "Rating", "rating "])
def test_unknown_kinds_are_refused(kind: str) -> None:
    with pytest.raises(InvalidRecordError):
        subject("uclg", _authors()[0], kind)
    with pytest.raises(InvalidRecordError):
        kind_filter("uclg", kind)


def test_author_must_be_an_identity() -> None:
    with pytest.raises(BadIdentityError):
        subject("uclg", bytes(32), "rating")


def test_stream_names() -> None:
    names = {stream_name(n) for n in GOOD_NETWORKS}
    assert len(names) == len(GOOD_NETWORKS)
    for n in GOOD_NETWORKS:
        assert STREAM.match(stream_name(n))
    assert stream_name("city-net-2") == "CM_CITY_NET_2"
