"""The published test vectors (protocol/vectors/, PROTOCOL.md §11) agree with the library.

Every envelope vector opens to exactly its expected outcome; its hex fields are consistent with
each other (message = context + payload, id = SHA-256(message), the signature verifies exactly
when the vector says so); the key and identity vectors match; and the files are what the
generator writes today.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import nacl.exceptions
import nacl.signing
import pytest

from citymesh.protocol import codec, textform
from citymesh.protocol.envelope import open_envelope, split_envelope
from citymesh.protocol.errors import ERROR_CODES, ProtocolError
from citymesh.protocol.identity import (
    Genesis,
    SecretKey,
    fingerprint,
    identity_of,
    next_key_commitment,
    parse_identity,
    parse_public_key,
    public_key_text,
)
from citymesh.protocol.records import KINDS
from citymesh.protocol.signing import SIGNING_CONTEXT, rotation_message, verify_detached
from citymesh.protocol.subjects import subject_of

VECTORS = Path(__file__).resolve().parents[2] / "protocol" / "vectors"
ENVELOPE_FILES = ("valid.json", "invalid.json", "limits.json")


def _load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


def _envelope_vectors() -> list[dict[str, Any]]:
    return [vector for name in ENVELOPE_FILES for vector in _load(name)]


ALL = _envelope_vectors()
IDENTITIES = _load("identities.json")


@functools.cache
def _generator() -> ModuleType:
    """The generator script, imported from its path (it is not part of the package)."""
    spec = importlib.util.spec_from_file_location(
        "citymesh_make_vectors", VECTORS / "make_vectors.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ids(vectors: list[dict[str, Any]]) -> list[str]:
    return [v["description"][:70] for v in vectors]


def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(value))


@pytest.mark.parametrize("vector", ALL, ids=_ids(ALL))
def test_envelope_vector_opens_as_expected(vector: dict[str, Any]) -> None:
    envelope = bytes.fromhex(vector["envelope_hex"])
    if vector["valid"]:
        record = open_envelope(envelope, now_ms=vector["now_ms"])
        assert record.id.hex() == vector["id_hex"]
        assert record.payload.hex() == vector["payload_hex"]
        assert record.envelope == envelope
        assert subject_of(record) == vector["subject"]
        assert _as_json(_generator().record_json(record)) == vector["record"]
        assert vector["record"]["kind"] == record.kind
        assert "error" not in vector
    else:
        with pytest.raises(ProtocolError) as caught:
            open_envelope(envelope, now_ms=vector["now_ms"])
        assert caught.value.code == vector["error"], str(caught.value)
        assert "record" not in vector


@pytest.mark.parametrize("vector", ALL, ids=_ids(ALL))
def test_envelope_vector_bytes_are_consistent(vector: dict[str, Any]) -> None:
    payload = bytes.fromhex(vector["payload_hex"])
    message = bytes.fromhex(vector["message_hex"])
    signature = bytes.fromhex(vector["signature_hex"])
    public_key = bytes.fromhex(vector["public_key_hex"])
    assert message == SIGNING_CONTEXT + payload
    assert hashlib.sha256(message).hexdigest() == vector["id_hex"]
    assert textform.decode("cmpk", vector["public_key"], length=32, what="key") == public_key
    assert _pynacl_verifies(public_key, message, signature) is vector["signature_valid"]
    if vector["valid"]:
        assert vector["signature_valid"]
        envelope = bytes.fromhex(vector["envelope_hex"])
        assert split_envelope(envelope) == (payload, signature)
        assert codec.check_canonical(envelope, what="envelope") is not None
        verify_detached(public_key, message, signature)
        values = codec.decode_generic(payload)
        if values["seq"] == 1:
            # The payload is canonical, so re-encoding its genesis gives the bytes as signed.
            genesis = codec.encode(values["genesis"])
            derived = hashlib.sha256(b"citymesh/identity/v1\x00" + genesis).digest()[:20]
            assert derived.hex() == vector["record"]["author"]


def _pynacl_verifies(public_key: bytes, message: bytes, signature: bytes) -> bool:
    if len(public_key) != 32 or len(signature) != 64:
        return False
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except nacl.exceptions.BadSignatureError:
        return False
    return True


def test_vectors_cover_every_kind_and_error_code() -> None:
    kinds = {v["record"]["kind"] for v in ALL if v["valid"]}
    assert kinds == set(KINDS)
    errors = {v["error"] for v in ALL if not v["valid"]}
    assert errors <= set(ERROR_CODES)
    # "chain" needs an author's other records; a single envelope never raises it.
    assert errors == set(ERROR_CODES) - {"chain"}
    assert len({v["description"] for v in ALL}) == len(ALL)


def test_vector_files_are_up_to_date() -> None:
    files = _generator().build_files()
    assert sorted(files) == sorted((*ENVELOPE_FILES, "identities.json"))
    for name, text in files.items():
        on_disk = (VECTORS / name).read_text(encoding="utf-8")
        assert on_disk == text, f"{name} is stale: run python protocol/vectors/make_vectors.py"


@pytest.mark.parametrize("key", IDENTITIES["keys"], ids=lambda k: k["name"])
def test_key_vectors(key: dict[str, Any]) -> None:
    secret = SecretKey(bytes.fromhex(key["seed_hex"]))
    public = secret.public_key
    assert public.hex() == key["public_key_hex"]
    assert secret.to_text() == key["secret_key"]
    assert SecretKey.from_text(key["secret_key"]).public_key == public
    assert public_key_text(public) == key["public_key"]
    assert parse_public_key(key["public_key"]) == public
    assert fingerprint(public) == key["fingerprint"]
    assert next_key_commitment(public).hex() == key["next_key_commitment_hex"]
    assert (
        hashlib.sha256(b"citymesh/next-key/v1\x00" + public).hexdigest()
        == key["next_key_commitment_hex"]
    )


@pytest.mark.parametrize("entry", IDENTITIES["identities"], ids=lambda e: e["name"])
def test_identity_vectors(entry: dict[str, Any]) -> None:
    g = entry["genesis"]
    genesis = Genesis(
        key=bytes.fromhex(g["key"]),
        recovery=[bytes.fromhex(k) for k in g["recovery"]],
        next_key=bytes.fromhex(g["next_key"]) if g["next_key"] is not None else None,
        salt=bytes.fromhex(g["salt"]),
    )
    assert codec.encode(genesis).hex() == entry["genesis_hex"]
    derived = hashlib.sha256(b"citymesh/identity/v1\x00" + codec.encode(genesis)).digest()[:20]
    assert derived.hex() == entry["identity_hex"]
    assert identity_of(genesis).hex() == entry["identity_hex"]
    assert parse_identity(entry["identity"]).hex() == entry["identity_hex"]
    assert fingerprint(derived) == entry["fingerprint"]


def test_rotation_and_ref_vectors() -> None:
    for rotation in IDENTITIES["rotations"]:
        author = bytes.fromhex(rotation["author_hex"])
        new_key = bytes.fromhex(rotation["new_key_hex"])
        message = rotation_message(author, new_key)
        assert message.hex() == rotation["message_hex"]
        assert message == b"\xffcitymesh/rotation/v1\x00" + author + new_key
        verify_detached(new_key, message, bytes.fromhex(rotation["counter_signature_hex"]))
    for ref in IDENTITIES["practice_refs"]:
        author = parse_identity(ref["ref"].partition("/")[0])
        assert author.hex() == ref["author_hex"]
        assert ref["ref"].partition("/")[2] == ref["addr"]


@pytest.mark.parametrize(
    "case", IDENTITIES["text_cases"], ids=[c["description"] for c in IDENTITIES["text_cases"]]
)
def test_text_form_vectors(case: dict[str, Any]) -> None:
    parsers: dict[str, Callable[[str], bytes]] = {
        "public_key": parse_public_key,
        "identity": parse_identity,
        "secret_key": lambda text: SecretKey.from_text(text).seed(),
    }
    parse = parsers[case["what"]]
    if "error" in case:
        with pytest.raises(ProtocolError) as caught:
            parse(case["text"])
        assert caught.value.code == case["error"]
    else:
        assert parse(case["text"]).hex() == case["hex"]


def test_worked_example_in_the_spec_matches_its_vector() -> None:
    spec = (VECTORS.parent / "PROTOCOL.md").read_text(encoding="utf-8")
    example = spec[spec.index("### 5.5 Worked example") : spec.index("## 6. Chains")]
    (vector,) = [v for v in ALL if v["description"].startswith("rating: fields with defaults")]
    payload = bytes.fromhex(vector["payload_hex"])
    assert f"{len(payload)}-byte payload" in example
    assert vector["id_hex"] in example
    assert f"({len(vector['envelope_hex']) // 2} bytes)" in example
    assert f"93 01 c4 {len(payload):02x}" in example
