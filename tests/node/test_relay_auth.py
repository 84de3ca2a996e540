"""Governed relays: nkey logins bound by signed membership, per-city subject permissions, reload.

Real nats-server processes throughout; the relay runs in-process (`Relay`), nodes are real Nodes
that log in with their transport key.
"""

from __future__ import annotations

import functools
import gc
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import nacl.signing
import nats
import nats.errors
import nats.js.errors
import nkeys
import pytest
from click.testing import CliRunner
from nats.aio.client import Client

from citymesh.node import daemon
from citymesh.node.cli_relay import relay
from citymesh.node.config import Home
from citymesh.node.daemon import Node
from citymesh.node.link import LinkContext
from citymesh.node.natsserver import NatsServer, NatsServerError, ServerConfig
from citymesh.node.nkey import (
    NkeyError,
    decode_public,
    decode_seed,
    encode_public,
    encode_seed,
    parse_user_key,
)
from citymesh.node.relay import Relay, RelayConfig, RelayError, check_config
from citymesh.node.relay_auth import (
    MembershipLog,
    inbox_prefix,
    member_grants,
    render_authorization,
)
from citymesh.practices.membership import Standing
from citymesh.protocol.envelope import open_envelope, seal
from citymesh.protocol.identity import (
    Genesis,
    SecretKey,
    identity_of,
    identity_text,
    public_key_text,
)
from citymesh.protocol.records import MembershipBody, NetworkBody, Record
from citymesh.protocol.subjects import stream_name, subject

from .conftest import MakeHome, StartNode, practice, wait_for

NET = "citymesh"
STREAM = stream_name(NET)


# -- nkey text ---------------------------------------------------------------------------------
def test_nkey_text_matches_the_nkeys_package() -> None:
    for _ in range(20):
        seed = os.urandom(32)
        public = nacl.signing.SigningKey(seed).verify_key.encode()
        kp = nkeys.from_seed(encode_seed(seed).encode())
        assert kp.seed.decode() == encode_seed(seed)
        assert kp.public_key.decode() == encode_public(public)
        assert encode_seed(seed).startswith("SU")
        assert encode_public(public).startswith("U")
        assert decode_seed(kp.seed.decode()) == seed
        assert decode_public(kp.public_key.decode()) == public
        # what nats-py signs the login nonce with verifies under the raw public key
        nacl.signing.VerifyKey(public).verify(b"nonce", kp.sign(b"nonce"))


def test_nkey_text_refuses_typos_and_other_kinds() -> None:
    key = SecretKey(os.urandom(32))
    text = encode_public(key.public_key)
    typo = text[:10] + ("A" if text[10] != "A" else "B") + text[11:]
    with pytest.raises(NkeyError, match="checksum"):
        decode_public(typo)
    with pytest.raises(NkeyError, match="not a user"):
        decode_public(encode_public(key.public_key, prefix=14 << 3))
    with pytest.raises(NkeyError, match="must start with S"):
        decode_seed(text)
    with pytest.raises(NkeyError):
        decode_public("u" + text[1:])
    with pytest.raises(NkeyError):
        encode_seed(b"short")
    assert parse_user_key(text) == key.public_key
    assert parse_user_key(public_key_text(key.public_key)) == key.public_key
    with pytest.raises(NkeyError):
        parse_user_key("cmpk1notakey")
    with pytest.raises(NkeyError):
        parse_user_key(encode_seed(key.seed()))


# -- rendering and the membership view -----------------------------------------------------------
def city(n: int) -> tuple[bytes, SecretKey]:
    key = SecretKey(bytes([n]) * 32)
    return identity_of(Genesis(key=key.public_key)), key


def test_only_members_with_a_transport_key_get_a_user() -> None:
    (a, _), (b, _), (c, _), (d, _) = city(1), city(2), city(3), city(4)
    ta, tb, tc = (SecretKey(bytes([n]) * 32).public_key for n in (11, 12, 13))
    members = {
        a: Standing("member", transport_key=ta),
        b: Standing("revoked", transport_key=tb),
        c: Standing("unknown", transport_key=tc),
        d: Standing("member", role="steward"),
    }
    grants = member_grants(NET, members)
    assert [g.nkey for g in grants] == [encode_public(ta)]
    perms = grants[0].permissions
    assert perms is not None
    assert perms.publish[0] == f"cm.{NET}.{identity_text(a)}.*"
    assert f"{inbox_prefix(a)}.>" in perms.subscribe
    for forbidden in (
        "STREAM.CREATE",
        "STREAM.UPDATE",
        "STREAM.DELETE",
        "STREAM.PURGE",
        "$JS.API.>",
    ):
        assert not any(forbidden in subj for subj in perms.publish), forbidden

    operator = encode_public(SecretKey(bytes([99]) * 32).public_key)
    text = render_authorization(operator, grants)
    assert text == render_authorization(operator, list(reversed(grants)))
    assert text.count("{nkey:") == 2
    assert encode_public(tb) not in text and encode_public(tc) not in text


