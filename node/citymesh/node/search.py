"""Practice search: FTS5 full text (prefix matching, diacritics folded, bm25 ranking), filters,
sorting, keyset pagination with opaque cursors, and facet counts.

Results come from ``practice_search`` (one row per practice with what a result shows, kept in the
ingest transaction by store/catalogue.py) and ``practices_fts`` (rowid = docid). Filters, sorting
and facet counts run on an in-memory index per database file (`_Index`): one bitset per filter
code over docids, and the docids in each sort order (the rarer ones made on first use). A node
builds it at start on a thread of its own (`warm_index`, from warmup.py; about 1.1 s at 100,000
practices), else the first search does; then it is caught up with the rows whose ``changed``
counter moved. (Done in SQL, with each facet counted over the result set with its own filter
left out, a search of 100,000 practices took 1-10 s.)

Relevance: a practice whose title holds every word comes first, then one whose title, summary,
keywords or city hold them, then one that needs its description; within each tier, bm25 over the
tier's columns. Besides putting specific matches first, this bounds the work of a first page to
the title matches of a common word instead of every practice that mentions it somewhere.

Where the time goes (100,000 practices): bm25 (3-4 us per row it ranks, all rows of a tier
before LIMIT applies) and FTS5's merging of a prefix's terms (no prefix index). So filtered tiers
skip left-out practices in SQL before bm25 runs, and match sets (facets need the whole of one)
are kept per query and per word: a word met again costs nothing, and several words are the
intersection of what is kept and one match of the rest. Reading the rowids is the JSON parser's.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import heapq
import json
import re
import sqlite3
import threading
from collections import OrderedDict, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from itertools import compress
from typing import Any

from citymesh.practices.ratings import DEFAULT_MIN_COUNT, DEFAULT_PRIOR_MEAN, DEFAULT_PRIOR_WEIGHT
from citymesh.protocol import api
from citymesh.protocol.errors import InvalidRecordError
from citymesh.protocol.identity import parse_identity

from . import trust_view

FACETS = ("sector", "target_group", "country", "status", "language")
# bm25 weights per column: ref (unindexed), title, summary, body, keywords, place
BM25 = "bm25(practices_fts, 0.0, 10.0, 4.0, 1.0, 3.0, 2.0)"
_HEAD_BM25 = "bm25(practices_head_fts, 10.0, 4.0, 3.0, 2.0)"
_TOKEN = re.compile(r"\w+", re.UNICODE)
_NONZERO = re.compile(rb"[^\x00]")
_TEXT_CACHE = 256
"""Full-text match sets kept per index (until the full text changes): 12.5 KB each at 100,000
practices."""
_CHUNK = 10_000
"""Rows an index build reads at a time (its transient memory)."""
_RANKED_CACHE = 16
"""Full-text matches ranked by bm25 kept per index (until the full text changes)."""


Key = tuple[str, Any]
"""A bitset's name: (facet, code), ("author", identity bytes), ("live" | "rated" | "replicated",
"")."""
_FIELDS = ("author", "status", "sector", "target_group", "language", "country")
"""The fields of a row that name filter keys (see `_Index._field_keys`)."""
_LIVE: Key = ("live", "")
_RATED: tuple[Key, ...] = (("rated", ""),)
_REPLICATED: tuple[Key, ...] = (("replicated", ""),)


def _patch_limit(size: int) -> int:
    """Changed rows beyond this: rebuild the index rather than patch it."""
    return max(100, size // 20)


def match_expression(q: str) -> str | None:
    """Every word must occur (as a prefix); FTS syntax in the input is never interpreted."""
    words = _words(q)
    if not words:
        return None
    return " AND ".join(f'"{w}"*' for w in words)


def _words(q: str) -> list[str]:
    return _TOKEN.findall(q)[:12]


def _tiers(match: str) -> tuple[tuple[str, str, str], ...]:
    """Relevance tiers as (table, MATCH expression, rank): every word in the title; every word in
    the title, summary, keywords or city (ranked in the index without descriptions); the rest."""
    return (
        ("practices_head_fts", f"{{title}} : ({match})", _HEAD_BM25),
        ("practices_head_fts", f"({match}) NOT {{title}} : ({match})", _HEAD_BM25),
        ("practices_fts", match, BM25),
    )


def _parse_ids(ids: str | None) -> list[int]:
    """The rowids of a ``group_concat(rowid)``: the JSON parser reads them twice as fast as
    ``map(int, ids.split(","))``."""
    return json.loads(f"[{ids}]") if ids else []


def _digits(bits: int, size: int) -> bytes:
    """A "0" or "1" per docid (at offset docid), as SQL reads it: ``substr(?, rowid + 1, 1)``."""
    return f"{bits:b}"[::-1].encode("ascii").ljust(size, b"0")


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a build makes its million objects (none of
    them in a cycle): it ran again and again over all of them, a third of the build's time."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def _run(calls: Iterator[object]) -> None:
    """Make every call of a ``map`` (in C: no Python loop per item)."""
    deque(calls, maxlen=0)


def _bitset(docids: list[int], size: int) -> bytearray:
    """A bit per docid (``size`` of them), set for ``docids``."""
    if len(docids) * 64 < size:  # few (one city's practices): set their bits one by one
        few = bytearray((size + 7) // 8)
        for d in docids:
            few[d >> 3] |= 1 << (d & 7)
        return few
    digits = bytearray(b"0") * size  # "0"/"1" per docid: int(…, 2) packs them in C
    for d in docids:
        digits[d] = 49
    return bytearray(int(digits[::-1], 2).to_bytes((size + 7) // 8, "little"))


def _remember(cache: OrderedDict[str, Any], key: str, value: Any, size: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    if len(cache) > size:
        cache.popitem(last=False)


def _members(bits: int) -> list[int]:
    """The docids set in ``bits``, ascending."""
    raw = bits.to_bytes((bits.bit_length() + 7) // 8, "little")
    out: list[int] = []
    for m in _NONZERO.finditer(raw):
        i = m.start()
        byte = raw[i]
        base = i * 8
        while byte:
            low = byte & -byte
            out.append(base + low.bit_length() - 1)
            byte ^= low
    return out


class _Index:
    """Filter bitsets and sort orders over the live rows of ``practice_search``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.changes = -1
        self.text_changes = -1
        self.totals = (0, 0)
        self.ref: list[str] = []
        self.live: list[bool] = []
        self.created: list[int] = []
        self.title_key: list[str] = []
        self.rc: list[int] = []
        self.rs: list[int] = []
        self.reps: list[int] = []
        self.keys_of: list[tuple[tuple[Key, ...], ...]] = []
        """Per live docid, the keys of each of its fields (as `_field_keys` made them) and its
        rated and replicated keys (if so); not its live key."""
        self._keys: dict[str, dict[Any, tuple[Key, ...]]] = {facet: {} for facet in _FIELDS}
        """The keys of each field value met (e.g. "FOOD HEALTH" of "sector"), made once: rows
        share them instead of holding copies (most of the index's memory once)."""
        self.bits: dict[Key, bytearray] = {}
        self.codes: dict[str, set[str]] = {facet: set() for facet in FACETS}
        self._ints: dict[Key, int] = {}
        self.rated: set[int] = set()
        self.orders: dict[str, list[int]] = {}
        self._rating: tuple[float, int, list[int], list[float], dict[float, int]] | None = None
        self.text: OrderedDict[str, int] = OrderedDict()
        self.ranked: OrderedDict[str, list[tuple[int, float]]] = OrderedDict()

    # -- sort keys -------------------------------------------------------------------------------
    def key_fn(self, sort: str) -> Callable[[int], Any]:
        ref = self.ref
        if sort == "updated":
            created = self.created
            return lambda d: (-created[d], ref[d])
        if sort == "title":
            title = self.title_key
            return lambda d: (title[d], ref[d])
        if sort == "replications":
            reps = self.reps
            return lambda d: (-reps[d], ref[d])
        assert sort == "ref"
        return lambda d: ref[d]

    # -- keeping up with the table ---------------------------------------------------------------
    def refresh(self, db: sqlite3.Connection) -> None:
        row = db.execute(
            "SELECT changes, text_changes, rating_sum, rating_count FROM search_state"
        ).fetchone()
        changes, text_changes = int(row[0]), int(row[1])
        totals = (int(row[2]), int(row[3]))
        if changes == self.changes:
            self.totals = totals  # ratings of practices not held change only the prior
            return
        if text_changes != self.text_changes:
            self.text.clear()
            self.ranked.clear()
        if changes < self.changes:  # another database under the same name: start over
            self._reset()
        delta: list[tuple[Any, ...]] = []
        if self.changes >= 0:
            (n,) = db.execute(
                "SELECT count(*) FROM practice_search WHERE changed > ?", (self.changes,)
            ).fetchone()
            if n <= _patch_limit(len(self.ref)):
                delta = db.execute(_ROWS + " WHERE changed > ?", (self.changes,)).fetchall()
            else:
                self._reset()
        if self.changes < 0:
            (top,) = db.execute("SELECT max(docid) FROM practice_search").fetchone()
            with _collector_paused():
                self._build(db.execute(_ROWS), -1 if top is None else int(top))
        else:
            for r in delta:
                self._patch(r)
        self.changes, self.text_changes, self.totals = changes, text_changes, totals
        self._rating = None

    def _grow(self, docid: int) -> None:
        missing = docid + 1 - len(self.ref)
        if missing > 0:
            self.ref += [""] * missing
            self.live += [False] * missing
            self.created += [0] * missing
            self.title_key += [""] * missing
            self.rc += [0] * missing
            self.rs += [0] * missing
            self.reps += [0] * missing
            self.keys_of += [()] * missing

    def _field_keys(self, facet: str, value: Any) -> tuple[Key, ...]:
        """The keys of one field's value: one per code of a space-separated list (sector,
        target_group, language), else the value itself (none for no country)."""
        memo = self._keys[facet]
        keys = memo.get(value)
        if keys is None:
            if facet in ("sector", "target_group", "language"):
                keys = tuple((facet, code) for code in value.split())
            elif value or facet != "country":
                keys = ((facet, value),)
            else:
                keys = ()
            memo[value] = keys
        return keys

    def _set(self, row: tuple[Any, ...]) -> None:
        """Take one row in (its docid within the lists)."""
        (docid, ref, author, live, created, title, status, country, sectors, groups, langs, rc, rs,
         reps) = row  # fmt: skip
        self.ref[docid] = ref
        self.live[docid] = bool(live)
        self.created[docid] = created
        self.title_key[docid] = title  # lower(title) in SQL: ASCII letters only, as sorting did
        self.rc[docid], self.rs[docid], self.reps[docid] = rc, rs, reps
        field_keys = self._field_keys
        self.keys_of[docid] = (
            (
                field_keys("author", author),
                field_keys("status", status),
                field_keys("sector", sectors),
                field_keys("target_group", groups),
                field_keys("language", langs),
                field_keys("country", country),
                _REPLICATED if reps else (),
                _RATED if rc else (),
            )
            if live
            else ()
        )

    def _bit(self, key: Key, docid: int, on: bool) -> None:
        ba = self.bits.get(key)
        if ba is None:
            ba = self.bits[key] = bytearray()
            if key[0] in self.codes:
                self.codes[key[0]].add(key[1])
        i = docid >> 3
        if i >= len(ba):
            ba.extend(bytes(i + 1 - len(ba)))
        if on:
            ba[i] |= 1 << (docid & 7)
        else:
            ba[i] &= ~(1 << (docid & 7)) & 0xFF
        self._ints.pop(key, None)

    def _build(self, rows: sqlite3.Cursor, top: int) -> None:
        """From every row (``top``: the highest docid), a chunk at a time, column by column:
        the per-docid lists filled, the keys of each distinct field value made once, the live
        docids grouped by field value, then each key's bitset made from the groups of the values
        that name it. Columns are gone through by ``map`` (`_run`), not a Python loop per row:
        100,000 practices in about 0.7 s besides reading them."""
        self._grow(top)
        live: list[int] = []
        by_value: dict[str, defaultdict[Any, list[int]]] = {f: defaultdict(list) for f in _FIELDS}
        while chunk := rows.fetchmany(_CHUNK):
            live += self._take(chunk, by_value)
        members: dict[Key, list[int]] = {_LIVE: live}
        members[_RATED[0]] = [d for d in live if self.rc[d]]
        members[_REPLICATED[0]] = [d for d in live if self.reps[d]]
        for facet, groups in by_value.items():
            for value, docids in groups.items():
                for key in self._field_keys(facet, value):
                    members.setdefault(key, []).extend(docids)
        size = len(self.ref)
        for key, docids in members.items():
            if docids:
                self.bits[key] = _bitset(docids, size)
                if key[0] in self.codes:
                    self.codes[key[0]].add(key[1])
        self.rated.update(members[_RATED[0]])
        self._ints.clear()
        self.orders["ref"] = sorted(live, key=self.ref.__getitem__)
        self.order("updated")  # the listing's: the others on first use

    def _take(
        self, rows: list[tuple[Any, ...]], by_value: dict[str, defaultdict[Any, list[int]]]
    ) -> list[int]:
        """One chunk of a build: fill the lists, file the live docids under their field values
        in ``by_value``; return the live docids."""
        (docids, refs, authors, lives, created, titles, statuses, countries, sectors, groups,
         langs, rcs, rss, repss) = zip(*rows, strict=True)  # fmt: skip
        columns: list[tuple[list[Any], Iterable[Any]]] = [
            (self.ref, refs),
            (self.live, map(bool, lives)),
            (self.created, created),
            (self.title_key, titles),
            (self.rc, rcs),
            (self.rs, rss),
            (self.reps, repss),
        ]
        dense = docids == tuple(range(docids[0], docids[0] + len(docids)))
        for target, column in columns:
            if dense:  # the usual case (rowids in order, none missing): one slice each
                target[docids[0] : docids[0] + len(docids)] = column
            else:
                _run(map(target.__setitem__, docids, column))
        live = list(compress(docids, lives))
        keys_by_field: list[Iterator[tuple[Key, ...]]] = []
        fields = (authors, statuses, sectors, groups, langs, countries)  # as _FIELDS
        for facet, column in zip(_FIELDS, fields, strict=True):
            values = list(compress(column, lives))
            for value in set(values).difference(self._keys[facet]):
                self._field_keys(facet, value)
            _run(map(list.append, map(by_value[facet].__getitem__, values), live))
            keys_by_field.append(map(self._keys[facet].__getitem__, values))
        keys_by_field.append(map(((), _REPLICATED).__getitem__, map(bool, compress(repss, lives))))
        keys_by_field.append(map(((), _RATED).__getitem__, map(bool, compress(rcs, lives))))
        _run(map(self.keys_of.__setitem__, live, zip(*keys_by_field, strict=True)))
        return live

    def order(self, sort: str) -> list[int]:
        """The live docids in ``sort`` order ("ref", "updated", "title" or "replications"),
        made on first use and kept up to date from then on."""
        found = self.orders.get(sort)
        if found is not None:
            return found
        if sort == "ref":
            made = sorted(_members(self.get(_LIVE)), key=self.ref.__getitem__)
        else:
            # A stable sort of the ref order: by (key, ref) without building tuples.
            by_ref = self.order("ref")
            created, title, reps = self.created, self.title_key, self.reps
            if sort == "updated":
                made = sorted(by_ref, key=lambda d: -created[d])
            elif sort == "title":
                made = sorted(by_ref, key=title.__getitem__)
            else:
                assert sort == "replications"
                made = sorted(by_ref, key=lambda d: -reps[d])
        self.orders[sort] = made
        return made

    def _patch(self, row: tuple[Any, ...]) -> None:
        docid = int(row[0])
        if docid < len(self.ref) and self.live[docid]:
            self._bit(_LIVE, docid, False)
            for keys in self.keys_of[docid]:
                for key in keys:
                    self._bit(key, docid, False)
            for sort, order in self.orders.items():
                fn = self.key_fn(sort)
                del order[bisect.bisect_left(order, fn(docid), key=fn)]
            self.rated.discard(docid)
        self._grow(docid)
        self._set(row)
        if self.live[docid]:
            self._bit(_LIVE, docid, True)
            for keys in self.keys_of[docid]:
                for key in keys:
                    self._bit(key, docid, True)
            for sort, order in self.orders.items():
                fn = self.key_fn(sort)
                bisect.insort(order, docid, key=fn)
            if self.rc[docid]:
                self.rated.add(docid)

    # -- bitsets ---------------------------------------------------------------------------------
    def get(self, key: Key) -> int:
        value = self._ints.get(key)
        if value is None:
            ba = self.bits.get(key)
            value = self._ints[key] = int.from_bytes(ba, "little") if ba else 0
        return value

    def fts_bits(self, db: sqlite3.Connection, table: str, match: str) -> int:
        """The live docids a full-text query matches."""
        (ids,) = db.execute(
            f"SELECT group_concat(rowid) FROM {table} WHERE {table} MATCH ?", (match,)
        ).fetchone()
        return self._bits(_parse_ids(ids))

    def _bits(self, docids: list[int]) -> int:
        size = len(self.ref)
        digits = bytearray(b"0") * size  # "0"/"1" per docid: int(…, 2) packs them in C
        try:
            for d in docids:
                digits[d] = 49
        except IndexError:  # a row the index does not hold yet (never live in it)
            for d in docids:
                if d < size:
                    digits[d] = 49
        return int(digits[::-1] or b"0", 2) & self.get(("live", ""))

    def text_bits(self, db: sqlite3.Connection, match: str, *, scored: bool) -> int:
        """Practices a full-text expression matches; the last few are kept (until the full text
        changes), per expression and per phrase: an expression of several phrases (all of which
        must match) is the intersection of its phrases' sets, so a phrase met again in another
        query is not matched again. Of the phrases not kept, the conjunction is matched at once
        (materialising only the intersection).
        ``scored``: rank them all at once too (by bm25, for the last relevance tier), cheaper
        than two passes when few match (several words); the ranking of the last few is kept."""
        if scored and match not in self.ranked:
            rows = db.execute(
                f"SELECT rowid, {BM25} AS score FROM practices_fts"
                " WHERE practices_fts MATCH ? ORDER BY score",
                (match,),
            ).fetchall()
            _remember(self.ranked, match, rows, _RANKED_CACHE)
            if match not in self.text:
                _remember(self.text, match, self._bits([r[0] for r in rows]), _TEXT_CACHE)
        bits = self._kept(match)
        if bits is not None:
            return bits
        phrases = match.split(" AND ")  # each phrase is quoted and holds no quote: see _words
        bits = -1
        missing: list[str] = []
        for phrase in phrases:
            kept = self._kept(phrase) if len(phrases) > 1 else None
            if kept is None:
                missing.append(phrase)
            else:
                bits &= kept
        if missing:
            rest = " AND ".join(missing)
            kept = self._kept(rest) if len(missing) < len(phrases) else None
            if kept is None:
                kept = self.fts_bits(db, "practices_fts", rest)
                _remember(self.text, rest, kept, _TEXT_CACHE)
            bits &= kept
        _remember(self.text, match, bits, _TEXT_CACHE)
        return bits

    def head_bits(self, db: sqlite3.Connection, match: str) -> int:
        """The live docids whose title, summary, keywords or city match (kept like `text_bits`)."""
        key = f"head: {match}"
        bits = self._kept(key)
        if bits is None:
            bits = self.fts_bits(db, "practices_head_fts", match)
            _remember(self.text, key, bits, _TEXT_CACHE)
        return bits

    def _kept(self, match: str) -> int | None:
        bits = self.text.get(match)
        if bits is not None:
            self.text.move_to_end(match)
        return bits

    def scored(self, match: str) -> list[tuple[int, float]] | None:
        """Every match of ``match`` with its bm25, if `text_bits` ranked them."""
        return self.ranked.get(match)

    # -- ratings ---------------------------------------------------------------------------------
    @property
    def prior(self) -> float:
        total, count = self.totals
        return (total / count) if count else DEFAULT_PRIOR_MEAN

    def rating_order(self) -> tuple[list[int], list[float]]:
        """Rated live docids by (-bayes, ref), and their -bayes."""
        prior = self.prior
        if self._rating is None or self._rating[:2] != (prior, self.changes):
            # The ref order's rated docids, sorted again (stably) by -bayes alone: no tuple per
            # docid, no string comparisons (a third of a second at 100,000, after any change).
            rated, rs, rc = self.rated, self.rs, self.rc
            weighted, weight = DEFAULT_PRIOR_WEIGHT * prior, DEFAULT_PRIOR_WEIGHT
            by_ref = [d for d in self.order("ref") if d in rated]
            minus = {d: -((weighted + rs[d]) / (weight + rc[d])) for d in by_ref}  # -bayes
            order = sorted(by_ref, key=minus.__getitem__)
            keys = [minus[d] for d in order]
            self._rating = (prior, self.changes, order, keys, {})
        return self._rating[2], self._rating[3]

    def min_rating_bits(self, minimum: float) -> int:
        order, keys = self.rating_order()
        assert self._rating is not None
        cache: dict[float, int] = self._rating[4]
        bits = cache.get(minimum)
        if bits is None:
            prior = self.prior
            unrated = (DEFAULT_PRIOR_WEIGHT * prior + 0) / (DEFAULT_PRIOR_WEIGHT + 0)
            bits = self.get(("live", "")) & ~self.get(("rated", "")) if unrated >= minimum else 0
            above = bytearray((len(self.ref) + 7) // 8)
            for d in order[: bisect.bisect_right(keys, -minimum)]:
                above[d >> 3] |= 1 << (d & 7)
            bits = cache[minimum] = bits | int.from_bytes(above, "little")
        return bits


_ROWS = (
    "SELECT docid, ref, author, live, created, lower(title), status, country, sectors,"
    " target_groups,"
    " languages, rating_count, rating_sum, replications FROM practice_search"
)
_INDEXES: dict[tuple[str, bytes], _Index] = {}
_INDEXES_LOCK = threading.Lock()


def reset_caches() -> None:
    """Forget the in-memory indexes (each is rebuilt by the next search of its database)."""
    with _INDEXES_LOCK:
        _INDEXES.clear()


def _index_for(db: sqlite3.Connection) -> _Index:
    """The shared index of this database file (a connection inside a transaction gets its own:
    it may see writes that are not committed)."""
    if db.in_transaction:
        return _Index()
    files = [str(r[2]) for r in db.execute("PRAGMA database_list") if r[1] == "main"]
    (token,) = db.execute("SELECT token FROM search_state").fetchone()
    name = files[0] if files and files[0] else f"memory:{id(db)}"
    with _INDEXES_LOCK:
        return _INDEXES.setdefault((name, bytes(token)), _Index())


# -- the query ----------------------------------------------------------------------------------
def _check_cursor(query: api.PracticeQuery, sort: str, scope: bytes, key: bytes) -> list[Any]:
    assert query.cursor is not None
    cursor = api.decode_cursor(query.cursor, key=key)
    if cursor.scope != scope or cursor.sort != sort:
        raise InvalidRecordError("cursor belongs to another query", field="cursor")
    after = list(cursor.after)
    types: tuple[type, ...] = {
        "relevance": (int, float, str),
        "updated": (int, str),
        "rating": (float, str),
        "replications": (int, str),
        "title": (str, str),
    }[sort]
    ok = len(after) == len(types) and all(
        isinstance(v, t) and not isinstance(v, bool) for v, t in zip(after, types, strict=True)
    )
    if not ok:
        raise InvalidRecordError("cursor is malformed", field="cursor")
    return after


def search_practices(
    db: sqlite3.Connection, query: api.PracticeQuery, *, key: bytes
) -> api.PracticeList:
    match = match_expression(query.q) if query.q else None
    sort = query.sort if (query.sort != "relevance" or match) else "updated"
    scope = api.query_scope(query)
    after = _check_cursor(query, sort, scope, key) if query.cursor else None
    author = parse_identity(query.author) if query.author else None
    with _caught_up(db) as index:
        return _search(db, index, query, match, sort, after, author, scope, key)


def warm_index(db: sqlite3.Connection) -> None:
    """Build the shared index of this database now (or catch it up), as a search would: at node
    start, on a thread and connection of its own, so the first search finds it built. A search
    meanwhile waits for it (the index's lock) instead of building one of its own."""
    with _caught_up(db):
        pass


@contextlib.contextmanager
def _caught_up(db: sqlite3.Connection) -> Iterator[_Index]:
    """The index of ``db``, caught up with its rows and held (locked) until the block ends,
    inside one read transaction (the caller's if it is in one)."""
    index = _index_for(db)
    own = not db.in_transaction
    with index.lock:
        if own:
            db.execute("BEGIN")
        try:
            index.refresh(db)
            yield index
        finally:
            if own:
                db.execute("COMMIT")


def _search(
    db: sqlite3.Connection,
    index: _Index,
    query: api.PracticeQuery,
    match: str | None,
    sort: str,
    after: list[Any] | None,
    author: bytes | None,
    scope: bytes,
    key: bytes,
) -> api.PracticeList:
    live = base = index.get(("live", ""))
    if author is not None:
        base &= index.get(("author", author))
    if query.has_replications:
        base &= index.get(("replicated", ""))
    if query.min_rating is not None:
        base &= index.min_rating_bits(query.min_rating)
    chosen = {
        facet: index.get((facet, value))
        for facet, value in (
            ("sector", query.sector),
            ("target_group", query.target_group),
            ("country", query.country),
            ("status", query.status),
            ("language", query.language),
        )
        if value
    }
    result = base
    for bits in chosen.values():
        result &= bits
    need = query.limit + 1
    if sort == "relevance":
        # Before the match set: a first page of title and summary matches does not need it.
        assert match is not None
        page = _relevance_page(db, index, match, result, after, need, filtered=result != live)
        base &= index.text_bits(db, match, scored=False)
    else:
        if match:
            text = index.text_bits(db, match, scored=False)
            base &= text
            result &= text
        page = _sorted_page(index, sort, result, after, need)
    more = len(page) > query.limit
    page = page[: query.limit]
    next_cursor = None
    if more and page:
        next_cursor = api.encode_cursor(
            api.Cursor(sort=sort, after=list(page[-1][0]), scope=scope), key=key
        )
    items = _items(db, [d for _, d in page], index.prior)
    facets: dict[str, dict[str, int]] = {}
    for facet in FACETS:
        within = base
        for other, bits in chosen.items():
            if other != facet:
                within &= bits
        counts = [
            (code, (within & index.get((facet, code))).bit_count()) for code in index.codes[facet]
        ]
        counts.sort(key=lambda c: (-c[1], c[0]))
        facets[facet] = {code: n for code, n in counts if n}
    return api.PracticeList(items=items, next=next_cursor, facets=facets)


Page = list[tuple[tuple[Any, ...], int]]
"""(cursor key, docid) in result order."""


def _sorted_page(index: _Index, sort: str, bits: int, after: list[Any] | None, need: int) -> Page:
    count = bits.bit_count()
    if not count:
        return []
    if sort == "rating":
        return _rating_page(index, bits, after, need)
    fn = index.key_fn(sort)
    order = index.order(sort)
    start = 0 if after is None else bisect.bisect_right(order, tuple(after), key=fn)
    if need * len(order) / count > count:  # few results: sort them rather than walk the order
        mine = sorted(_members(bits), key=fn)
        if after is not None:
            mine = mine[bisect.bisect_right(mine, tuple(after), key=fn) :]
        return [(fn(d), d) for d in mine[:need]]
    raw = bits.to_bytes((bits.bit_length() + 7) // 8, "little")
    size = len(raw)
    page: Page = []
    for i in range(start, len(order)):
        d = order[i]
        if (d >> 3) < size and raw[d >> 3] >> (d & 7) & 1:
            page.append((fn(d), d))
            if len(page) == need:
                break
    return page


def _rating_page(index: _Index, bits: int, after: list[Any] | None, need: int) -> Page:
    """Shrunk mean, highest first: rated practices merged with the unrated ones (all at the
    prior) in ref order."""
    prior = index.prior
    ref = index.ref
    unrated_key = -((DEFAULT_PRIOR_WEIGHT * prior + 0) / (DEFAULT_PRIOR_WEIGHT + 0))
    raw = bits.to_bytes((bits.bit_length() + 7) // 8, "little")
    size = len(raw)

    def member(d: int) -> bool:
        return (d >> 3) < size and bool(raw[d >> 3] >> (d & 7) & 1)

    def rated() -> Iterator[tuple[tuple[Any, ...], int]]:
        order, keys = index.rating_order()
        start = 0
        if after is not None:
            start = bisect.bisect_left(keys, after[0])
            while start < len(order) and (keys[start], ref[order[start]]) <= tuple(after):
                start += 1
        for i in range(start, len(order)):
            d = order[i]
            if member(d):
                yield (keys[i], ref[d]), d

    def unrated() -> Iterator[tuple[tuple[Any, ...], int]]:
        order = index.order("ref")
        start = 0
        if after is not None:
            if after[0] > unrated_key:
                return
            if after[0] == unrated_key:
                start = bisect.bisect_right(order, after[1], key=lambda d: ref[d])
        for d in order[start:]:
            if not index.rc[d] and member(d):
                yield (unrated_key, ref[d]), d

    page: Page = []
    for entry in heapq.merge(rated(), unrated(), key=lambda e: e[0]):
        page.append(entry)
        if len(page) == need:
            break
    return page


def _relevance_page(
    db: sqlite3.Connection,
    index: _Index,
    match: str,
    bits: int,
    after: list[Any] | None,
    need: int,
    *,
    filtered: bool,
) -> Page:
    """Tier by tier (see the module doc), each ranked by bm25 then ref. ``bits``: the filters
    (not the full-text match: every row of the head index matches the full index too).

    bm25 costs more per row than anything else here (3-4 us: it reads the row's sizes and hits),
    and a tier's query ranks every row it matches before LIMIT applies. So when the filters leave
    practices out (``filtered``), the query skips them itself (a "0"/"1" per docid bound as a
    blob, read by ``substr``) before bm25 ranks the rest: with one sector in ten, a tenth of the
    work. Unfiltered, the last tier ranks every match at once (kept, see `_Index.text_bits`)."""
    ref = index.ref
    page: Page = []
    first_tier = 0 if after is None else int(after[0])
    for tier, (table, expr, rank) in enumerate(_tiers(match)):
        if tier < first_tier:
            continue
        wanted = bits
        ranked = None
        if tier == 2:  # the head tiers are done: what is left needs the description
            ranked = index.scored(match)
            if ranked is None and not filtered:
                wanted &= index.text_bits(db, match, scored=True)
                ranked = index.scored(match)
            else:
                wanted &= index.text_bits(db, match, scored=False)
            wanted &= ~index.head_bits(db, match)
        if not wanted:
            continue
        raw = wanted.to_bytes((wanted.bit_length() + 7) // 8, "little")
        size = len(raw)
        floor = after[1] if after is not None and tier == first_tier else None
        only = _digits(wanted, len(ref)) if ranked is None and (filtered or tier == 2) else None
        limit: int | None = need - len(page) + 20
        while True:
            if ranked is not None:  # every match, ranked already
                rows, limit = ranked, None
                if floor is not None:
                    rows = rows[bisect.bisect_left(rows, floor, key=lambda r: r[1]) :]
                found = [
                    ((tier, score, ref[d]), d)
                    for d, score in rows
                    if (d >> 3) < size and raw[d >> 3] >> (d & 7) & 1
                ]
                if after is not None:
                    found = [e for e in found if e[0] > tuple(after)]
                found.sort()
                break
            sql = f"SELECT rowid, {rank} AS score FROM {table} WHERE {table} MATCH ?"
            args: list[Any] = [expr]
            if only is not None:
                sql += " AND substr(?, rowid + 1, 1) = x'31'"
                args.append(only)
            if floor is not None:
                sql = f"SELECT rowid, score FROM ({sql}) WHERE score >= ?"
                args.append(floor)
            sql += " ORDER BY score"
            if limit is not None:
                sql += " LIMIT ?"
                args.append(limit)
            rows = db.execute(sql, args).fetchall()
            found = []
            for d, score in rows:
                if (d >> 3) < size and raw[d >> 3] >> (d & 7) & 1:
                    entry = ((tier, score, ref[d]), d)
                    if after is None or entry[0] > tuple(after):
                        found.append(entry)
            found.sort()
            # A limited fetch is complete if it ran out of rows, or if it found enough and no
            # row past the limit can tie with the last one taken.
            if limit is None or len(rows) < limit:
                break
            left = need - len(page)
            if len(found) >= left and rows[-1][1] > found[left - 1][0][1]:
                break
            limit = None
        page += found[: need - len(page)]
        if len(page) >= need:
            break
    return page


def _items(db: sqlite3.Connection, docids: list[int], prior: float) -> list[api.PracticeItem]:
    if not docids:
        return []
    marks = ",".join("?" * len(docids))
    rows = {
        int(r[0]): r
        for r in db.execute(
            "SELECT docid, ref, title, summary, city, country, sectors, target_groups, status,"
            f" created, rating_count, rating_sum, replications, author FROM practice_search"
            f" WHERE docid IN ({marks})",
            docids,
        )
    }
    flags = trust_view.marks(db, (bytes(r[-1]) for r in rows.values()))
    items = []
    for docid in docids:
        (_, ref, title, summary, city, country, sectors, groups, status, created, count, total,
         replications, author) = rows[docid]  # fmt: skip
        flag = flags[bytes(author)]
        mean = round(total / count, 2) if count >= DEFAULT_MIN_COUNT else None
        bayes = (
            round((DEFAULT_PRIOR_WEIGHT * prior + total) / (DEFAULT_PRIOR_WEIGHT + count), 3)
            if count
            else None
        )
        items.append(
            api.PracticeItem(
                ref=ref,
                author=ref.partition("/")[0],
                addr=ref.partition("/")[2],
                title=str(title),
                summary=summary,
                city=city,
                country=country,
                sectors=sectors.split(),
                target_groups=groups.split(),
                status=status,
                rating=api.RatingSummary(
                    count=count, mean=mean, bayes=bayes, min_count=DEFAULT_MIN_COUNT
                ),
                replications=int(replications),
                updated=api.utc_from_ms(int(created)),
                unverified=flag.unverified,
                revoked=flag.revoked,
            )
        )
    return items
