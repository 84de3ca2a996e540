"""Chains of one author: links, current versions, retractions and the signing key's history."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from citymesh.protocol.chain import ChainReport, KeyState, Link, check_links, current_versions
from citymesh.protocol.envelope import seal
from citymesh.protocol.errors import BadKeyError, ChainError
from citymesh.protocol.identity import (
    Genesis,
    SecretKey,
    identity_of,
    identity_text,
    next_key_commitment,
)
from citymesh.protocol.records import (
    KeyRotationBody,
    RatingBody,
    Record,
    RetractionBody,
)
from citymesh.protocol.signing import rotation_message

from .builders import NETWORK, NOW_MS, build_record, make_genesis, secret_key
from .test_identity import SMALL_ORDER_KEYS

MakeRecord = Callable[..., Record]


def _id(n: int, variant: int = 0) -> bytes:
    return bytes([n % 256, variant]) * 16


def chain(*seqs: int) -> list[Link]:
    """Well-linked records at the given seqs (ids derived from seq)."""
    return [Link(seq=s, id=_id(s), prev=None if s == 1 else _id(s - 1)) for s in seqs]


# -- check_links --------------------------------------------------------------------------------
def test_empty_chain() -> None:
    assert check_links([]) == ChainReport(head_seq=0, contiguous_seq=0)


def test_contiguous_chain() -> None:
    report = check_links(chain(1, 2, 3, 4, 5))
    assert report == ChainReport(head_seq=5, contiguous_seq=5)


def test_order_of_arrival_does_not_matter() -> None:
    links = [*chain(*range(1, 30)), Link(seq=40, id=_id(40), prev=_id(39))]
    expected = check_links(links)
    rng = random.Random(7)
    for _ in range(10):
        rng.shuffle(links)
        assert check_links(links) == expected


def test_gaps() -> None:
    report = check_links(chain(1, 2, 5, 6, 9))
    assert report.gaps == [(3, 4), (7, 8)]
    assert report.contiguous_seq == 2
    assert report.head_seq == 9
    assert report.equivocations == []
    assert report.broken_links == []


def test_missing_first_record() -> None:
    report = check_links(chain(2, 3))
    assert report.gaps == [(1, 1)]
    assert report.contiguous_seq == 0
    assert report.head_seq == 3


def test_equivocation() -> None:
    links = [*chain(1, 2, 3, 4), Link(seq=3, id=_id(3, 1), prev=_id(2))]
    report = check_links(links)
    assert report.equivocations == [3]
    assert report.contiguous_seq == 2
    assert report.head_seq == 4
    assert report.gaps == []


def test_the_same_record_twice_is_not_equivocation() -> None:
    links = chain(1, 2, 3) + chain(2, 3)
    assert check_links(links) == ChainReport(head_seq=3, contiguous_seq=3)


def test_broken_link() -> None:
    links = [*chain(1, 2), Link(seq=3, id=_id(3), prev=_id(9)), *chain(4, 5)]
    report = check_links(links)
    assert report.broken_links == [3]
    assert report.contiguous_seq == 2
    assert report.head_seq == 5
    assert report.equivocations == []


def test_real_records_link_up(make_record: MakeRecord, first_record: Record) -> None:
    records = [first_record]
    for seq in range(2, 6):
        records.append(make_record("rating", seq=seq, prev=records[-1].id))
    links = [Link(seq=r.seq, id=r.id, prev=r.header.prev) for r in records]
    assert check_links(links) == ChainReport(head_seq=5, contiguous_seq=5)
    # A fork at seq 3 signed by the same author is proof of equivocation.
    fork = make_record(
        "rating", seq=3, prev=records[1].id, body=RatingBody(score=1, comment="forked")
    )
    report = check_links([*links, Link(seq=3, id=fork.id, prev=fork.header.prev)])
    assert report.equivocations == [3]
    assert report.contiguous_seq == 2


# -- current_versions ---------------------------------------------------------------------------
class Log:
    """Builds one author's chain of real records."""

    def __init__(self, make_record: MakeRecord, first_record: Record) -> None:
        self.make_record = make_record
        self.records = [first_record]

    def add(self, kind: str, addr: str, **kw: object) -> Record:
        last = self.records[-1]
        record = self.make_record(kind, seq=last.seq + 1, prev=last.id, addr=addr, **kw)
        self.records.append(record)
        return record