def test_one_key_in_two_networks_is_one_user_with_both() -> None:
    a, _ = city(1)
    key = SecretKey(bytes([21]) * 32).public_key
    standing = {a: Standing("member", transport_key=key)}
    operator = encode_public(SecretKey(bytes([99]) * 32).public_key)
    text = render_authorization(
        operator, [*member_grants("one", standing), *member_grants("two", standing)]
    )
    assert text.count(encode_public(key)) == 1
    assert f"cm.one.{identity_text(a)}.*" in text and f"cm.two.{identity_text(a)}.*" in text
    # the operator's own key never becomes a restricted user
    assert (
        render_authorization(encode_public(key), member_grants("one", standing)).count(
            "permissions:"
        )
        == 0
    )


def signed(
    key: SecretKey, author: bytes, seq: int, body: NetworkBody | MembershipBody, addr: str
) -> Record:
    return seal(
        key,
        body=body,
        network=NET,
        author=author,
        seq=seq,
        prev=None if seq == 1 else bytes(32),
        created=int(time.time() * 1000),
        addr=addr,
        genesis=Genesis(key=key.public_key) if seq == 1 else None,
    )


def test_membership_log_counts_only_records_on_their_own_subject() -> None:
    (steward, skey), (a, akey) = city(1), city(2)
    transport = SecretKey(bytes([31]) * 32).public_key
    now = int(time.time() * 1000)
    view = MembershipLog(NET, frozenset({steward}))
    admit = MembershipBody(
        network=NET, member=a, city="Antwerp", transport_key=transport, valid_from=now - 1
    )
    rec = signed(skey, steward, 1, admit, identity_text(a))
    # a member cannot smuggle a steward's record in on its own subject
    assert not view.add(subject(NET, a, "membership"), rec.envelope, now_ms=now)
    assert not view.add(subject(NET, steward, "membership"), b"\x93garbage", now_ms=now)
    assert view.ignored == 2
    assert view.add(subject(NET, steward, "membership"), rec.envelope, now_ms=now)
    assert not view.add(subject(NET, steward, "membership"), rec.envelope, now_ms=now)
    assert view.standings(now_ms=now)[a].state == "member"
    # a membership by a non-steward counts for nothing
    forged = signed(akey, a, 1, admit, identity_text(a))
    view.add(subject(NET, a, "membership"), forged.envelope, now_ms=now)
    revoke = MembershipBody(
        network=NET, member=a, city="Antwerp", status="revoked", valid_from=now - 1
    )
    view.add(
        subject(NET, steward, "membership"),
        signed(skey, steward, 2, revoke, identity_text(a)).envelope,
        now_ms=now,
    )
    assert view.standings(now_ms=now)[a].state == "revoked"
    assert member_grants(NET, view.standings(now_ms=now)) == []


def test_relay_options_that_do_not_fit(tmp_path: Path) -> None:
    steward, _ = city(1)
    key = SecretKey(bytes([41]) * 32).public_key
    base = RelayConfig(store=tmp_path)
    cases = [
        (RelayConfig(store=tmp_path, steward_keys=((steward, key),)), "need --steward"),
        (
            RelayConfig(store=tmp_path, stewards=(city(2)[0],), steward_keys=((steward, key),)),
            "not a --steward",
        ),
        (RelayConfig(store=tmp_path, replicas=3), "needs a cluster"),
        (RelayConfig(store=tmp_path, cluster="c"), "--server-name"),
        (RelayConfig(store=tmp_path, routes=("nats-route://127.0.0.1:1",)), "need --cluster"),
        (RelayConfig(store=tmp_path, sources=()), None),
    ]
    for cfg, complaint in cases:
        if complaint is None:
            assert check_config(cfg) == (NET,)
            continue
        with pytest.raises(RelayError, match=complaint):
            check_config(cfg)
    assert check_config(base) == (NET,)


