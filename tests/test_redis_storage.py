"""``RedisStorage`` itself: compare-and-set, key layout, expiry, refusals, lifecycle."""

from __future__ import annotations

import gc
import importlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from anybreaker import BreakerRecord, CircuitBreaker, CircuitState, StorageError
from anybreaker.testing import FakeClock

from ._storages import REDIS_HOST, REDIS_PORT, redis_url, require_server, unique_name

coredis = pytest.importorskip("coredis", reason="needs anybreaker[redis]")
redis_storage = pytest.importorskip("anybreaker.storage.redis")
RedisStorage = redis_storage.RedisStorage

pytestmark = [pytest.mark.anyio, pytest.mark.server]


@pytest.fixture
def prefix() -> str:
    """A key prefix no other test uses."""
    return unique_name("anybreaker-test")


@pytest.fixture
async def client(prefix: str) -> AsyncIterator[Any]:
    """A raw coredis client, to look at and tamper with what the storage wrote."""
    require_server("Redis", REDIS_HOST, REDIS_PORT)
    raw = coredis.Redis.from_url(redis_url(), decode_responses=True)
    async with raw:
        try:
            yield raw
        finally:
            keys = [key async for key in raw.scan_iter(match=f"{{{prefix}}}:*")]
            if keys:
                await raw.delete(keys)


@pytest.fixture
async def store(client: Any, prefix: str) -> AsyncIterator[Any]:
    """An open ``RedisStorage`` on the test server under a fresh prefix."""
    async with RedisStorage(redis_url(), prefix=prefix, staleness=0) as made:
        yield made


def record(version: int, state: CircuitState = CircuitState.CLOSED) -> BreakerRecord:
    return BreakerRecord(state=state, version=version, changed_at=1000.0)


# -- compare-and-set ---------------------------------------------------------


async def test_compare_and_set_creates_only_when_nothing_is_stored(store: Any) -> None:
    """Expected version None stores a new record once; a second create is refused."""
    assert await store.compare_and_set("api", None, record(1))
    assert not await store.compare_and_set("api", None, record(1, CircuitState.OPEN))
    assert await store.get("api") == record(1)


async def test_compare_and_set_checks_the_stored_version(store: Any) -> None:
    """A write against a version that is not the stored one changes nothing."""
    await store.compare_and_set("api", None, record(1))
    assert await store.compare_and_set("api", 1, record(2, CircuitState.OPEN))
    assert not await store.compare_and_set("api", 1, record(2))
    assert not await store.compare_and_set("api", 5, record(6))
    assert await store.get("api") == record(2, CircuitState.OPEN)


async def test_compare_and_set_against_a_missing_record_fails(store: Any) -> None:
    """Expecting a version where nothing is stored is a conflict, not a create."""
    assert not await store.compare_and_set("api", 3, record(4))
    assert await store.get("api") is None
    assert await store.names() == []


async def test_compare_and_set_refuses_a_record_without_the_next_version(
    store: Any,
) -> None:
    """The record must carry expected_version + 1."""
    with pytest.raises(ValueError, match=r"record\.version must be 1"):
        await store.compare_and_set("api", None, record(3))


async def test_concurrent_writers_on_one_version_have_one_winner(store: Any, prefix: str) -> None:
    """Of many clients writing against the same version, exactly one succeeds."""
    await store.compare_and_set("api", None, record(1))
    results: list[bool] = []

    async def write(n: int) -> None:
        async with RedisStorage(redis_url(), prefix=prefix) as other:
            new = BreakerRecord(version=2, changed_at=float(n))
            results.append(await other.compare_and_set("api", 1, new))

    async with anyio.create_task_group() as group:
        for n in range(8):
            group.start_soon(write, n)
    assert sorted(results) == [False] * 7 + [True]
    stored = await store.get("api")
    assert stored is not None
    assert stored.version == 2


async def test_record_round_trips_every_field(store: Any) -> None:
    """What is stored reads back equal, trial permits and window counts included."""
    full = BreakerRecord(
        state=CircuitState.HALF_OPEN,
        version=1,
        generation=7,
        changed_at=1234.5,
        open_duration=30.0,
        openings=3,
        forced=False,
        window_size=60.0,
        buckets=((1.0, 4, 2, 1), (7.0, 1, 1, 0)),
        consecutive_failures=2,
        successes=1,
        trials=(("token-a", 1200.25),),
    )
    await store.compare_and_set("api", None, full)
    assert await store.get("api") == full


