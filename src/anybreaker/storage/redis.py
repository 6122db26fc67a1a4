"""``RedisStorage``: breaker records in Redis, shared by a fleet of processes.

Built on coredis, which runs on anyio and so works under asyncio and trio.

Key layout, for a prefix ``P`` (default ``anybreaker``)::

    {P}:breaker:<name>   a string: the record as JSON (``BreakerRecord.to_dict()``,
                         its version first)
    {P}:names            a set: the names that have a record

The braces are a Redis Cluster hash tag: every key of one prefix lives in one
slot, so the scripts that touch a record and the name index together run on
one node.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable
from typing import Any, Final, Self, TypeVar
from urllib.parse import parse_qs, urlsplit

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

try:
    import coredis
    import coredis.exceptions
    from coredis.commands.script import Script
except ImportError as error:  # pragma: no cover - exercised without the extra
    raise ImportError('RedisStorage needs coredis: pip install "anybreaker[redis]"') from error

from .._errors import StorageError
from ._base import StorageBase, check_name, redact
from ._protocol import BreakerRecord, check_new_version

__all__ = ["RedisStorage"]

T = TypeVar("T")

_POOL_RETRY_INTERVAL: Final = 1.0
"""Seconds between attempts to enter a client's pool that could not connect."""

_STORED: Final = 1
_CONFLICT: Final = 0
_NOT_A_RECORD: Final = -1
_NOT_AN_INDEX: Final = -2

# KEYS: record key, index key. ARGV: expected version ("" for none), new
# record as JSON, name, idle expiry in ms ("" for none), record format.
# Returns 1 (stored), 0 (nothing stored, none expected), {0, the stored
# record} (another version stored), or -1 / -2 (see above).
#
# Everything is checked before anything is written: a script that fails
# half-way does not roll back the writes it already made.
#
# cjson reads numbers as doubles, which tell integers apart only up to 2^53:
# the stored version is compared as the digits the record holds. This
# release writes the version as the record's first key; earlier ones wrote
# it third, after the format and the state. A record that has it elsewhere
# (written by hand) is compared through cjson only below 2^53, where a
# double is exact, and refused above, never compared approximately. A record
# format newer than the one written is refused too: it is a later release's.
_COMPARE_AND_SET: Final = """
local key_type = redis.call('TYPE', KEYS[1]).ok
local index_type = redis.call('TYPE', KEYS[2]).ok
if index_type ~= 'set' and index_type ~= 'none' then
  return -2
end
if key_type == 'none' then
  if ARGV[1] ~= '' then
    return 0
  end
elseif key_type ~= 'string' then
  return -1
else
  local text = redis.call('GET', KEYS[1])
  local ok, stored = pcall(cjson.decode, text)
  if not ok or type(stored) ~= 'table' or type(stored.version) ~= 'number'
      or type(stored.state) ~= 'string'
      or (stored.format ~= nil and (type(stored.format) ~= 'number'
                                    or stored.format > tonumber(ARGV[5]))) then
    return -1
  end
  local version = string.match(text, '^{"version":(%d+)[,}]')
    or string.match(text, '^{"format":%d+,"state":"[%w_]*","version":(%d+)[,}]')
  if version == nil then
    local number = stored.version
    if number ~= math.floor(number) or number < 0 or number >= 9007199254740992 then
      return -1
    end
    version = string.format('%d', number)
  elseif #version > 1 and string.sub(version, 1, 1) == '0' then
    return -1
  end
  if version ~= ARGV[1] then
    return {0, text}
  end
end
local index_ttl = redis.call('PTTL', KEYS[2])
redis.call('SADD', KEYS[2], ARGV[3])
if ARGV[4] == '' then
  redis.call('SET', KEYS[1], ARGV[2])
  redis.call('PERSIST', KEYS[2])
else
  local expiry = tonumber(ARGV[4])
  redis.call('SET', KEYS[1], ARGV[2], 'PX', expiry)
  -- The index outlives every record it lists, whoever wrote them.
  if index_ttl == -2 or (index_ttl >= 0 and index_ttl < expiry) then
    redis.call('PEXPIRE', KEYS[2], expiry)
  end
end
return 1
"""

# KEYS: record key, index key. ARGV: name.
_DELETE: Final = """
local key_type = redis.call('TYPE', KEYS[1]).ok
local index_type = redis.call('TYPE', KEYS[2]).ok
if index_type ~= 'set' and index_type ~= 'none' then
  return -2
end
if key_type ~= 'none' and key_type ~= 'string' then
  return -1
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return 1
"""