# -- NatsServer.reload -------------------------------------------------------------------------
def test_reload_applies_users_and_refuses_bad_config(tmp_path: Path) -> None:
    op_seed = os.urandom(32)
    operator = encode_public(SecretKey(op_seed).public_key)
    server = NatsServer(
        ServerConfig(store_dir=tmp_path / "nats", extra=render_authorization(operator, []))
    )
    with server:
        pid = server.pid
        with pytest.raises(NatsServerError, match="refused the new configuration"):
            server.reload(extra='authorization { users = [ {nkey: "not-a-key"} ] }')
        assert server.pid == pid and server.running
        assert "not-a-key" not in server.config_path.read_text()  # the file matches what runs
        assert server.config.extra == render_authorization(operator, [])
        other = encode_public(SecretKey(os.urandom(32)).public_key)
        server.reload(extra=render_authorization(other, []))
        assert server.pid == pid
        assert other in server.config_path.read_text()
        assert oct(server.config_path.stat().st_mode & 0o777) == "0o600"


# -- a governed relay with real nodes ----------------------------------------------------------
async def login(url: str, seed: bytes, identity: bytes) -> tuple[Client | None, list[str]]:
    """Connect with a transport seed; (client, async errors) or (None, [the refusal])."""
    errors: list[str] = []

    async def on_error(err: Exception) -> None:
        errors.append(str(err))

    nc = Client()
    try:
        await nc.connect(
            url,
            nkeys_seed_str=encode_seed(seed),
            inbox_prefix=inbox_prefix(identity),
            allow_reconnect=False,
            connect_timeout=2,
            error_cb=on_error,
        )
    except (nats.errors.Error, OSError) as err:
        await nc.close()  # nats-py keeps the refused socket open otherwise
        return None, [*errors, str(err)]
    return nc, errors


async def refused(url: str, seed: bytes, identity: bytes) -> bool:
    nc, errors = await login(url, seed, identity)
    if nc is not None:
        await nc.close()
        return False
    return any("authorization" in e.lower() for e in errors)


async def accepted(url: str, seed: bytes, identity: bytes) -> bool:
    nc, _ = await login(url, seed, identity)
    if nc is None:
        return False
    await nc.close()
    return True


def with_transport(monkeypatch: pytest.MonkeyPatch, home: Home) -> None:
    """Until daemon.py passes it: nodes started next log in with their transport key."""
    seed = home.load_transport_key().seed()
    monkeypatch.setattr(daemon, "LinkContext", functools.partial(LinkContext, transport_seed=seed))


async def start_city(
    start_node: StartNode, monkeypatch: pytest.MonkeyPatch, home: Home, url: str
) -> Node:
    with_transport(monkeypatch, home)
    try:
        return await start_node(home, relays=[url])
    finally:
        monkeypatch.setattr(daemon, "LinkContext", LinkContext)


@pytest.fixture
async def operator_js(
    governed: Relay,
) -> AsyncIterator[Callable[[], Awaitable[nats.js.JetStreamContext]]]:
    clients: list[Client] = []

    async def connect() -> nats.js.JetStreamContext:
        assert governed.seed is not None
        nc = await nats.connect(governed.client_url, nkeys_seed_str=governed.seed)
        clients.append(nc)
        return nc.jetstream(timeout=5)

    yield connect
    for nc in clients:
        await nc.close()


@pytest.fixture
def steward_home(make_home: MakeHome) -> Home:
    return make_home("Mechelen", "BEL")


@pytest.fixture
async def governed(tmp_path: Path, steward_home: Home) -> AsyncIterator[Relay]:
    cfg = RelayConfig(
        store=tmp_path / "relay",
        port=0,
        monitor=None,
        stewards=(steward_home.identity(),),
        steward_keys=((steward_home.identity(), steward_home.load_transport_key().public_key),),
    )
    relay = Relay(cfg)
    await relay.start()
    yield relay
    await relay.stop()


async def last_seq_on(js: nats.js.JetStreamContext, subj: str) -> int:
    """The seq of the record last stored on ``subj`` (0: none)."""
    try:
        msg = await js.get_last_msg(STREAM, subj)
    except nats.js.errors.NotFoundError:
        return 0
    return open_envelope(msg.data, now_ms=2**62).header.seq


