"""Lifecycle shared by the shipped storages."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from .._errors import StorageError

__all__ = ["StorageBase", "check_name", "redact"]


class StorageBase:
    """An async context manager that closes once and refuses use after close."""

    __slots__ = ("_closed",)

    @property
    def closed(self) -> bool:
        """Whether ``aclose()`` was called."""
        return getattr(self, "_closed", False)

    async def __aenter__(self) -> Self:
        self._check_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Release the storage's resources; calling it again does nothing."""
        if not self.closed:
            self._closed = True
            await self._close()

    async def _close(self) -> None:
        """Release resources; called once by ``aclose()``."""

    def _check_open(self) -> None:
        if self.closed:
            raise StorageError(f"{type(self).__name__} is closed; open a new one")


def check_name(name: str) -> None:
    """Refuse, with ``StorageError``, a breaker name no database can store.

    A ``str`` may hold lone surrogates (``os.fsdecode(b"\\xff")`` makes one),
    which no encoding of Unicode text can write: every driver fails on them.
    """
    try:
        name.encode()
    except UnicodeEncodeError as error:
        raise StorageError(
            f"breaker name {name!r} cannot be stored: it is not valid Unicode text "
            f"({error.reason} at index {error.start})"
        ) from error


def redact(url: str) -> str:
    """Return ``url`` without its password, for messages and ``repr``."""
    scheme, separator, rest = url.partition("://")
    credentials, at, location = rest.rpartition("@")
    user, colon, _ = credentials.partition(":")
    if not separator or not at or not colon:
        return url
    return f"{scheme}://{user + ':***' if user else '***'}@{location}"
