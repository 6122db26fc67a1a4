"""``storage_from_url()``: choose and configure a storage by URL.

Built-in schemes:

- ``memory://``: a new ``MemoryStorage``.
- ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` and
  ``sqlite:///:memory:``: a ``SQLiteStorage`` (the path follows SQLAlchemy's
  convention: three slashes, then the path).
- ``postgresql://...`` and ``postgresql+DRIVER://...``: a ``SQLAlchemyStorage``
  on that URL (``postgres://`` is taken as ``postgresql://``).
- ``redis://...`` and ``rediss://...``: a ``RedisStorage`` on that URL.

Options come from the URL's query (``sqlite:///breakers.db?staleness=0``) or
as keyword arguments, never both for one option. Each scheme takes the
options that mean something to its storage; an unknown option or a bad value
is a ``ValueError`` naming it. PostgreSQL and Redis URLs keep every other
query parameter for their driver (``?sslmode=require``, ``?db=1``). No
storage URL has a ``#fragment`` (write ``%23`` for a ``#`` in a SQLite path).

Third-party storages register a scheme with an entry point in the group
``anybreaker.storages``; it loads a callable that takes the URL (and any
keyword options) and returns a storage. A built-in scheme cannot be
replaced that way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any, Final
from urllib.parse import unquote, unquote_plus, urlsplit

from ._base import redact
from ._protocol import ContextManagedStorage

__all__ = ["ENTRY_POINT_GROUP", "storage_from_url"]

ENTRY_POINT_GROUP: Final = "anybreaker.storages"

Converter = Callable[[str, object], object]


def _seconds(*, allow_zero: bool) -> Converter:
    def convert(name: str, value: object) -> float:
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                raise ValueError(
                    f"option {name} must be a number of seconds, got {value!r}"
                ) from None
        elif isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        else:
            raise ValueError(f"option {name} must be a number of seconds, got {value!r}")
        if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
            bound = ">= 0" if allow_zero else "> 0"
            raise ValueError(
                f"option {name} must be a finite number of seconds {bound}, got {value!r}"
            )
        return number

    return convert


def _text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"option {name} must be a non-empty string, got {value!r}")
    return value


_STALENESS: Final = _seconds(allow_zero=True)

# scheme family -> the options its storage takes, with their converters
_OPTIONS: Final[dict[str, dict[str, Converter]]] = {
    "memory": {},
    "sqlite": {
        "staleness": _STALENESS,
        "table": _text,
        "lock_timeout": _seconds(allow_zero=False),
        "journal_mode": _text,
    },
    "postgresql": {
        "staleness": _STALENESS,
        "table": _text,
        "schema": _text,
        "lock_timeout": _seconds(allow_zero=False),
    },
    "redis": {
        "staleness": _STALENESS,
        "prefix": _text,
        "idle_expiry": _seconds(allow_zero=False),
    },
}

_BUILT_IN: Final = (
    "memory",
    "sqlite",
    "postgresql",
    "postgresql+DRIVER",
    "postgres",
    "redis",
    "rediss",
)


def storage_from_url(url: str, **options: Any) -> ContextManagedStorage:
    """Return a new storage for ``url``, configured by its query and ``options``.

    ``memory://``, ``sqlite:///path``, ``postgresql[+DRIVER]://``,
    ``redis://`` and ``rediss://`` are built in; other schemes come from the
    entry point group ``anybreaker.storages``. An unknown scheme, an unknown
    option and a bad option value raise ``ValueError``.
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, got {type(url).__name__} {url!r}")
    scheme, separator, _ = url.partition("://")
    scheme = scheme.lower()
    if not separator or not scheme:
        raise ValueError(f"not a storage URL (no scheme://): {url!r}; {_known_schemes()}")
    family = _family(scheme)
    if family is None:
        factory = _registered(scheme)
        if factory is None:
            raise ValueError(f"unknown storage URL scheme {scheme!r}; {_known_schemes()}")
        return factory(url, **options)

    location, query = _split_query(url, family)
    chosen, rest = _take_options(family, query, options)
    if family == "memory":
        return _memory(url, location)
    if family == "sqlite":
        return _sqlite(url, location, chosen)
    if family == "postgresql":
        from .sql import SQLAlchemyStorage

        if scheme.startswith("postgres") and not scheme.startswith("postgresql"):
            location = "postgresql" + location[len("postgres") :]
        return SQLAlchemyStorage(_join_query(location, rest), **chosen)
    from .redis import RedisStorage

    return RedisStorage(_join_query(location, rest), **chosen)