@pytest.mark.slow
# nats-py (2.16) leaks the socket of each reconnect attempt a relay refuses; collected below
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_governed_relay_admits_refuses_and_revokes(
    governed: Relay,
    steward_home: Home,
    make_home: MakeHome,
    start_node: StartNode,
    monkeypatch: pytest.MonkeyPatch,
    operator_js: Callable[[], Awaitable[nats.js.JetStreamContext]],
) -> None:
    url = governed.client_url
    pid = governed.server.pid
    a_home, c_home = make_home("Antwerp", "BEL"), make_home("Calais", "FRA")
    a, c, s = a_home.identity(), c_home.identity(), steward_home.identity()
    a_seed, c_seed = a_home.load_transport_key().seed(), c_home.load_transport_key().seed()
    js = await operator_js()

    # before any membership: only the operator and the steward's node may log in
    assert await refused(url, a_seed, a)
    steward = await start_city(start_node, monkeypatch, steward_home, url)
    await steward.wait_ready()
    await steward.publish(NetworkBody(title="Cities of Migration", stewards=[s]), NET)
    now = int(time.time() * 1000)
    admit = MembershipBody(
        network=NET,
        member=a,
        city="Antwerp",
        transport_key=a_home.load_transport_key().public_key,
        valid_from=now - 60_000,
    )
    await steward.publish(admit, identity_text(a))

    # the relay reads the membership and reloads: A may log in, its records land
    await wait_for(lambda: accepted(url, a_seed, a))
    antwerp = await start_city(start_node, monkeypatch, a_home, url)
    await antwerp.wait_ready()
    rec = await antwerp.publish(practice(1), "welcome-desk")
    a_practice = subject(NET, a, "practice")

    async def landed() -> bool:
        return await last_seq_on(js, a_practice) == rec.seq

    await wait_for(landed)

    # a non-member's login is refused; its node gets nowhere and nothing of it is stored
    assert await refused(url, c_seed, c)
    calais = await start_city(start_node, monkeypatch, c_home, url)
    link = next(iter(calais.links.values()))

    async def c_refused() -> bool:
        return "authorization" in (link.state.last_error or "").lower()

    await wait_for(c_refused)
    info = await js.stream_info(STREAM, subjects_filter=f"cm.{NET}.{identity_text(c)}.*")
    assert not info.state.subjects

    # a member may not publish on another city's subject, nor touch the stream itself
    nc, errors = await login(url, a_seed, a)
    assert nc is not None
    try:
        member_js = nc.jetstream(timeout=1)
        steward_practice = subject(NET, s, "practice")
        with pytest.raises(nats.errors.TimeoutError):
            await member_js.publish(steward_practice, rec.envelope, stream=STREAM)
        with pytest.raises(nats.errors.TimeoutError):
            await member_js.delete_stream(STREAM)
        with pytest.raises(nats.errors.TimeoutError):
            await member_js.purge_stream(STREAM)
        assert any(f'publish to "{steward_practice}"' in e for e in errors), errors
        assert any("$js.api.stream.delete" in e.lower() for e in errors), errors
        # what it needs works: stream info, its own last record, an ordered consumer
        assert (await member_js.stream_info(STREAM)).config.name == STREAM
        got: list[bytes] = []

        async def on_msg(msg: nats.aio.msg.Msg) -> None:
            got.append(msg.data)

        sub = await member_js.subscribe(
            f"cm.{NET}.>", stream=STREAM, cb=on_msg, ordered_consumer=True
        )

        async def read_all() -> bool:
            return rec.envelope in got

        await wait_for(read_all)
        await sub.unsubscribe()
    finally:
        await nc.close()
    assert await last_seq_on(js, subject(NET, s, "practice")) == 0
    assert (await js.stream_info(STREAM)).config.name == STREAM

    # the steward revokes A: the relay drops its user without a restart
    revoke = MembershipBody(
        network=NET,
        member=a,
        city="Antwerp",
        status="revoked",
        valid_from=int(time.time() * 1000) - 1,
        reason="left the network",
        until_seq=rec.seq,
    )
    await steward.publish(revoke, identity_text(a))
    await wait_for(lambda: refused(url, a_seed, a))
    a_link = next(iter(antwerp.links.values()))

    async def a_cut_off() -> bool:
        return not a_link.state.connected

    await wait_for(a_cut_off)
    a_link.state.last_error = None
    late = await antwerp.publish(practice(2), "job-fair")

    async def a_retried_and_refused() -> bool:
        return "authorization" in (a_link.state.last_error or "").lower()

    await wait_for(a_retried_and_refused)
    assert late.seq > rec.seq
    assert await last_seq_on(js, a_practice) == rec.seq
    assert governed.server.pid == pid  # reloaded, never restarted
    assert governed.governor is not None and governed.governor.reloads >= 2
    # the steward's node is untouched by all this
    assert await accepted(url, steward_home.load_transport_key().seed(), s)
    for node in (antwerp, calais):
        await node.stop()
    gc.collect()


