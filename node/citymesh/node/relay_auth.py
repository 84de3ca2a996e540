"""Who may do what on a governed relay: nats-server users and subject permissions from membership.

A governed relay enforces at the transport what nodes enforce on records (DESIGN.md, Trust):

- each member city logs in with its *transport key* (an nkey, never the record-signing key) that a
  steward's signed ``membership`` record binds to the city's identity;
- it may publish only its own subjects ``cm.<net>.<identity>.*``, plus the few JetStream API
  subjects a node needs to read that one stream (measured against nats-server with nats-py's
  ordered push consumer, ``js.publish``, ``js.get_last_msg`` and ``stream_info``) — never a stream
  create, update, delete or purge;
- it may subscribe to ``cm.<net>.>`` and to its own inbox ``_INBOX.<identity>.>`` (a node sets
  that inbox prefix when it logs in with its transport key, so no city can read another's replies
  or deliveries);
- revoked and unknown cities get no user at all: their login is refused;
- the relay's own operator user has full permissions (it creates streams, reads membership);
- a *link* user lets the relay of another network source this relay's streams over a leaf-node
  connection (read-only: JetStream consumer creation in this relay's domain and flow control).

This module is pure: it renders configuration text and keeps the membership view; relay.py does
the I/O (following the stream, rewriting the file, reloading nats-server).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from citymesh.practices.membership import Admission, Charter, Standing, standings
from citymesh.protocol.chain import current_versions
from citymesh.protocol.envelope import open_envelope
from citymesh.protocol.errors import ProtocolError
from citymesh.protocol.identity import identity_text
from citymesh.protocol.records import MembershipBody, NetworkBody, Record
from citymesh.protocol.subjects import SUBJECT_ROOT, check_network, stream_name, subject_of

from .nkey import encode_public

GOVERNANCE_KINDS: Final = ("network", "membership", "retraction")
"""The kinds a governed relay follows to know its members (retractions may withdraw a
membership record)."""


def inbox_prefix(identity: bytes) -> str:
    """The reply inbox prefix of a city's connections (``_INBOX.<identity>``); nats-py's
    ``inbox_prefix`` connect option."""
    return f"_INBOX.{identity_text(identity)}"


def governance_filters(network: str) -> tuple[str, ...]:
    """Subjects of the records that decide who belongs to a network (own records only: four
    tokens, so records sourced from a linked network never count)."""
    check_network(network)
    return tuple(f"{SUBJECT_ROOT}.{network}.*.{kind}" for kind in GOVERNANCE_KINDS)


@dataclass(frozen=True, slots=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]

    def __or__(self, other: Permissions) -> Permissions:
        return Permissions(
            publish=_union(self.publish, other.publish),
            subscribe=_union(self.subscribe, other.subscribe),
        )


def _union(a: Iterable[str], b: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*a, *b)))


def member_permissions(network: str, identity: bytes) -> Permissions:
    """What one city's user may do on one network's stream."""
    stream = stream_name(network)
    return Permissions(
        publish=(
            f"{SUBJECT_ROOT}.{network}.{identity_text(identity)}.*",
            f"$JS.API.STREAM.INFO.{stream}",
            f"$JS.API.CONSUMER.CREATE.{stream}",
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.*",  # a catch-up reads its backlog by pull
            f"$JS.API.STREAM.MSG.GET.{stream}",
            f"$JS.FC.{stream}.>",
        ),
        subscribe=(f"{SUBJECT_ROOT}.{network}.>", f"{inbox_prefix(identity)}.>"),
    )


def link_permissions(domain: str, networks: Iterable[str]) -> Permissions:
    """What the relay of a linked network may do over a leaf-node connection: create the
    consumers that source this relay's streams (in JetStream domain ``domain``) and answer their
    flow control. For leaf-node users, ``publish`` is what the linked relay sends here and
    ``subscribe`` what it may receive (API replies and source deliveries)."""
    publish: list[str] = []
    for network in networks:
        stream = stream_name(network)
        publish.append(f"$JS.{domain}.API.CONSUMER.CREATE.{stream}.>")
        publish.append(f"$JS.FC.{stream}.>")
    return Permissions(publish=tuple(publish), subscribe=("$JSC.R.>", "$JS.S.>"))


@dataclass(frozen=True, slots=True)
class Grant:
    """One nats-server user: an nkey and its permissions (``None``: everything)."""

    nkey: str
    permissions: Permissions | None
    note: str = ""


def member_grants(network: str, members: Mapping[bytes, Standing]) -> list[Grant]:
    """A user for every city in good standing that names a transport key. Revoked and unknown
    cities, and members without a transport key, get none."""
    out: list[Grant] = []
    for identity, standing in sorted(members.items()):
        if standing.state != "member" or standing.transport_key is None:
            continue
        out.append(
            Grant(
                nkey=encode_public(standing.transport_key),
                permissions=member_permissions(network, identity),
                note=f"{standing.role} {identity_text(identity)} in {network}",
            )
        )
    return out


def steward_grants(network: str, keys: Mapping[bytes, Iterable[bytes]]) -> list[Grant]:
    """Users for stewards' nodes named on the relay's command line (``--steward-key``), so they
    can publish the charter and the first memberships before any membership exists."""
    return [
        Grant(
            nkey=encode_public(key),
            permissions=member_permissions(network, identity),
            note=f"steward {identity_text(identity)} in {network} (--steward-key)",
        )
        for identity, steward_keys in sorted(keys.items())
        for key in steward_keys
    ]


def link_grants(domain: str, networks: Iterable[str], keys: Iterable[bytes]) -> list[Grant]:
    networks = tuple(networks)
    return [
        Grant(
            nkey=encode_public(key),
            permissions=link_permissions(domain, networks),
            note="linked relay (--link-key)",
        )
        for key in sorted(set(keys))
    ]


def _quote(value: str) -> str:
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F or ch in '"\\' for ch in value):
        raise ValueError(f"{value!r} cannot appear in a nats-server configuration string")
    return f'"{value}"'


def _list(values: Iterable[str]) -> str:
    return "[" + ", ".join(_quote(v) for v in values) + "]"


def _comment(text: str) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def render_authorization(operator_nkey: str, grants: Iterable[Grant]) -> str:
    """The nats-server ``authorization { users = [...] }`` block.

    Grants with the same nkey are merged (a city in two networks of one relay gets one user with
    both networks' permissions); a grant naming the operator's own nkey is dropped. The output is
    deterministic, so an unchanged membership renders the same text and needs no reload.
    """
    merged: dict[str, tuple[Permissions | None, list[str]]] = {}
    for grant in grants:
        if grant.nkey == operator_nkey:
            continue
        have = merged.get(grant.nkey)
        if have is None:
            merged[grant.nkey] = (grant.permissions, [grant.note])
            continue
        perms, notes = have
        combined = None if perms is None or grant.permissions is None else perms | grant.permissions
        merged[grant.nkey] = (combined, [*notes, grant.note])
    lines = [
        "authorization {",
        "  users = [",
        "    # the relay itself (creates streams, follows membership): all permissions",
        f"    {{nkey: {_quote(operator_nkey)}}}",
    ]
    for nkey, (perms, notes) in sorted(merged.items()):
        for note in notes:
            if note:
                lines.append(f"    # {_comment(note)}")
        if perms is None:
            lines.append(f"    {{nkey: {_quote(nkey)}}}")
            continue
        lines.append(f"    {{nkey: {_quote(nkey)}, permissions: {{")
        lines.append(f"      publish: {{allow: {_list(perms.publish)}}}")
        lines.append(f"      subscribe: {{allow: {_list(perms.subscribe)}}}")
        lines.append("    }}")
    lines.append("  ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


@dataclass
class MembershipLog:
    """The governance records of one network as read from its stream, and who is a member.

    Feed it every message on `governance_filters` subjects. A message counts only if its envelope
    opens (signature, schema), it sits on its author's own subject for its kind, and it belongs to
    this network; anything else is ignored and counted. For each author, the version with the
    highest seq per (kind, addr) is current and retractions hide what they withdraw
    (`citymesh.protocol.chain.current_versions`); `practices.membership.standings` decides the
    rest. The relay trusts the transport for the signer: only a steward's own user may publish on
    its subjects (nodes check key rotations on the full chain).
    """

    network: str
    anchors: frozenset[bytes]
    ignored: int = 0
    _latest: dict[bytes, dict[tuple[str, str], Record]] = field(default_factory=dict)

    def add(self, subject: str, data: bytes, *, now_ms: int) -> bool:
        """Take one message; True if it changed an author's current governance records."""
        try:
            record = open_envelope(data, now_ms=now_ms)
            own_subject = subject_of(record)
        except ProtocolError:
            self.ignored += 1
            return False
        header = record.header
        if (
            own_subject != subject
            or header.network != self.network
            or header.kind not in GOVERNANCE_KINDS
        ):
            self.ignored += 1
            return False
        if header.kind == "retraction" and not header.addr.startswith("membership/"):
            return False  # withdraws a practice or a rating: not governance
        versions = self._latest.setdefault(header.author, {})
        key = (header.kind, header.addr)
        have = versions.get(key)
        if have is not None and have.header.seq >= header.seq:
            return False
        versions[key] = record
        return True

    def charters(self) -> list[Charter]:
        return [
            Charter(author=rec.header.author, network=rec.header.addr, body=rec.body)
            for rec in self._current()
            if isinstance(rec.body, NetworkBody)
        ]

    def admissions(self) -> list[Admission]:
        return [
            Admission(steward=rec.header.author, body=rec.body)
            for rec in self._current()
            if isinstance(rec.body, MembershipBody)
        ]

    def standings(self, *, now_ms: int) -> dict[bytes, Standing]:
        return standings(
            self.network, self.anchors, self.charters(), self.admissions(), now_ms=now_ms
        )

    def _current(self) -> list[Record]:
        out: list[Record] = []
        for versions in self._latest.values():
            out.extend(current_versions(versions.values()).values())
        return out
