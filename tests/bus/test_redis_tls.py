"""Redis as users run it: TLS with a client certificate, an ACL user, a database number.

Each test makes its own CA and certificates (``switchboard.testing.tls``) and
starts a real ``redis-server`` that speaks TLS only and has the default user
disabled.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
import trio
from structlog.testing import capture_logs

from bus.base import CommandError, ConnectionLost
from bus.redis import RedisBus, open_redis_bus
from bus.resp import InvalidRedisURL, RedisAddress, RedisClient, TLSConfig, TLSHandshakeFailed
from switchboard.testing.redis_server import AclUser, RedisServerHandle, open_redis_server
from switchboard.testing.tls import TestCertificates, make_certificates

pytestmark = pytest.mark.redis

# What a Switchboard deployment needs, and no more: its own keys, its
# streams, scripts and the cluster map; nothing from @dangerous (CONFIG,
# KEYS, FLUSHALL, DEBUG, ...).
USER = AclUser("switchboard", "pa:ss/w@rd", "~sb:* ~s ~k* &* +@all -@dangerous")


def _q(path: Path) -> str:
    return urlencode({"": str(path)})[1:]


@pytest.fixture
async def certs(tmp_path: Path) -> TestCertificates:
    return await make_certificates(tmp_path)


@pytest.fixture
async def tls_server(certs: TestCertificates) -> AsyncIterator[RedisServerHandle]:
    async with open_redis_server(tls=certs, user=USER) as server:
        yield server


def test_rediss_urls_carry_the_tls_settings() -> None:
    addr = RedisAddress.from_url(
        "rediss://u:p%2Fw@redis.example:6380/4?ssl_ca_certs=/ca.pem"
        "&ssl_certfile=/c.pem&ssl_keyfile=/k.pem&ssl_cert_reqs=required"
    )
    assert (addr.host, addr.port, addr.db, addr.username, addr.password) == (
        "redis.example",
        6380,
        4,
        "u",
        "p/w",
    )
    assert addr.tls == TLSConfig("/ca.pem", "/c.pem", "/k.pem", "required", True)
    assert str(addr) == "rediss://redis.example:6380/4"  # no password, no files
    # A managed Redis with a public CA needs no parameters at all.
    assert RedisAddress.from_url("rediss://:pw@h").tls == TLSConfig()
    assert RedisAddress.from_url("redis://h").tls is None


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("rediss://h?ssl_ca_cert=/x", "unknown Redis URL parameter(s) ssl_ca_cert"),
        ("redis://h?ssl_ca_certs=/x", "need a rediss:// URL"),
        ("rediss://h?ssl_cert_reqs=maybe", "ssl_cert_reqs must be one of"),
        ("rediss://h?ssl_check_hostname=perhaps", "ssl_check_hostname must be"),
        ("rediss://h?ssl_keyfile=/k", "ssl_keyfile needs ssl_certfile"),
        ("unix:///tmp/redis.sock", "want redis:// or rediss://"),
        ("redis://h:1/-1", "database number"),
        ("redis://h:notaport/0", "bad port or database number"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(InvalidRedisURL, match=says.replace("(", r"\(").replace(")", r"\)")):
        RedisAddress.from_url(url)


def test_unreadable_tls_files_fail_when_the_client_is_made(tmp_path: Path) -> None:
    url = f"rediss://h?ssl_ca_certs={tmp_path / 'missing.pem'}"
    with pytest.raises(InvalidRedisURL, match="cannot use the Redis TLS files"):
        RedisClient.from_url(url)


async def test_the_bus_works_over_tls_with_an_acl_user_and_a_database(
    tls_server: RedisServerHandle,
) -> None:
    with trio.fail_after(20):
        async with open_redis_bus(tls_server.url_with(db=3)) as bus:
            assert bus.client.address.tls is not None
            await bus.ensure_group("sb:{p1}:calls", "g")
            first = await bus.append("sb:{p1}:calls", {"n": "1"})
            [entry] = await bus.read_group("sb:{p1}:calls", "g", "c", block_ms=1000)
            assert (entry.id, entry.fields) == (first, {"n": "1"})
            assert await bus.ack("sb:{p1}:calls", "g", [first]) == 1
            lease = await bus.acquire_lease("sb:{p1}:lease", "me", 10_000)
            assert lease is not None
            assert await bus.set_if_lease("sb:{p1}:state:CA1", "x", lease)
            # Blocking reads run on connections of their own: those speak TLS too.
            async with trio.open_nursery() as nursery:
                got: list[str] = []

                async def reader() -> None:
                    entries = await bus.read("sb:{p2}:calls", "$", block_ms=5000)
                    got.extend(e.fields["n"] for e in entries)

                nursery.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()
                while not got:
                    await bus.append("sb:{p2}:calls", {"n": "2"})
                    await trio.sleep(0.01)
            assert got[0] == "2"
        # The data went to database 3, not 0.
        async with open_redis_bus(tls_server.url_with(db=0)) as other:
            assert await other.get("sb:{p1}:state:CA1") is None
            assert await other.range("sb:{p1}:calls") == []


async def test_the_acl_user_is_held_to_its_rules(tls_server: RedisServerHandle) -> None:
    with trio.fail_after(20):
        async with open_redis_bus(tls_server.url) as bus:
            with pytest.raises(CommandError, match="NOPERM"):
                await bus.client.execute("FLUSHALL")
            with pytest.raises(CommandError, match="NOPERM"):
                await bus.set("other-app:key", "x")


async def test_a_wrong_password_is_refused_clearly(tls_server: RedisServerHandle) -> None:
    url = tls_server.url.replace("pa%3Ass%2Fw%40rd", "wrong")
    assert url != tls_server.url
    with trio.fail_after(20), pytest.raises(CommandError, match="WRONGPASS") as info:
        async with open_redis_bus(url):
            pass  # pragma: no cover - never reached
    assert not info.value.retriable
    assert "wrong" not in str(info.value)


async def test_no_password_is_refused_clearly(tls_server: RedisServerHandle) -> None:
    url = tls_server.url.replace("switchboard:pa%3Ass%2Fw%40rd@", "")
    with trio.fail_after(20), pytest.raises(CommandError, match="NOAUTH"):
        async with open_redis_bus(url):
            pass  # pragma: no cover - never reached


async def test_an_untrusted_server_certificate_is_refused(
    tls_server: RedisServerHandle, tmp_path: Path
) -> None:
    (tmp_path / "other").mkdir()
    stranger = await make_certificates(tmp_path / "other")
    assert tls_server.tls is not None
    url = tls_server.url.replace(_q(tls_server.tls.ca_file), _q(stranger.ca_file))
    assert url != tls_server.url
    with (
        trio.fail_after(20),
        capture_logs(),
        pytest.raises(TLSHandshakeFailed, match="not trusted") as info,
    ):
        async with open_redis_bus(url):
            pass  # pragma: no cover - never reached
    assert not info.value.retriable


async def test_a_missing_client_certificate_is_refused_with_a_hint(
    tls_server: RedisServerHandle,
) -> None:
    url = tls_server.url.split("&ssl_certfile")[0]
    assert "ssl_ca_certs" in url
    with trio.fail_after(20), capture_logs(), pytest.raises(Exception) as info:
        async with open_redis_bus(url):
            pass  # pragma: no cover - never reached
    # Redis either sends an alert (TLSHandshakeFailed) or resets the
    # connection (ConnectionLost: a restart looks the same); both name the fix.
    assert isinstance(info.value, TLSHandshakeFailed | ConnectionLost)
    assert "client certificate" in str(info.value)


async def test_plain_redis_to_a_tls_port_is_a_lost_connection(
    tls_server: RedisServerHandle,
) -> None:
    # The server drops a client that does not start a handshake: retriable,
    # like any connection the server closes.
    bus = RedisBus.from_url(f"redis://127.0.0.1:{tls_server.port}/0")
    try:
        with trio.fail_after(20), capture_logs(), pytest.raises(ConnectionLost):
            await bus.client.execute("PING")
    finally:
        await bus.aclose()