@pytest.fixture
def log(make_record: MakeRecord, first_record: Record) -> Log:
    return Log(make_record, first_record)


def test_highest_seq_wins(log: Log) -> None:
    v1 = log.add("practice", "desk")
    other = log.add("practice", "garden")
    v2 = log.add("practice", "desk")
    current = current_versions(reversed(log.records))
    assert current[("practice", "desk")] is v2
    assert current[("practice", "garden")] is other
    assert current[("city", "")] is log.records[0]
    assert v1 not in current.values()


def test_retraction_hides_older_versions_only(log: Log) -> None:
    log.add("practice", "desk")
    log.add("practice", "desk")
    garden = log.add("practice", "garden")
    retraction = log.add("retraction", "practice/desk")
    current = current_versions(log.records)
    assert ("practice", "desk") not in current
    assert current[("practice", "garden")] is garden
    assert current[("retraction", "practice/desk")] is retraction
    # Published again after the retraction: current again, the retraction is still kept.
    again = log.add("practice", "desk")
    rng = random.Random(3)
    shuffled = list(log.records)
    rng.shuffle(shuffled)
    current = current_versions(shuffled)
    assert current[("practice", "desk")] is again
    assert current[("retraction", "practice/desk")] is retraction


def test_latest_retraction_counts(log: Log) -> None:
    log.add("practice", "desk")
    log.add("retraction", "practice/desk")
    middle = log.add("practice", "desk")
    assert current_versions(log.records)[("practice", "desk")] is middle
    log.add("retraction", "practice/desk", body=RetractionBody(reason="for good"))
    assert ("practice", "desk") not in current_versions(log.records)


def test_retraction_of_other_kinds(log: Log, author: bytes) -> None:
    target = f"{identity_text(author)}/desk"
    log.add("rating", target)
    log.add("indicators", "NEWCOMERS_HOUSED/2024-Q3")
    log.add("retraction", f"rating/{target}")
    current = current_versions(log.records)
    assert ("rating", target) not in current
    assert ("indicators", "NEWCOMERS_HOUSED/2024-Q3") in current
    # A retraction of something never published hides nothing and is itself kept.
    log.add("retraction", "practice/never")
    assert ("retraction", "practice/never") in current_versions(log.records)


# -- KeyState -----------------------------------------------------------------------------------
K1, K2, K3, R = secret_key(21), secret_key(22), secret_key(23), secret_key(24)


def rotation(
    signer: SecretKey,
    new: SecretKey,
    genesis: Genesis,
    *,
    seq: int,
    next_key: bytes | None = None,
    by_recovery: bool = False,
    counter_signer: SecretKey | None = None,
) -> Record:
    author = identity_of(genesis)
    body = KeyRotationBody(
        new_key=new.public_key,
        counter_signature=(counter_signer or new).sign(rotation_message(author, new.public_key)),
        next_key=next_key,
        by_recovery=by_recovery,
    )
    return seal(
        signer, body=body, network=NETWORK, author=author, seq=seq, prev=bytes(32), created=NOW_MS
    )


def signed_by(signer: SecretKey, genesis: Genesis, seq: int) -> Record:
    return build_record("rating", secret=signer, genesis=genesis, seq=seq, prev=bytes(32))


@pytest.fixture
def committed() -> Genesis:
    """K1 signs, R may recover, and the first rotation must introduce K2."""
    return make_genesis(K1, recovery=[R.public_key], next_key=next_key_commitment(K2.public_key))


def test_rotation_with_counter_signature_and_honoured_commitment(committed: Genesis) -> None:
    state = KeyState(committed)
    state.apply(build_record("city", secret=K1, genesis=committed))
    state.apply(signed_by(K1, committed, 2))
    state.apply(rotation(K1, K2, committed, seq=3, next_key=next_key_commitment(K3.public_key)))
    assert state.current == K2.public_key
    assert state.rotated_at == [3]
    assert state.commitment == next_key_commitment(K3.public_key)
    state.apply(signed_by(K2, committed, 4))
    # The next rotation must honour the new commitment in turn.
    with pytest.raises(ChainError, match="committed next key"):
        state.apply(rotation(K2, K1, committed, seq=5))
    state.apply(rotation(K2, K3, committed, seq=5))
    assert state.current == K3.public_key
    assert state.rotated_at == [3, 5]


