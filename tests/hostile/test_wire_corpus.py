"""The hostile corpus (corpus.py) published as raw bytes onto a relay a running node consumes.

Built on tests/node/test_wire_input.py (its relay + node + honest-city fixture and helpers), which
covers random bytes, flipped bits, forged signatures, one small-order signer, oversize, future
and unknown kinds; this adds the rest of the corpus: every small-order point, S >= L,
non-canonical R and A, duplicate keys, lone surrogates, deep nesting, huge strings and arrays,
NaN/Inf, negative and enormous integers, wrong envelope versions, truncated and trailing bytes.

All cases go onto the stream in one burst; afterwards nothing stored has changed, each is counted
under its code, and the city's genuine next record still applies.
"""

from __future__ import annotations

from collections import Counter

from ..node.conftest import (  # fixtures the imported one needs
    make_home,  # noqa: F401
    practice,
    start_node,  # noqa: F401
    wait_for,
)
from ..node.test_wire_input import (  # the fixture is imported to be used here
    STREAM,
    Mesh,
    _cursor_at,
    applied,
    mesh,  # noqa: F401
    rejections,
    snapshot,
)
from .corpus import EXPECTED, edge_cases


async def test_corpus_over_nats_is_counted_by_code_and_stores_nothing(mesh: Mesh) -> None:  # noqa: F811
    node, city = mesh.node, mesh.city
    genuine = await mesh.city_next(practice(20, title="Corpus base"))
    cases = edge_cases(city.key, genuine)
    assert {name for name, _ in cases} == set(EXPECTED)
    before = await snapshot(node)
    counted_before = Counter(await rejections(node))

    last = 0
    for _, data in cases:
        ack = await mesh.js.publish(mesh.practice_subject, data, stream=STREAM)
        last = ack.seq
    await wait_for(lambda: _cursor_at(node, mesh.url, last))

    assert await snapshot(node) == before
    counted = Counter(await rejections(node))
    counted.subtract(counted_before)
    assert +counted == Counter(EXPECTED.values())

    # The node keeps serving: the genuine record the corpus was cut from still applies.
    await mesh.js.publish(mesh.practice_subject, genuine.envelope, stream=STREAM)
    await wait_for(lambda: applied(node, genuine.id))
