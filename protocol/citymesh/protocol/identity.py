"""Keys, identities and their text forms.

- A *public key* is a 32-byte Ed25519 point, checked to be canonical, on the curve and of large
  prime order (small-order keys are refused). Text form: bech32m with prefix ``cmpk``.
- A *secret key* is a 32-byte seed. Its repr never shows the seed; its text form (``cmsk``) is
  for the 0600 key file only.
- An *identity* is the stable id of a city: the first 20 bytes of SHA-256 over a context string
  and the canonical encoding of its `Genesis` (signing key, recovery keys, next-key commitment,
  salt). It survives key rotation. Text form: bech32m with prefix ``cmid``.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Annotated, Final

import msgspec
import nacl.bindings

from . import textform
from .codec import encode
from .errors import BadIdentityError, BadKeyError

PUBLIC_KEY_HRP: Final = "cmpk"
SECRET_KEY_HRP: Final = "cmsk"
IDENTITY_HRP: Final = "cmid"
IDENTITY_CONTEXT: Final = b"citymesh/identity/v1\x00"
NEXT_KEY_CONTEXT: Final = b"citymesh/next-key/v1\x00"
IDENTITY_BYTES: Final = 20
MAX_RECOVERY_KEYS: Final = 3

KeyBytes = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
HashBytes = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]


@lru_cache(maxsize=65536)
def _is_valid_point(key: bytes) -> bool:
    return bool(nacl.bindings.crypto_core_ed25519_is_valid_point(key))


def check_public_key(key: bytes) -> bytes:
    """Return ``key`` if it is a usable Ed25519 public key, else raise `BadKeyError`.

    Refuses wrong lengths, non-canonical encodings, points off the curve and small-order points
    (libsodium's ``crypto_core_ed25519_is_valid_point``). Results are memoised per key.
    """
    if len(key) != 32:
        raise BadKeyError(f"public key must be 32 bytes, got {len(key)}")
    if not _is_valid_point(bytes(key)):
        raise BadKeyError("public key is not a valid Ed25519 point (small order or non-canonical)")
    return key


def public_key_text(key: bytes) -> str:
    return textform.encode(PUBLIC_KEY_HRP, key)


def parse_public_key(text: str) -> bytes:
    return check_public_key(textform.decode(PUBLIC_KEY_HRP, text, length=32, what="public key"))


def fingerprint(data: bytes) -> str:
    """A short display form (not for lookups): 8 base32 characters in two groups of four."""
    body = textform.encode("x", hashlib.sha256(data).digest()[:5])[2:10]
    return f"{body[:4]}-{body[4:8]}"


def next_key_commitment(public_key: bytes) -> bytes:
    """The commitment a genesis or rotation record makes to the key that will replace it."""
    return hashlib.sha256(NEXT_KEY_CONTEXT + check_public_key(public_key)).digest()


class SecretKey:
    """An Ed25519 signing key. The seed is never shown by repr or str."""

    __slots__ = ("_seed", "_sk", "public_key")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise BadKeyError(f"secret seed must be 32 bytes, got {len(seed)}")
        pk, sk = nacl.bindings.crypto_sign_seed_keypair(seed)
        self._seed = bytes(seed)
        self._sk: bytes = sk
        self.public_key: bytes = pk

    def sign(self, message: bytes) -> bytes:
        """Detached Ed25519 signature (64 bytes) over ``message``."""
        signed: bytes = nacl.bindings.crypto_sign(message, self._sk)
        return signed[:64]

    def seed(self) -> bytes:
        """The 32-byte seed, for writing to the key file. Never log it."""
        return self._seed

    def to_text(self) -> str:
        return textform.encode(SECRET_KEY_HRP, self._seed)

    @classmethod
    def from_text(cls, text: str) -> SecretKey:
        return cls(textform.decode(SECRET_KEY_HRP, text, length=32, what="secret key"))

    def __repr__(self) -> str:
        return f"SecretKey(public={public_key_text(self.public_key)})"

    __str__ = __repr__


class Genesis(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """What a city's identity is derived from; carried in the header of its seq-1 record."""

    key: KeyBytes
    """The first signing key."""
    recovery: Annotated[list[KeyBytes], msgspec.Meta(max_length=MAX_RECOVERY_KEYS)] = []
    """Offline recovery keys that may take the identity back after a theft."""
    next_key: HashBytes | None = None
    """`next_key_commitment` of the key the first rotation must introduce, if committed."""
    salt: Annotated[bytes, msgspec.Meta(max_length=32)] = b""
    """Caller-chosen randomness so two identities made from the same key differ."""


def identity_of(genesis: Genesis | bytes) -> bytes:
    """The 20-byte identity derived from a genesis: over its bytes exactly as signed when given
    them (so a genesis field added by a later version still counts), else its canonical form."""
    data = genesis if isinstance(genesis, bytes) else encode(genesis)
    return hashlib.sha256(IDENTITY_CONTEXT + data).digest()[:IDENTITY_BYTES]


def identity_text(identity: bytes) -> str:
    if len(identity) != IDENTITY_BYTES:
        raise BadIdentityError(f"identity must be {IDENTITY_BYTES} bytes, got {len(identity)}")
    return textform.encode(IDENTITY_HRP, identity)


def parse_identity(text: str) -> bytes:
    try:
        return textform.decode(IDENTITY_HRP, text, length=IDENTITY_BYTES, what="identity")
    except BadKeyError as err:
        raise BadIdentityError(err.message) from err