async def test_names_lists_exactly_the_stored_names(store: Any) -> None:
    """names() follows writes and deletes, names with colons and braces included."""
    for name in ("a", "b:c", "{d}", "ë"):
        await store.compare_and_set(name, None, record(1))
    await store.delete("a")
    await store.delete("never-stored")
    assert sorted(await store.names()) == sorted(["b:c", "{d}", "ë"])
    assert await store.get("a") is None


async def test_a_record_removed_behind_the_storage_leaves_names(store: Any, client: Any) -> None:
    """A record deleted by hand (or evicted) is no longer listed by names()."""
    await store.compare_and_set("a", None, record(1))
    await store.compare_and_set("b", None, record(1))
    await client.delete([store.key("a")])
    assert await store.names() == ["b"]


# -- key layout --------------------------------------------------------------


async def test_keys_sit_under_the_prefix_in_one_cluster_slot(
    store: Any, client: Any, prefix: str
) -> None:
    """Every key is `{prefix}:...`, so on Redis Cluster all of them share one slot."""
    from coredis._utils import hash_slot

    await store.compare_and_set("model-api", None, record(1))
    await store.compare_and_set("{tool}", None, record(1))
    keys = sorted([key async for key in client.scan_iter(match=f"*{prefix}*")])
    assert keys == [
        f"{{{prefix}}}:breaker:model-api",
        f"{{{prefix}}}:breaker:{{tool}}",
        f"{{{prefix}}}:names",
    ]
    assert len({hash_slot(key.encode()) for key in keys}) == 1
    assert json.loads(await client.get(store.key("model-api"))) == record(1).to_dict()


async def test_prefixes_keep_storages_apart(store: Any, client: Any) -> None:
    """Two prefixes on one server never see each other's breakers."""
    other_prefix = unique_name("anybreaker-test")
    try:
        async with RedisStorage(redis_url(), prefix=other_prefix) as other:
            await store.compare_and_set("api", None, record(1))
            assert await other.get("api") is None
            assert await other.names() == []
            assert await other.compare_and_set("api", None, record(1, CircuitState.OPEN))
            assert await store.get("api") == record(1)
            await other.delete("api")
            assert await store.names() == ["api"]
    finally:
        keys = [key async for key in client.scan_iter(match=f"{{{other_prefix}}}:*")]
        if keys:
            await client.delete(keys)


@pytest.mark.parametrize("prefix_value", ["", "a{b", "a}b"])
def test_a_prefix_that_breaks_the_hash_tag_is_refused(prefix_value: str) -> None:
    """An empty prefix, or one with a brace, is a ValueError at construction."""
    with pytest.raises(ValueError, match="prefix"):
        RedisStorage(redis_url(), prefix=prefix_value)


# -- idle expiry -------------------------------------------------------------


async def test_without_idle_expiry_nothing_expires(store: Any, client: Any) -> None:
    """By default a record and the name index are kept until deleted."""
    await store.compare_and_set("api", None, record(1))
    assert await client.pttl(store.key("api")) == -1
    assert await client.pttl(f"{{{store.prefix}}}:names") == -1


async def test_idle_expiry_is_refreshed_by_every_write(client: Any, prefix: str) -> None:
    """Each write sets the record's expiry back to idle_expiry from now."""
    async with RedisStorage(redis_url(), prefix=prefix, idle_expiry=60) as store:
        key = store.key("api")
        await store.compare_and_set("api", None, record(1))
        assert 55_000 < await client.pttl(key) <= 60_000
        await client.pexpire(key, 5_000)
        await store.compare_and_set("api", 1, record(2))
        assert 55_000 < await client.pttl(key) <= 60_000
        assert await client.pttl(f"{{{prefix}}}:names") >= await client.pttl(key)


async def test_an_expired_record_is_gone_from_get_and_names(client: Any, prefix: str) -> None:
    """An idle record expires on the server and names() stops listing it."""
    async with RedisStorage(redis_url(), prefix=prefix, idle_expiry=0.03) as store:
        await store.compare_and_set("idle", None, record(1))
        async with RedisStorage(redis_url(), prefix=prefix) as keeper:
            await keeper.compare_and_set("kept", None, record(1))
            # Server time cannot be faked; Redis expires a key on access
            # once its deadline has passed, so one short sleep is enough.
            await anyio.sleep(0.1)
            assert await store.get("idle") is None
            assert await store.names() == ["kept"]
            assert await client.pttl(f"{{{prefix}}}:names") == -1


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("idle_expiry", 0),
        ("idle_expiry", -1.0),
        ("idle_expiry", float("inf")),
        ("staleness", -0.1),
        ("staleness", float("nan")),
    ],
)
def test_invalid_durations_are_refused(setting: str, value: float) -> None:
    """idle_expiry must be > 0 and staleness >= 0, both finite."""
    with pytest.raises(ValueError, match=setting):
        RedisStorage(redis_url(), **{setting: value})


