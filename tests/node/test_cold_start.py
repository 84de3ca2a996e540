"""A node's first requests after a start: the search index is built on a thread at start
(warmup.py) and other requests are served meanwhile; a search that comes first waits for that
build and answers as it always did; a practice's detail reads its stored versions without
verifying them again. No wall-clock assertions: the build is held at a point the tests control.
"""

from __future__ import annotations

import asyncio
import datetime
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

import citymesh.protocol.envelope as envelope_module
from citymesh.node import idtext, queries, warmup
from citymesh.node import search as search_module
from citymesh.node.app import create_app
from citymesh.node.natsserver import NatsServer
from citymesh.node.search import search_practices
from citymesh.node.store import Store
from citymesh.node.store.db import connect
from citymesh.practices.lineage import changed_fields
from citymesh.practices.ratings import DEFAULT_PRIOR_WEIGHT
from citymesh.protocol import api
from citymesh.protocol.errors import BadSignatureError
from citymesh.protocol.identity import fingerprint, identity_text

from .conftest import MakeHome
from .test_search import KEY, Catalogue, body, build, build_foreign

QUERIES: list[dict[str, Any]] = [
    {},
    {"q": "language"},
    {"q": "city", "sort": "title", "limit": 3},
    {"sector": "EDUCATION", "sort": "updated"},
    {"target_group": "REFUGEE", "sort": "rating"},
    {"min_rating": 3.5, "sort": "rating"},
]


class HeldBuild:
    """Holds every index build at its start until released; counts the builds."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.builds = 0
        original = search_module._Index._build

        def held(index: Any, rows: Any, top: int) -> None:
            self.builds += 1
            self.entered.set()
            assert self.release.wait(30), "the test never released the build"
            original(index, rows, top)

        monkeypatch.setattr(search_module._Index, "_build", held)


@pytest.fixture
def fresh_caches() -> Iterator[None]:
    search_module.reset_caches()
    yield
    search_module.reset_caches()


@pytest.fixture
def catalogue(tmp_path: Path, fresh_caches: None) -> Iterator[Catalogue]:
    store = Store(tmp_path / "node.db")
    try:
        yield build(store)
    finally:
        store.close()


def expected(path: Path, case: dict[str, Any]) -> api.PracticeList:
    """The answer of an index built from scratch on its own connection (inside a transaction,
    a connection gets an index of its own, not the shared one)."""
    db = connect(path, readonly=True)
    try:
        db.execute("BEGIN")
        return search_practices(db, api.PracticeQuery(**case), key=KEY)
    finally:
        db.execute("COMMIT")
        db.close()


# -- the build at start ---------------------------------------------------------------------------
def test_a_search_after_the_warm_up_uses_its_index(
    catalogue: Catalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = catalogue.store.path
    want = [expected(path, case) for case in QUERIES]
    warmup.warm(path)
    held = HeldBuild(monkeypatch)
    held.release.set()
    db = connect(path, readonly=True)
    try:
        got = [search_practices(db, api.PracticeQuery(**case), key=KEY) for case in QUERIES]
    finally:
        db.close()
    assert got == want
    assert held.builds == 0  # the reader found the index the warm-up built


def test_a_search_during_the_build_waits_for_it(
    catalogue: Catalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = catalogue.store.path
    want = {i: expected(path, case) for i, case in enumerate(QUERIES)}
    held = HeldBuild(monkeypatch)
    warming = threading.Thread(target=warmup.warm, args=(path,))
    warming.start()
    assert held.entered.wait(30)
    got: dict[int, api.PracticeList] = {}

    def searches() -> None:
        db = connect(path, readonly=True)
        try:
            for i, case in enumerate(QUERIES):
                got[i] = search_practices(db, api.PracticeQuery(**case), key=KEY)
        finally:
            db.close()

    searching = threading.Thread(target=searches)
    searching.start()
    assert not got  # nothing answered while the index is being built
    held.release.set()
    warming.join(30)
    searching.join(30)
    assert got == want
    assert held.builds == 1  # the search waited for the warm-up's build instead of its own


def test_the_warm_up_follows_later_writes(catalogue: Catalogue) -> None:
    """Built at start, the index is caught up with what ingest applies afterwards."""
    path = catalogue.store.path
    warmup.warm(path)
    catalogue.add("late", "me", body({"en": "Late language practice"}, sectors=("EDUCATION",)))
    catalogue.retract("mentoring")
    db = connect(path, readonly=True)
    try:
        for case in QUERIES:
            assert search_practices(db, api.PracticeQuery(**case), key=KEY) == expected(path, case)
    finally:
        db.close()


def test_warm_up_of_a_missing_database_only_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    warmup.warm(tmp_path / "nowhere" / "node.db")
    assert "cannot prepare the caches" in caplog.text


def test_identity_texts_are_made_at_warm_up(catalogue: Catalogue) -> None:
    path = catalogue.store.path
    authors = [bytes(a) for (a,) in catalogue.store.db.execute("SELECT author FROM authors")]
    assert authors
    idtext.identity_text.cache_clear()
    idtext.fingerprint.cache_clear()
    warmup.warm(path)
    misses = (idtext.identity_text.cache_info().misses, idtext.fingerprint.cache_info().misses)
    assert misses == (len(authors), len(authors))
    for author in authors:  # answered from what the warm-up made: no new misses
        assert idtext.identity_text(author) == identity_text(author)
        assert idtext.fingerprint(author) == fingerprint(author)
    assert idtext.identity_text.cache_info().misses == misses[0]
    assert idtext.fingerprint.cache_info().misses == misses[1]


# -- over HTTP: the node starts, its build is held --------------------------------------------------
async def test_requests_are_served_while_the_index_builds(
    make_home: MakeHome,
    nats_server: NatsServer,
    monkeypatch: pytest.MonkeyPatch,
    fresh_caches: None,
) -> None:
    home = make_home("Mechelen", "BEL", relays=[nats_server.client_url])
    store = Store(home.db_path)
    try:
        build_foreign(store)
        (ref,) = store.db.execute(
            "SELECT ref FROM practice_search WHERE live ORDER BY rating_count DESC LIMIT 1"
        ).fetchone()
    finally:
        store.close()
    want = expected(home.db_path, {"q": "language"})
    held = HeldBuild(monkeypatch)
    client = TestClient(TestServer(create_app(home, home.load_config())))
    headers = {"Authorization": f"Bearer {home.load_token()}"}
    try:
        await client.start_server()  # the node starts its warm-up, which is held in its build
        assert await asyncio.to_thread(held.entered.wait, 30)
        for path in ("/v1/status", f"/v1/practices/{ref}", "/v1/cities"):
            async with client.get(path, headers=headers) as resp:
                assert resp.status == 200, (path, await resp.text())
        assert not held.release.is_set()  # all answered while the build was still held
        searching = asyncio.ensure_future(
            client.get("/v1/practices", params={"q": "language"}, headers=headers)
        )
        await asyncio.sleep(0)
        assert not searching.done()
        held.release.set()
        resp = await searching
        assert resp.status == 200
        assert msgspec.json.decode(await resp.read(), type=api.PracticeList) == want
        assert held.builds == 1
    finally:
        held.release.set()
        await client.close()


# -- a practice's detail ----------------------------------------------------------------------------
def detail(cat: Catalogue, name: str) -> api.PracticeDetail:
    author, addr = api.parse_ref(cat.ref(name))
    today = datetime.date(2026, 1, 1)
    found = queries.practice_detail(
        cat.store.db, author, addr, own=cat.authors["sp"].id, today=today
    )
    assert found is not None
    return found


def test_history_marks_each_version(catalogue: Catalogue) -> None:
    first = catalogue.practices["mentoring"].body
    second = msgspec.structs.replace(first, title={"en": "Mentoring programme for families"})
    third = msgspec.structs.replace(second, status="ended")
    catalogue.update("mentoring", second)
    catalogue.update("mentoring", third)
    history = detail(catalogue, "mentoring").history
    assert [h.changed for h in history] == [
        ["status"],
        ["title"],
        changed_fields(None, first),
    ]
    assert "title" in history[-1].changed
    seqs = [h.seq for h in history]
    assert seqs == sorted(seqs, reverse=True)
    ids = {
        bytes(i).hex()
        for (i,) in catalogue.store.db.execute(
            "SELECT id FROM records WHERE kind = 'practice' AND addr = 'mentoring'"
        )
    }
    assert {h.id for h in history} == ids


def test_history_does_not_verify_stored_versions_again(
    catalogue: Catalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stored versions were verified on ingest; reading them back checks no signature."""
    catalogue.update(
        "mentoring", msgspec.structs.replace(catalogue.practices["mentoring"].body, status="ended")
    )

    def refuse(*args: object) -> None:
        raise BadSignatureError("verification was asked for")

    monkeypatch.setattr(envelope_module, "verify_detached", refuse)
    assert detail(catalogue, "mentoring").history[0].changed == ["status"]


