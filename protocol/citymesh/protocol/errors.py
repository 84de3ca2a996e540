"""One small error tree. Every rejection names its reason with a stable machine-readable code.

The codes are part of the protocol: nodes count rejections by code and the HTTP API returns them.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of every error the protocol library raises on bad input."""

    code: str = "protocol_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        where = f" ({self.field})" if self.field else ""
        return f"{self.code}: {self.message}{where}"


class MalformedError(ProtocolError):
    """The bytes are not a well-formed envelope or payload."""

    code = "malformed"


class NonCanonicalError(ProtocolError):
    """Well-formed, but not the one canonical encoding."""

    code = "non_canonical"


class TooLargeError(ProtocolError):
    """A payload, field or list is over its limit."""

    code = "too_large"


class BadSignatureError(ProtocolError):
    """The signature does not verify for the named signer over the received bytes."""

    code = "bad_signature"


class BadKeyError(ProtocolError):
    """A public key or key text is invalid: wrong length, small order, non-canonical, bad checksum."""

    code = "bad_key"


class UnknownKindError(ProtocolError):
    """The record kind is not one this protocol version knows."""

    code = "unknown_kind"


class UnsupportedVersionError(ProtocolError):
    """The envelope or payload carries a major version this library does not speak."""

    code = "unsupported_version"


class FutureError(ProtocolError):
    """The record's ``created`` time is too far ahead of the verifier's clock."""

    code = "future"


class InvalidRecordError(ProtocolError):
    """The payload decodes but breaks a schema rule (type, range, code list, header rule)."""

    code = "invalid"


class BadIdentityError(ProtocolError):
    """The author identity does not match its genesis, or the text form is invalid."""

    code = "bad_identity"


class ChainError(ProtocolError):
    """A record does not fit its author's chain (wrong prev, signer not the current key)."""

    code = "chain"


ERROR_CODES: tuple[str, ...] = tuple(
    cls.code
    for cls in (
        MalformedError,
        NonCanonicalError,
        TooLargeError,
        BadSignatureError,
        BadKeyError,
        UnknownKindError,
        UnsupportedVersionError,
        FutureError,
        InvalidRecordError,
        BadIdentityError,
        ChainError,
    )
)
"""Every code a rejection can carry, in a stable order (for counters and docs)."""