# KEYS: index key, then one record key per name in ARGV. Drops from the index
# the names whose record is gone (expired, or deleted by hand) and returns
# the others.
_PRUNE: Final = """
local present = {}
for i, name in ipairs(ARGV) do
  if redis.call('EXISTS', KEYS[i + 1]) == 1 then
    present[#present + 1] = name
  else
    redis.call('SREM', KEYS[1], name)
  end
end
return present
"""


class RedisStorage(StorageBase):
    """Keep breaker records in Redis (standalone or Cluster), through coredis.

    ``RedisStorage(url_or_client, *, prefix="anybreaker", staleness=0.1,
    idle_expiry=None)``:

    - ``url_or_client``: a ``redis://``, ``rediss://`` or ``unix://`` URL, or
      a coredis client (``coredis.Redis`` or ``coredis.RedisCluster``). A
      client you give stays yours: the storage enters it while it is open
      and never closes it for you.
    - ``prefix``: every key the storage uses starts with ``{prefix}:``, so
      several applications share one server without colliding.
    - ``staleness``: seconds a breaker may act on a record it read before
      reading it again.
    - ``idle_expiry``: if given, seconds after its last write that a
      breaker's record expires. Keep it well above the longest open period
      and ``window_size``: an expired record reads as a closed breaker with
      no history, and that includes a breaker forced open.

    Use it as ``async with RedisStorage(...) as storage:``: coredis runs its
    connections in background tasks, which need an enclosing task; an
    operation on a storage never entered raises ``RuntimeError``. Each
    compare-and-set is one Lua script, atomic on the server.

    A URL is checked when the storage is made: one that is not a Redis URL,
    has no host (or socket path), a port outside 1-65535, or a database
    that is not a non-negative integer raises ``ValueError``.
    """

    def __init__(
        self,
        url_or_client: str | coredis.Redis[Any] | coredis.RedisCluster[Any],
        *,
        prefix: str = "anybreaker",
        staleness: float = 0.1,
        idle_expiry: float | None = None,
    ) -> None:
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"prefix must be a non-empty str, got {prefix!r}")
        if "{" in prefix or "}" in prefix:
            # The prefix becomes the hash tag; a brace in it would cut the tag short.
            raise ValueError(f"prefix must not contain '{{' or '}}', got {prefix!r}")
        self.staleness = _seconds("staleness", staleness, allow_zero=True)
        if idle_expiry is None:
            self._expiry_ms = ""
        else:
            seconds = _seconds("idle_expiry", idle_expiry, allow_zero=False)
            self._expiry_ms = str(max(1, math.ceil(seconds * 1000)))
        if isinstance(url_or_client, str):
            _check_url(url_or_client)
            client = coredis.Redis.from_url(url_or_client)
            pool = client.connection_pool
            pool.connection_class = _closing_streams(pool.connection_class)
            self._client: coredis.Redis[Any] | coredis.RedisCluster[Any] = client
            self._location = redact(url_or_client)
        elif isinstance(url_or_client, coredis.Redis | coredis.RedisCluster):
            self._client = url_or_client
            self._location = repr(url_or_client)
        else:
            raise TypeError(
                "url_or_client must be a redis:// URL or a coredis client, "
                f"got {type(url_or_client).__name__} {url_or_client!r}"
            )
        self.idle_expiry = None if idle_expiry is None else float(idle_expiry)
        self.prefix = prefix
        self._index_key = f"{{{prefix}}}:names"
        self._record_prefix = f"{{{prefix}}}:breaker:"
        self._compare_and_set_script = Script[Any](script=_COMPARE_AND_SET)
        self._delete_script = Script[Any](script=_DELETE)
        self._prune_script = Script[Any](script=_PRUNE)
        self._group: anyio.abc.TaskGroup | None = None
        self._closing: anyio.Event | None = None
        self._pool_error: BaseException | None = None
        self._refused: RuntimeError | None = None

    def __repr__(self) -> str:
        return f"<RedisStorage {self._location} prefix={self.prefix!r}>"

    def key(self, name: str) -> str:
        """Return the Redis key that holds the record of breaker ``name``."""
        return self._record_prefix + name

    # -- lifecycle ---------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._check_open()
        if self._group is not None:
            return self
        self._closing = anyio.Event()
        group = anyio.create_task_group()
        await group.__aenter__()
        await group.start(self._hold_pool, self._closing)
        if self._refused is not None:
            await group.__aexit__(None, None, None)
            raise StorageError(
                f"{self!r}: cannot enter the client's connection pool ({self._refused})"
            ) from self._refused
        self._group = group
        return self

    async def _close(self) -> None:
        group, self._group = self._group, None
        if group is not None and self._closing is not None:
            self._closing.set()
            await group.__aexit__(None, None, None)

    async def _hold_pool(
        self,
        closing: anyio.Event,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Keep the client's connection pool entered until the storage closes.

        The pool, not the client: a pool counts its entries, so a client the
        user has entered stays open after the storage leaves it. A cluster
        client maps its nodes when its pool is entered; while it cannot, this
        tries again every ``_POOL_RETRY_INTERVAL`` seconds, and operations
        fail with ``StorageError`` meanwhile, so that entering the storage
        never fails because the server is unreachable.
        """
        started = False
        while not closing.is_set():
            try:
                async with self._client.connection_pool:
                    self._pool_error = None
                    if not started:
                        started = True
                        task_status.started()
                    await closing.wait()
                    return
            except RuntimeError as error:
                if not started:
                    # Misuse (a pool shared across tasks coredis does not
                    # allow), not an outage: __aenter__ raises it.
                    self._refused = error
                    task_status.started()
                    return
                self._pool_error = error
            except Exception as error:
                self._pool_error = error
            if not started:
                started = True
                task_status.started()
            with anyio.move_on_after(_POOL_RETRY_INTERVAL):
                await closing.wait()

    # -- the protocol ------------------------------------------------------

    async def get(self, name: str) -> BreakerRecord | None:
        """Return the record stored under ``name``, or ``None``."""
        self._ready()
        check_name(name)
        key = self.key(name)
        try:
            raw = await self._run(self._client.get(key))
        except StorageError as error:
            if isinstance(error.__cause__, coredis.exceptions.WrongTypeError):
                raise self._not_a_record(key) from error.__cause__
            raise
        return None if raw is None else self._parse(raw, key)

    def _parse(self, raw: str | bytes, key: str) -> BreakerRecord:
        try:
            return BreakerRecord.from_dict(json.loads(raw))
        except (ValueError, TypeError, AttributeError) as error:
            raise self._not_a_record(key) from error

    async def compare_and_set(
        self, name: str, expected_version: int | None, record: BreakerRecord
    ) -> bool:
        """Store ``record`` if the stored version is ``expected_version``."""
        stored, _ = await self.compare_and_set_or_get(name, expected_version, record)
        return stored

    async def compare_and_set_or_get(
        self, name: str, expected_version: int | None, record: BreakerRecord
    ) -> tuple[bool, BreakerRecord | None]:
        """``compare_and_set()``; when it does not store, also what is stored (one script)."""
        check_new_version(expected_version, record)
        self._ready()
        check_name(name)
        key = self.key(name)
        # The version goes first: the script reads it from there, exactly.
        data = {"version": record.version, **record.to_dict()}
        result: object = await self._run(
            self._compare_and_set_script(
                keys=[key, self._index_key],
                args=[
                    "" if expected_version is None else str(expected_version),
                    json.dumps(data, separators=(",", ":")),
                    name,
                    self._expiry_ms,
                    str(data["format"]),
                ],
                client=self._client,
            )
        )
        if isinstance(result, list) and len(result) == 2 and result[0] == _CONFLICT:
            return False, self._parse(result[1], key)
        self._check_result(result, key)
        return result == _STORED, None

    async def delete(self, name: str) -> None:
        """Remove the record stored under ``name``, if any."""
        self._ready()
        check_name(name)
        key = self.key(name)
        result: object = await self._run(
            self._delete_script(keys=[key, self._index_key], args=[name], client=self._client)
        )
        self._check_result(result, key)

    async def names(self) -> list[str]:
        """Return exactly the names that have a record."""
        self._ready()
        try:
            members = await self._run(self._client.smembers(self._index_key))
        except StorageError as error:
            if isinstance(error.__cause__, coredis.exceptions.WrongTypeError):
                raise self._not_an_index() from error.__cause__
            raise
        try:
            listed = sorted(_text(member) for member in members)
        except UnicodeDecodeError as error:
            raise self._not_an_index() from error
        if not listed:
            return []
        present: list[str | bytes] = await self._run(
            self._prune_script(
                keys=[self._index_key, *map(self.key, listed)],
                args=listed,
                client=self._client,
            )
        )
        return [_text(name) for name in present]

    # -- helpers -----------------------------------------------------------

    def _ready(self) -> None:
        """Refuse an operation the client cannot run now."""
        self._check_open()
        if self._group is None:
            # A mistake in the code, not an outage: no failure policy may hide it.
            raise RuntimeError(
                f"{self!r} is not open: use it as `async with RedisStorage(...) "
                "as storage:` (coredis runs its connections in background tasks "
                "that need an enclosing task)"
            )
        error = self._pool_error
        if error is not None:
            raise StorageError(
                f"{self!r}: the client cannot connect ({_describe(error)}); "
                f"trying again every {_POOL_RETRY_INTERVAL:g} s"
            ) from error

    async def _run(self, request: Awaitable[T]) -> T:
        """Await a coredis request; whatever it raises becomes ``StorageError``.

        Not only coredis's own errors: on input or replies it does not expect
        it fails with whatever Python raised deep inside (an
        ``AssertionError``, a ``ValueError``), and the caller's failure policy
        must see those as the storage failing. Cancellation is no
        ``Exception`` and passes through.
        """
        try:
            return await request
        except Exception as error:
            raise StorageError(f"{self!r}: {_describe(error)}") from error

    def _check_result(self, result: object, key: str) -> None:
        if result == _NOT_A_RECORD:
            raise self._not_a_record(key)
        if result == _NOT_AN_INDEX:
            raise self._not_an_index()
        if result not in (_STORED, _CONFLICT):
            raise StorageError(f"{self!r}: unexpected reply {result!r} from Redis")

    def _not_a_record(self, key: str) -> StorageError:
        return StorageError(
            f"{self!r}: key {key!r} holds data that is not a breaker record; "
            "refusing to touch it (choose another prefix, or remove the key)"
        )

    def _not_an_index(self) -> StorageError:
        return StorageError(
            f"{self!r}: key {self._index_key!r} is not a set of breaker names; "
            "refusing to touch it (choose another prefix, or remove the key)"
        )


def _closing_streams(connection_class: type[Any]) -> type[Any]:
    """Return ``connection_class`` closing its memory streams when it ends.

    A coredis connection that never reaches the server (connection refused)
    leaves the memory streams it made in ``__init__`` unclosed, and each
    warns (``ResourceWarning``) when collected: noise in every outage, and a
    failure in test suites that turn warnings into errors.
    """

    class ClosingConnection(connection_class):  # type: ignore[misc]
        async def run(self, **kwargs: Any) -> None:
            try:
                await super().run(**kwargs)
            finally:
                for value in list(vars(self).values()):
                    if isinstance(value, MemoryObjectSendStream | MemoryObjectReceiveStream):
                        value.close()

    ClosingConnection.__name__ = ClosingConnection.__qualname__ = connection_class.__name__
    return ClosingConnection


def _seconds(name: str, value: object, *, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number of seconds {bound}, got {value!r}")
    return float(value)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _check_url(url: str) -> None:
    """Refuse a URL coredis would take and then fail on, or misread, at the first operation."""
    shown = redact(url)
    if "#" in url:
        raise ValueError(f"a Redis URL has no #fragment: {shown!r}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if "://" not in url or scheme not in ("redis", "rediss", "unix"):
        raise ValueError(
            f"not a Redis URL: {shown!r}; write redis://host:port/database, "
            "rediss://host:port/database or unix:///path/to/redis.sock"
        )
    databases = parse_qs(parts.query).get("db", [])
    if scheme == "unix":
        if not parts.path:
            raise ValueError(f"Redis URL {shown!r} has no socket path")
    else:
        if not parts.hostname:
            raise ValueError(f"Redis URL {shown!r} has no host")
        port = parts.netloc.rpartition("@")[2].rpartition("]")[2].partition(":")[2]
        if port and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            raise ValueError(f"Redis URL {shown!r}: port {port!r} is not a number from 1 to 65535")
        path = parts.path.removeprefix("/")
        if path:
            databases.append(path)
    for database in databases:
        if not (database.isascii() and database.isdigit()):
            raise ValueError(
                f"Redis URL {shown!r}: database {database!r} is not a non-negative integer"
            )
    if len(databases) > 1:
        raise ValueError(f"Redis URL {shown!r} gives the database twice (path and ?db=)")
