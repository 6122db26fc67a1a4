"""``BreakerTransport``: an httpx transport that guards every request with a breaker.

Give it to ``httpx.AsyncClient(transport=...)``, or to a model SDK through the
client it takes as ``http_client``. Each request runs under the breaker of its
key (by default its origin: scheme, host and port). The breaker judges a
response by its status and headers, before its body is read, and the caller
gets the response as the wrapped transport gave it, body and all.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Callable, Collection
from datetime import UTC
from types import TracebackType
from typing import Final, Self

import anyio

try:
    import httpx
except ImportError as error:  # pragma: no cover - exercised without the extra
    raise ImportError('anybreaker.httpx needs httpx: pip install "anybreaker[httpx]"') from error

from ._errors import RetryAfter
from ._registry import CircuitBreakerRegistry

__all__ = ["BreakerTransport", "CallTimeout", "FailedResponse", "origin_key"]

_DELAY_SECONDS: Final = re.compile(r"\d+(\.\d+)?")


class FailedResponse(Exception):
    """What the breaker sees when a response counts as a failure; the caller gets the response.

    It reaches a registry's ``is_failure`` and ``ignored_exceptions``, never
    the caller of the HTTP client.
    """

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code} counted as a failure")
        self.response = response


class CallTimeout(httpx.TimeoutException, TimeoutError):
    """The breaker's ``call_timeout`` ran out before the response's headers arrived.

    Both an ``httpx.TimeoutException`` (so httpx code and the SDKs built on it
    treat it as any other timeout) and a ``TimeoutError``.
    """


def origin_key(request: httpx.Request) -> str:
    """The default key: the request's origin, ``https://api.example.com`` or ``http://host:8080``.

    The port is left out when it is the scheme's default.
    """
    url = request.url
    return f"{url.scheme}://{url.netloc.decode('ascii')}"


class BreakerTransport(httpx.AsyncBaseTransport):
    """An httpx transport that guards each request with the breaker of its key.

    ``transport`` is the transport that sends requests (default: a new
    ``httpx.AsyncHTTPTransport()``); ``registry`` holds the breakers (default:
    a new in-memory ``CircuitBreakerRegistry()``); ``key(request) -> str``
    names the breaker of a request (default: ``origin_key``).

    Outcomes, decided from the status and headers only:

    - a response whose status is in ``retry_after_status_codes`` with a
      ``Retry-After`` of more than zero seconds (a number, or an HTTP date
      measured against the response's ``Date``) opens the breaker for that
      long, at most ``max_retry_after`` seconds, as ``RetryAfter`` does;
    - a response whose status is in ``failure_status_codes``, or for which
      ``is_failure_response(response)`` is true, is a failure;
    - any other response is a success (the dependency answered);
    - an exception from the wrapped transport (a connection error, a
      timeout) is a failure, unless the registry's settings say otherwise.

    The caller always gets the response itself. A request refused by an
    open breaker raises ``CircuitBreakerOpenError`` (its ``circuit_name`` is
    the key) without reaching the wrapped transport. When the breaker's
    ``call_timeout`` runs out, the request raises ``CallTimeout``.
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        registry: CircuitBreakerRegistry | None = None,
        key: Callable[[httpx.Request], str] | None = None,
        failure_status_codes: Collection[int] = range(500, 600),
        retry_after_status_codes: Collection[int] = (429, 503),
        max_retry_after: float = 300.0,
        is_failure_response: Callable[[httpx.Response], bool] | None = None,
    ) -> None:
        if transport is None:
            transport = httpx.AsyncHTTPTransport()
        elif not isinstance(transport, httpx.AsyncBaseTransport):
            raise TypeError(_not_async(transport))
        if registry is None:
            registry = CircuitBreakerRegistry()
        elif not isinstance(registry, CircuitBreakerRegistry):
            raise TypeError(f"registry must be a CircuitBreakerRegistry, got {registry!r}")
        for name, value in (("key", key), ("is_failure_response", is_failure_response)):
            if value is not None and not callable(value):
                raise TypeError(f"{name} must be callable or None, got {value!r}")
        if isinstance(max_retry_after, bool) or not isinstance(max_retry_after, int | float):
            raise TypeError(f"max_retry_after must be a number of seconds, got {max_retry_after!r}")
        if not (math.isfinite(max_retry_after) and max_retry_after > 0):
            raise ValueError(
                f"max_retry_after must be finite and > 0 seconds, got {max_retry_after!r}"
            )
        self._transport = transport
        self._registry = registry
        self._key = key or origin_key
        self._failure_status_codes = _status_codes("failure_status_codes", failure_status_codes)
        self._retry_after_status_codes = _status_codes(
            "retry_after_status_codes", retry_after_status_codes
        )
        self._max_retry_after = float(max_retry_after)
        self._is_failure_response = is_failure_response

    def __repr__(self) -> str:
        return f"<BreakerTransport around {self._transport!r}, {self._registry!r}>"

    @property
    def registry(self) -> CircuitBreakerRegistry:
        """The breakers, one per key: ``transport.registry["https://api.example.com"]``."""
        return self._registry

    @property
    def key(self) -> Callable[[httpx.Request], str]:
        """The function that names the breaker of a request."""
        return self._key

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the wrapped transport under its key's breaker."""
        breaker = self._registry.get(self._key(request))
        response: httpx.Response | None = None
        verdict: Exception | None = None
        try:
            async with breaker:
                response = await self._transport.handle_async_request(request)
                verdict = self._verdict(response)
                if verdict is not None:
                    raise verdict
        except BaseException as error:
            if response is not None:
                if error is verdict:
                    return response  # counted; the caller gets it as it came
                # The caller never gets this response: give its connection back.
                with anyio.CancelScope(shield=True):
                    await response.aclose()
            if isinstance(error, TimeoutError) and not isinstance(error, httpx.TimeoutException):
                raise CallTimeout(str(error), request=request) from error
            raise
        assert response is not None
        return response

    def _verdict(self, response: httpx.Response) -> Exception | None:
        """What the breaker should see for ``response``: ``None`` for a success."""
        status = response.status_code
        if status in self._retry_after_status_codes:
            seconds = _retry_after_seconds(response)
            if seconds is not None and seconds > 0:
                return RetryAfter(min(seconds, self._max_retry_after), f"HTTP {status}")
        if status in self._failure_status_codes or (
            self._is_failure_response is not None and self._is_failure_response(response)
        ):
            return FailedResponse(response)
        return None

    async def aclose(self) -> None:
        """Close the wrapped transport (the registry and its storage stay open)."""
        await self._transport.aclose()

    async def __aenter__(self) -> Self:
        await self._transport.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self._transport.__aexit__(exc_type, exc_value, traceback)