def _family(scheme: str) -> str | None:
    if scheme == "memory":
        return "memory"
    if scheme == "sqlite":
        return "sqlite"
    if scheme in ("postgresql", "postgres") or scheme.startswith(("postgresql+", "postgres+")):
        return "postgresql"
    if scheme in ("redis", "rediss"):
        return "redis"
    return None


def _registered(scheme: str) -> Callable[..., ContextManagedStorage] | None:
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name.lower() == scheme:
            factory: Callable[..., ContextManagedStorage] = entry_point.load()
            return factory
    return None


def _known_schemes() -> str:
    registered = sorted(
        {
            entry_point.name
            for entry_point in entry_points(group=ENTRY_POINT_GROUP)
            if _family(entry_point.name.lower()) is None
        }
    )
    known = ", ".join(f"{scheme}://" for scheme in (*_BUILT_IN, *registered))
    return f"known schemes: {known}"


def _split_query(url: str, family: str) -> tuple[str, list[str]]:
    """Split ``url`` into what precedes its query and the query's raw parameters."""
    location, _, query = url.partition("?")
    # SQLAlchemy reads a '#' before the query as part of a PostgreSQL
    # password; anywhere else it would start a fragment, which the storage
    # would silently drop (or, in a SQLite path, make part of the file name).
    if "#" in (query if family == "postgresql" else url):
        hint = " (write %23 for a # in the file name)" if family == "sqlite" else ""
        raise ValueError(f"a storage URL has no #fragment: {redact(url)!r}{hint}")
    return location, [parameter for parameter in query.split("&") if parameter]


def _join_query(location: str, parameters: list[str]) -> str:
    return f"{location}?{'&'.join(parameters)}" if parameters else location


def _take_options(
    family: str, query: list[str], keywords: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """Return the options ``family`` takes, converted, and the query parameters left."""
    accepted = _OPTIONS[family]
    # The drivers of server URLs take query parameters of their own.
    passes_through = family in ("postgresql", "redis")
    chosen: dict[str, Any] = {}
    rest: list[str] = []
    for parameter in query:
        raw_name, _, raw_value = parameter.partition("=")
        name = unquote_plus(raw_name)
        if name not in accepted:
            if passes_through:
                rest.append(parameter)
                continue
            raise ValueError(_unknown_option(family, name))
        if name in chosen:
            raise ValueError(f"option {name} is given more than once")
        chosen[name] = accepted[name](name, unquote_plus(raw_value))
    for name, value in keywords.items():
        if name not in accepted:
            raise ValueError(_unknown_option(family, name))
        if name in chosen:
            raise ValueError(f"option {name} is given both in the URL and as a keyword")
        chosen[name] = accepted[name](name, value)
    return chosen, rest


def _unknown_option(family: str, name: str) -> str:
    accepted = sorted(_OPTIONS[family])
    takes = f"it takes {', '.join(accepted)}" if accepted else "it takes none"
    return f"unknown option {name!r} for a {family}:// storage; {takes}"


def _memory(url: str, location: str) -> ContextManagedStorage:
    from .memory import MemoryStorage

    if location.lower() != "memory://":
        raise ValueError(f"a memory:// URL has no host or path: {url!r}")
    return MemoryStorage()


def _sqlite(url: str, location: str, chosen: dict[str, Any]) -> ContextManagedStorage:
    parts = urlsplit(location)
    if parts.netloc:
        raise ValueError(
            f"a sqlite URL has no host: {url!r}; write sqlite:///relative/path.db, "
            "sqlite:////absolute/path.db or sqlite:///:memory:"
        )
    # SQLAlchemy's convention: the path follows the third slash.
    path = unquote(parts.path.removeprefix("/"))
    if not path:
        raise ValueError(
            f"a sqlite URL needs a path: {url!r}; write sqlite:///breakers.db or sqlite:///:memory:"
        )
    from .sql import SQLiteStorage

    return SQLiteStorage(path, **chosen)