@pytest.mark.slow
async def test_membership_survives_a_relay_restart(
    tmp_path: Path, steward_home: Home, make_home: MakeHome
) -> None:
    """A relay restarted on the same store re-reads membership from its stream."""
    a_home = make_home("Antwerp", "BEL")
    s, a = steward_home.identity(), a_home.identity()
    skey = steward_home.load_key()
    s_transport = steward_home.load_transport_key()
    genesis = steward_home.load_genesis()
    now = int(time.time() * 1000)
    charter = seal(
        skey,
        body=NetworkBody(title="Net", stewards=[s]),
        network=NET,
        author=s,
        seq=1,
        prev=None,
        created=now,
        addr=NET,
        genesis=genesis,
    )
    admit = seal(
        skey,
        body=MembershipBody(
            network=NET,
            member=a,
            city="Antwerp",
            transport_key=a_home.load_transport_key().public_key,
            valid_from=now - 1,
        ),
        network=NET,
        author=s,
        seq=2,
        prev=charter.id,
        created=now,
        addr=identity_text(a),
    )
    cfg = RelayConfig(
        store=tmp_path / "relay",
        port=0,
        monitor=None,
        stewards=(s,),
        steward_keys=((s, s_transport.public_key),),
    )
    relay = Relay(cfg)
    await relay.start()
    try:
        nc, _ = await login(relay.client_url, s_transport.seed(), s)
        assert nc is not None
        js = nc.jetstream(timeout=5)
        for record in (charter, admit):
            await js.publish(subject(NET, s, record.kind), record.envelope, stream=STREAM)
        await nc.close()
        await wait_for(lambda: accepted(relay.client_url, a_home.load_transport_key().seed(), a))
    finally:
        await relay.stop()
    again = Relay(cfg)
    await again.start()
    try:
        await wait_for(lambda: accepted(again.client_url, a_home.load_transport_key().seed(), a))
    finally:
        await again.stop()


# -- the command line ----------------------------------------------------------------------------
def test_relay_key_prints_a_stable_user_key(tmp_path: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(relay, ["key", "--store", str(tmp_path / "r")])
    assert first.exit_code == 0, first.output
    printed = first.output.strip()
    assert printed.startswith("U") and decode_public(printed)
    assert runner.invoke(relay, ["key", "--store", str(tmp_path / "r")]).output.strip() == printed
    assert oct((tmp_path / "r" / "relay.nk").stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--steward", "cmid1nope"], "--steward"),
        (["--steward-key", "UNOTAKEY"], "--steward-key"),
        (["--link-key", "cmpk1xyz"], "--link-key"),
        (["--source", "Not.A.Net"], "--source"),
        (["--leaf-remote", "http://x:1"], "not a leaf-node URL"),
        (["--route", "127.0.0.1:6222"], "not a route URL"),
        (["--replicas", "3"], "needs a cluster"),
        (["--cluster", "c", "--server-name", "n1", "--cluster-listen", "nowhere"], "HOST:PORT"),
        (["--source", "other"], "needs a leaf link"),
    ],
)
def test_relay_run_refuses_bad_options(tmp_path: Path, args: list[str], complaint: str) -> None:
    result = CliRunner().invoke(
        relay, ["run", "--store", str(tmp_path / "r"), "--listen", "127.0.0.1:0", *args]
    )
    assert result.exit_code != 0
    assert complaint in result.output
    assert "Traceback" not in result.output


def test_a_bare_steward_key_needs_exactly_one_steward(tmp_path: Path) -> None:
    (one, _), (two, _) = city(1), city(2)
    key = encode_public(SecretKey(bytes([7]) * 32).public_key)
    result = CliRunner().invoke(
        relay,
        [
            "run",
            "--store",
            str(tmp_path / "r"),
            "--steward",
            identity_text(one),
            "--steward",
            identity_text(two),
            "--steward-key",
            key,
        ],
    )
    assert result.exit_code != 0 and "IDENTITY=KEY" in result.output