def test_old_key_is_refused_after_rotation(committed: Genesis) -> None:
    state = KeyState(committed)
    state.apply(rotation(K1, K2, committed, seq=2))
    with pytest.raises(ChainError) as info:
        state.apply(signed_by(K1, committed, 3))
    assert info.value.field == "signer"
    with pytest.raises(ChainError):
        state.apply(rotation(K1, K3, committed, seq=3))


def test_violated_commitment_is_refused(committed: Genesis) -> None:
    state = KeyState(committed)
    with pytest.raises(ChainError, match="committed next key") as info:
        state.apply(rotation(K1, K3, committed, seq=2))
    assert info.value.field == "new_key"
    assert state.current == K1.public_key
    assert state.rotated_at == []


def test_counter_signature_is_required(committed: Genesis) -> None:
    state = KeyState(committed)
    with pytest.raises(ChainError, match="counter-signature"):
        state.apply(rotation(K1, K2, committed, seq=2, counter_signer=K1))
    # A counter-signature made for another author does not transfer.
    other = make_genesis(K1, salt=b"other city")
    stolen = KeyRotationBody(
        new_key=K2.public_key,
        counter_signature=K2.sign(rotation_message(identity_of(other), K2.public_key)),
    )
    forged = build_record(
        "key_rotation", secret=K1, genesis=committed, seq=2, prev=bytes(32), body=stolen
    )
    with pytest.raises(ChainError, match="counter-signature"):
        state.apply(forged)
    assert state.current == K1.public_key


def test_recovery_key_rotation(committed: Genesis) -> None:
    # The thief holds K1 but not K2: the commitment stops a rotation away to the thief's key.
    state = KeyState(committed)
    thief = secret_key(66)
    with pytest.raises(ChainError):
        state.apply(rotation(K1, thief, committed, seq=2))
    # The recovery key takes the identity back to a fresh key, commitment or not.
    state.apply(rotation(R, K3, committed, seq=2, by_recovery=True))
    assert state.current == K3.public_key
    assert state.rotated_at == [2]
    with pytest.raises(ChainError):
        state.apply(signed_by(K1, committed, 3))
    state.apply(signed_by(K3, committed, 3))


def test_recovery_key_signs_only_rotations(committed: Genesis) -> None:
    state = KeyState(committed)
    with pytest.raises(ChainError):
        state.apply(signed_by(R, committed, 2))


def test_by_recovery_must_match_the_signer(committed: Genesis) -> None:
    state = KeyState(committed)
    with pytest.raises(ChainError, match="by_recovery"):
        state.apply(rotation(R, K3, committed, seq=2, by_recovery=False))
    with pytest.raises(ChainError, match="by_recovery"):
        state.apply(rotation(K1, K2, committed, seq=2, by_recovery=True))
    assert state.current == K1.public_key


def test_unknown_signer_is_refused(committed: Genesis) -> None:
    state = KeyState(committed)
    with pytest.raises(ChainError):
        state.apply(signed_by(secret_key(77), committed, 2))
    with pytest.raises(ChainError):
        state.apply(rotation(secret_key(77), K2, committed, seq=2))


def test_rotation_without_commitment() -> None:
    genesis = make_genesis(K1)
    state = KeyState(genesis)
    state.apply(rotation(K1, K3, genesis, seq=2))
    assert state.current == K3.public_key
    assert state.commitment is None


def test_rotation_to_a_small_order_key_is_refused() -> None:
    genesis = make_genesis(K1)
    state = KeyState(genesis)
    body = KeyRotationBody(new_key=SMALL_ORDER_KEYS[0], counter_signature=bytes(64))
    record = build_record(
        "key_rotation", secret=K1, genesis=genesis, seq=2, prev=bytes(32), body=body
    )
    with pytest.raises((ChainError, BadKeyError)):
        state.apply(record)
    assert state.current == K1.public_key