def test_history_leaves_out_records_not_applied(catalogue: Catalogue) -> None:
    """A version beyond a gap in its author's chain is held, not applied: not in the history."""
    author = catalogue.authors["me"]
    p = catalogue.practices["mentoring"]
    author.seal(body({"en": "Never arrives"}), addr="other")  # seq n: lost on the way
    held = author.seal(msgspec.structs.replace(p.body, status="ended"), addr="mentoring")
    catalogue.store.ingest([held], Counter(), now_ms=held.header.created)
    (state,) = catalogue.store.db.execute(
        "SELECT state FROM records WHERE id = ?", (held.id,)
    ).fetchone()
    assert state == "held"
    history = detail(catalogue, "mentoring").history
    assert held.id.hex() not in {h.id for h in history}
    assert len(history) == 1


def test_detail_ratings_are_the_practice_s_own(catalogue: Catalogue) -> None:
    for name, p in catalogue.practices.items():
        got = detail(catalogue, name)
        assert sorted(r.score for r in got.ratings) == sorted(p.scores), name
        assert got.rating.count == len(p.scores)


def test_detail_prior_is_the_mean_of_every_current_rating(catalogue: Catalogue) -> None:
    """Ratings of practices since retracted still count in the prior."""
    catalogue.retract("legal_aid")
    got = detail(catalogue, "housing_first")
    scores = catalogue.practices["housing_first"].scores
    total, count = catalogue.store.db.execute(
        "SELECT sum(rating_sum), sum(rating_count) FROM practice_stats"
    ).fetchone()
    assert catalogue.orphans and count > len(scores)
    assert total / count == pytest.approx(catalogue.prior())
    weight = DEFAULT_PRIOR_WEIGHT
    bayes = (weight * catalogue.prior() + sum(scores)) / (weight + len(scores))
    assert got.rating.bayes == pytest.approx(bayes, abs=1e-3)


def test_detail_on_a_read_only_connection(catalogue: Catalogue) -> None:
    db = connect(catalogue.store.path, readonly=True)
    try:
        author, addr = api.parse_ref(catalogue.ref("welcome"))
        got = queries.practice_detail(
            db, author, addr, own=catalogue.authors["sp"].id, today=datetime.date(2026, 1, 1)
        )
    finally:
        db.close()
    assert got == detail(catalogue, "welcome")