# -- data that is not ours ---------------------------------------------------


@pytest.mark.parametrize(
    "foreign",
    [
        "plain text",
        '{"state": "closed"}',
        '{"version": 1}',
        '{"format": 99, "state": "closed", "version": 1}',
        "[1, 2]",
        '"just a string"',
    ],
)
async def test_a_record_key_with_foreign_data_is_refused_not_overwritten(
    store: Any, client: Any, foreign: str
) -> None:
    """A value under the prefix that is not a breaker record raises StorageError."""
    key = store.key("api")
    await client.set(key, foreign)
    with pytest.raises(StorageError, match="not a breaker record"):
        await store.get("api")
    for expected in (None, 1):
        with pytest.raises(StorageError, match="not a breaker record"):
            await store.compare_and_set("api", expected, record((expected or 0) + 1))
    assert await client.get(key) == foreign


async def test_a_record_key_of_another_type_is_refused(store: Any, client: Any) -> None:
    """A hash under a record key is refused by get, compare-and-set and delete."""
    key = store.key("api")
    await client.hset(key, {"state": "closed"})
    with pytest.raises(StorageError, match="not a breaker record"):
        await store.get("api")
    with pytest.raises(StorageError, match="not a breaker record"):
        await store.compare_and_set("api", None, record(1))
    with pytest.raises(StorageError, match="not a breaker record"):
        await store.delete("api")
    assert await client.hgetall(key) == {"state": "closed"}


async def test_a_foreign_name_index_is_refused_and_nothing_is_written(
    store: Any, client: Any
) -> None:
    """If the index key holds other data, no record is written beside it."""
    index = f"{{{store.prefix}}}:names"
    await client.set(index, "someone else's")
    with pytest.raises(StorageError, match="not a set of breaker names"):
        await store.compare_and_set("api", None, record(1))
    with pytest.raises(StorageError, match="not a set of breaker names"):
        await store.names()
    assert await client.exists([store.key("api")]) == 0
    assert await client.get(index) == "someone else's"


# -- clients, URLs and lifecycle ---------------------------------------------


async def test_a_given_client_is_used_and_left_open(client: Any, prefix: str) -> None:
    """A client the user entered still works after the storage closes."""
    async with RedisStorage(client, prefix=prefix) as store:
        await store.compare_and_set("api", None, record(1))
        assert await store.names() == ["api"]
    assert await client.get(f"{{{prefix}}}:breaker:api") is not None
    assert await client.ping() == "PONG"


async def test_a_given_client_not_yet_entered_is_entered_by_the_storage(
    client: Any, prefix: str
) -> None:
    """A bytes-mode client the user never entered works inside the storage."""
    require_server("Redis", REDIS_HOST, REDIS_PORT)
    raw = coredis.Redis.from_url(redis_url())
    async with RedisStorage(raw, prefix=prefix) as store:
        await store.compare_and_set("api", None, record(1))
        assert await store.get("api") == record(1)
        assert await store.names() == ["api"]


def test_neither_url_nor_client_is_a_type_error() -> None:
    """Anything but a URL string or a coredis client is refused at construction."""
    with pytest.raises(TypeError, match="url_or_client"):
        RedisStorage(6379)


def test_repr_hides_the_password() -> None:
    """The URL's password never shows in repr (and so in logs)."""
    store = RedisStorage("redis://user:s3cret@localhost:6379/0", prefix="p")
    assert "s3cret" not in repr(store)
    assert "localhost:6379" in repr(store)


async def test_use_without_async_with_is_a_runtime_error_naming_async_with() -> None:
    """Operations on a storage never entered raise RuntimeError (not StorageError)."""
    store = RedisStorage(redis_url())
    for operation in (
        store.get("api"),
        store.compare_and_set("api", None, record(1)),
        store.delete("api"),
        store.names(),
    ):
        with pytest.raises(RuntimeError, match=r"async with RedisStorage\(") as caught:
            await operation
        assert not isinstance(caught.value, StorageError)
    await store.aclose()