def _retry_after_seconds(response: httpx.Response) -> float | None:
    """Seconds the response's ``Retry-After`` asks to wait, or ``None`` if it has none or a bad one.

    An HTTP date is measured against the response's ``Date`` (the server's
    clock, so the two clocks need not agree), or against this machine's
    clock when the response has no ``Date``. A date in the past is ``0.0``.
    """
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if _DELAY_SECONDS.fullmatch(value):
        seconds = float(value)
        return seconds if math.isfinite(seconds) else None
    until = _http_date(value)
    if until is None:
        return None
    date = response.headers.get("date")
    now = _http_date(date) if date is not None else None
    return max(0.0, until - (time.time() if now is None else now))


def _http_date(value: str) -> float | None:
    """The POSIX time of an HTTP date, or ``None`` if ``value`` is not one."""
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # HTTP dates are GMT
    try:
        return moment.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def _not_async(transport: object) -> str:
    sync = isinstance(transport, httpx.BaseTransport)
    return f"transport must be an httpx.AsyncBaseTransport, got {transport!r}" + (
        " (a sync transport: BreakerTransport is for httpx.AsyncClient)" if sync else ""
    )


def _status_codes(name: str, codes: Collection[int]) -> frozenset[int]:
    if isinstance(codes, int | str | bytes) or not isinstance(codes, Collection):
        raise TypeError(f"{name} must be a collection of HTTP status codes, got {codes!r}")
    for code in codes:
        if isinstance(code, bool) or not isinstance(code, int):
            raise TypeError(f"{name} must hold int status codes, got {code!r}")
        if not 100 <= code <= 599:
            raise ValueError(f"{name} must hold status codes from 100 to 599, got {code!r}")
    return frozenset(codes)
