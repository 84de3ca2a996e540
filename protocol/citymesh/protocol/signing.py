"""The signed message, record ids and signature checks.

message = SIGNING_CONTEXT || payload
sig     = Ed25519(signer, message)            (64 bytes)
id      = SHA-256(message)                    (32 bytes)

SIGNING_CONTEXT starts with 0xFF, a byte that never begins valid UTF-8 text, so a record
signature can never be replayed as a NATS login (nonce) signature or any text signature.
"""

from __future__ import annotations

import hashlib
from typing import Final

import nacl.bindings
import nacl.exceptions

from .errors import BadSignatureError
from .identity import check_public_key

SIGNING_CONTEXT: Final = b"\xffcitymesh/record/v1\x00"
ROTATION_CONTEXT: Final = b"\xffcitymesh/rotation/v1\x00"


def signed_message(payload: bytes) -> bytes:
    return SIGNING_CONTEXT + payload


def record_id(payload: bytes) -> bytes:
    return hashlib.sha256(SIGNING_CONTEXT + payload).digest()


def verify_detached(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Raise `BadSignatureError` unless ``signature`` is ``public_key``'s over ``message``.

    libsodium refuses non-canonical S (S >= L), small-order R and small-order or non-canonical
    public keys; the key is first checked (memoised) so a bad key reports ``bad_key``.
    """
    check_public_key(public_key)
    if len(signature) != 64:
        raise BadSignatureError(f"signature must be 64 bytes, got {len(signature)}")
    try:
        nacl.bindings.crypto_sign_open(signature + message, public_key)
    except nacl.exceptions.BadSignatureError as err:
        raise BadSignatureError("signature does not verify over the received bytes") from err


def rotation_message(author: bytes, new_key: bytes) -> bytes:
    """What the new key counter-signs in a key rotation (proof it is held by the rotator)."""
    return ROTATION_CONTEXT + author + new_key