@pytest.mark.parametrize("policy", ["local", "allow", "reject", "raise"])
async def test_a_breaker_on_a_storage_never_entered_raises_whatever_its_policy(
    policy: str,
) -> None:
    """Forgetting `async with` is a coding mistake, not an outage: no policy hides it."""
    store = RedisStorage(redis_url())
    breaker = CircuitBreaker("api", storage=store, on_storage_error=policy)
    ran = False

    async def dependency() -> None:
        nonlocal ran
        ran = True

    with pytest.raises(RuntimeError, match="async with"):
        await breaker.call(dependency)
    assert not ran
    await store.aclose()


async def test_closed_storage_refuses_use_and_closes_once(prefix: str) -> None:
    """After aclose (idempotent), every operation raises StorageError."""
    store = RedisStorage(redis_url(), prefix=prefix)
    async with store:
        pass
    await store.aclose()
    with pytest.raises(StorageError, match="closed"):
        await store.names()
    with pytest.raises(StorageError, match="closed"):
        async with store:
            pass


async def test_unreachable_server_fails_per_operation_not_on_entry() -> None:
    """Entering works with no server; each operation raises StorageError from the driver."""
    with anyio.fail_after(10):
        async with RedisStorage("redis://127.0.0.1:1/0") as store:
            with pytest.raises(StorageError) as caught:
                await store.get("api")
            assert isinstance(caught.value.__cause__, coredis.exceptions.RedisError)
            with pytest.raises(StorageError):
                await store.compare_and_set("api", None, record(1))


async def test_a_breaker_opens_for_every_process_through_redis(client: Any, prefix: str) -> None:
    """Two breakers on two storages of one prefix share one state."""
    clock = FakeClock()
    async with (
        RedisStorage(redis_url(), prefix=prefix, staleness=0) as first,
        RedisStorage(redis_url(), prefix=prefix, staleness=0) as second,
    ):
        one = CircuitBreaker("api", storage=first, clock=clock, failure_threshold=1)
        two = CircuitBreaker("api", storage=second, clock=clock, failure_threshold=1)
        with pytest.raises(ZeroDivisionError):
            async with one:
                1 / 0  # noqa: B018
        assert await two.get_state() is CircuitState.OPEN


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("not a url", "not a Redis URL"),
        ("http://127.0.0.1:6379/0", "not a Redis URL"),
        ("redis://:99999", "no host"),
        ("redis://", "no host"),
        ("unix://", "no socket path"),
        ("redis://127.0.0.1:99999/9", "port '99999' is not a number from 1 to 65535"),
        ("redis://127.0.0.1:0/9", "port '0' is not a number from 1 to 65535"),
        ("redis://127.0.0.1:port/9", "port 'port' is not a number from 1 to 65535"),
        ("redis://127.0.0.1:6379/abc", "database 'abc' is not a non-negative integer"),
        ("redis://127.0.0.1:6379/-1", "database '-1' is not a non-negative integer"),
        ("redis://127.0.0.1:6379/0/1", "database '0/1' is not a non-negative integer"),
        ("redis://127.0.0.1:6379?db=abc", "database 'abc' is not a non-negative integer"),
        ("unix:///tmp/redis.sock?db=x", "database 'x' is not a non-negative integer"),
        ("redis://127.0.0.1:6379/1?db=2", "gives the database twice"),
        ("redis://127.0.0.1:6379/0#main", "no #fragment"),
    ],
)
def test_a_bad_url_is_refused_at_construction(url: str, problem: str) -> None:
    """A URL coredis would fail on (or misread) later is a ValueError naming it and why."""
    with pytest.raises(ValueError, match=re.escape(problem)) as caught:
        RedisStorage(url)
    assert repr(url) in str(caught.value)


def test_a_bad_url_is_refused_without_showing_its_password() -> None:
    """The ValueError for a bad URL hides the password, as repr does."""
    with pytest.raises(ValueError, match="port") as caught:
        RedisStorage("redis://user:s3cret@127.0.0.1:99999/0")
    assert "s3cret" not in str(caught.value)
    assert "redis://user:***@127.0.0.1:99999/0" in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1",
        "redis://127.0.0.1:6379/",
        "redis://127.0.0.1:6379/15",
        "redis://127.0.0.1:6379?db=3",
        "rediss://user:password@[::1]:6380/2",
        "unix:///run/redis.sock?db=1",
    ],
)
def test_good_urls_are_accepted(url: str) -> None:
    """Host, port, database and unix sockets in their usual spellings are accepted."""
    assert repr(RedisStorage(url)).startswith("<RedisStorage ")


async def test_an_exception_coredis_did_not_expect_is_a_storage_error(prefix: str) -> None:
    """Whatever a given client raises in an operation reaches the caller as StorageError."""
    # A client made from a URL without a host fails every request with a
    # bare AssertionError deep inside coredis.
    client = coredis.Redis.from_url("redis://:6379/0")
    async with RedisStorage(client, prefix=prefix) as store:
        with anyio.fail_after(10):
            for operation in (
                store.get("api"),
                store.compare_and_set("api", None, record(1)),
                store.delete("api"),
                store.names(),
            ):
                with pytest.raises(StorageError, match="AssertionError") as caught:
                    await operation
                assert isinstance(caught.value.__cause__, AssertionError)


# -- what cannot be stored, and versions compared exactly ---------------------


async def test_a_name_that_is_not_valid_unicode_is_a_storage_error(store: Any) -> None:
    """A name with a lone surrogate is refused by every operation, naming it, storing nothing."""
    name = "api-" + os.fsdecode(b"\xff")
    for operation in (
        store.get(name),
        store.compare_and_set(name, None, record(1)),
        store.delete(name),
    ):
        with pytest.raises(StorageError, match="cannot be stored") as caught:
            await operation
        assert repr(name) in str(caught.value)
        assert isinstance(caught.value.__cause__, UnicodeEncodeError)
    assert await store.names() == []


BIG = 2**53
"""The first integer above which doubles (cjson's numbers) skip integers."""


def previous_release_json(stored: BreakerRecord) -> str:
    """``stored`` as the previous release wrote it: format, state, then version first."""
    data = stored.to_dict()
    ordered = {"format": data["format"], "state": data["state"], "version": data["version"]}
    return json.dumps({**ordered, **data}, separators=(",", ":"))


@pytest.mark.parametrize("layout", ["this release", "previous release"])
async def test_versions_beyond_two_to_the_53_are_compared_exactly(
    store: Any, client: Any, layout: str
) -> None:
    """A stale expected version one below a huge stored one is refused, not rounded equal."""
    current = BreakerRecord(state=CircuitState.OPEN, version=BIG + 1, generation=3)
    key = store.key("api")
    if layout == "this release":
        # No number of writes gets there: put it in this release's layout.
        layout_json = json.dumps({"version": BIG + 1, **current.to_dict()}, separators=(",", ":"))
        await client.set(key, layout_json)
    else:
        await client.set(key, previous_release_json(current))
    assert await store.get("api") == current
    assert not await store.compare_and_set("api", BIG, BreakerRecord(version=BIG + 1))
    assert not await store.compare_and_set("api", BIG + 2, BreakerRecord(version=BIG + 3))
    assert await store.get("api") == current
    assert await store.compare_and_set("api", BIG + 1, BreakerRecord(version=BIG + 2))
    assert await store.get("api") == BreakerRecord(version=BIG + 2)
    # This release writes the version first, where the script reads it.
    assert (await client.get(key)).startswith(f'{{"version":{BIG + 2},')
    assert not await store.compare_and_set("api", BIG + 1, BreakerRecord(version=BIG + 2))
    assert not await store.compare_and_set("api", BIG + 3, BreakerRecord(version=BIG + 4))


async def test_a_record_of_the_previous_release_is_read_and_updated(
    store: Any, client: Any
) -> None:
    """A record the previous release wrote reads back and takes the next write."""
    old = BreakerRecord(state=CircuitState.OPEN, version=41, generation=5)
    await client.set(store.key("api"), previous_release_json(old))
    await client.sadd(f"{{{store.prefix}}}:names", ["api"])
    assert await store.get("api") == old
    assert not await store.compare_and_set("api", 40, BreakerRecord(version=41))
    new = BreakerRecord(state=CircuitState.HALF_OPEN, version=42, generation=6)
    assert await store.compare_and_set("api", 41, new)
    assert await store.get("api") == new
    assert await store.names() == ["api"]


async def test_a_record_with_its_version_elsewhere_is_compared_exactly_or_refused(
    store: Any, client: Any
) -> None:
    """A hand-written record: compared below 2**53, refused above, never rounded."""
    key = store.key("api")
    small = BreakerRecord(version=7)
    await client.set(key, json.dumps({**small.to_dict(), "version": 7}, indent=1))
    assert not await store.compare_and_set("api", 6, BreakerRecord(version=7))
    assert await store.compare_and_set("api", 7, BreakerRecord(version=8))
    assert await store.get("api") == BreakerRecord(version=8)

    huge = json.dumps(BreakerRecord(version=BIG + 1).to_dict(), indent=1)
    await client.set(key, huge)
    with pytest.raises(StorageError, match="not a breaker record"):
        await store.compare_and_set("api", BIG, BreakerRecord(version=BIG + 1))
    assert await client.get(key) == huge


def test_missing_coredis_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without coredis, importing the module says which extra to install."""
    monkeypatch.setitem(sys.modules, "coredis", None)
    monkeypatch.delitem(sys.modules, "anybreaker.storage.redis")
    with pytest.raises(ImportError, match=r'pip install "anybreaker\[redis\]"'):
        importlib.import_module("anybreaker.storage.redis")


class OneNodeCluster:
    """A throwaway Redis Cluster of one node that owns every slot."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        with socket.socket() as probe, socket.socket() as bus_probe:
            probe.bind(("127.0.0.1", 0))
            bus_probe.bind(("127.0.0.1", 0))
            self.port: int = probe.getsockname()[1]
            self.bus_port: int = bus_probe.getsockname()[1]
        self.server: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the node and wait (bounded) until the cluster says it is ok."""
        log = self.directory / "redis.log"
        with log.open("w") as output:
            self.server = subprocess.Popen(
                [
                    "redis-server",
                    *("--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
                    *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                    *("--cluster-port", str(self.bus_port)),
                    # The shortest wait before a node with every slot is ok.
                    *("--cluster-node-timeout", "500"),
                ],
                cwd=self.directory,
                stdout=output,
            )
        deadline = time.monotonic() + 30
        for command, wanted in [
            (("CLUSTER", "ADDSLOTSRANGE", "0", "16383"), "OK"),
            (("CLUSTER", "INFO"), "cluster_state:ok"),
        ]:
            while wanted not in (reply := self._cli(*command)):
                assert self.server.poll() is None, f"redis-server exited:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"{command}: {reply}\n{log.read_text()}"
                time.sleep(0.02)

    def stop(self) -> None:
        if self.server is not None:
            self.server.terminate()
            self.server.wait(timeout=15)
            self.server = None

    def _cli(self, *command: str) -> str:
        done = subprocess.run(
            ["redis-cli", "-p", str(self.port), *command],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return done.stdout + done.stderr


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[OneNodeCluster]:
    """A one-node Redis Cluster, not started yet; stopped after the test."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    node = OneNodeCluster(tmp_path)
    try:
        yield node
    finally:
        node.stop()


# coredis's cluster client leaves two memory streams of its own unclosed.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.processes
async def test_works_on_redis_cluster(cluster: OneNodeCluster) -> None:
    """Through a RedisCluster client the scripts run, names() included."""
    cluster.start()
    client = coredis.RedisCluster("127.0.0.1", cluster.port)
    async with client, RedisStorage(client, prefix="app", staleness=0) as store:
        assert await store.compare_and_set("a", None, record(1))
        assert await store.compare_and_set("b:c", None, record(1))
        assert not await store.compare_and_set("a", None, record(1))
        assert await store.compare_and_set("a", 1, record(2, CircuitState.OPEN))
        assert await store.get("a") == record(2, CircuitState.OPEN)
        await store.delete("b:c")
        assert await store.names() == ["a"]
        breaker = CircuitBreaker("api", storage=store, failure_threshold=1)
        await breaker.record_failure(ConnectionError())
        assert await breaker.get_state() is CircuitState.OPEN
        assert sorted(await store.names()) == ["a", "api"]
    del client, store, breaker
    gc.collect()  # so that the leaked streams warn here, under the filters above


# coredis leaves the memory streams of a connection that never connected
# unclosed; RedisStorage closes them for the clients it makes, not for yours.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.processes
async def test_a_cluster_unreachable_at_entry_is_used_once_it_answers(
    cluster: OneNodeCluster,
) -> None:
    """Entering works with the cluster down; operations fail until it is up."""
    async with RedisStorage(coredis.RedisCluster("127.0.0.1", cluster.port)) as store:
        with pytest.raises(StorageError, match="cannot connect") as caught:
            await store.get("api")
        assert isinstance(caught.value.__cause__, coredis.exceptions.RedisError)
        cluster.start()
        # The storage tries the cluster again every second: wait for that.
        with anyio.fail_after(10):
            while True:
                try:
                    assert await store.compare_and_set("api", None, record(1))
                    break
                except StorageError:
                    await anyio.sleep(0.1)
        assert await store.names() == ["api"]
    del caught, store
    gc.collect()  # so that the leaked streams warn here, under the filters above
