"""Tests of the JSON file storage: the conformance kit, then what is particular to it.

Run with ``pytest examples/json_file_storage``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from json_file_storage import JsonFileStorage, from_url

from anybreaker import BreakerRecord, StorageError, storage_from_url
from anybreaker.testing import StorageTests


class TestJsonFileStorage(StorageTests):
    """The whole conformance kit, processes included."""

    async def make_storage(self) -> JsonFileStorage:
        return JsonFileStorage(self.tmp_path / "breakers.json")

    def shared_storage_factory(self) -> Callable[[], JsonFileStorage]:
        # Picklable: the kit opens the same file in other processes with it.
        return functools.partial(JsonFileStorage, self.tmp_path / "breakers.json")

    async def make_failing_storage(self) -> JsonFileStorage:
        # A regular file where the directory should be: every operation fails.
        (self.tmp_path / "not-a-directory").write_text("")
        return JsonFileStorage(self.tmp_path / "not-a-directory" / "breakers.json")


pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Both runtimes, for the tests below (trio where it is installed)."""
    runtime: str = request.param
    if runtime == "trio":
        pytest.importorskip("trio")
    return runtime


FOREIGN_FILES = {
    "not JSON": b"\x00\x01 a binary file, not JSON\n",
    "other JSON": b'{"settings": {"retries": 3}}',
    "a JSON list": b"[1, 2, 3]",
    "a newer format": b'{"format": "anybreaker-json-file", "format_version": 2, "breakers": {}}',
}


@pytest.mark.parametrize("content", FOREIGN_FILES.values(), ids=FOREIGN_FILES.keys())
async def test_a_file_in_another_format_is_refused_and_left_untouched(
    tmp_path: Path, content: bytes
) -> None:
    """Every operation on a file the storage does not recognise fails; the file stays as it was."""
    path = tmp_path / "breakers.json"
    path.write_bytes(content)
    async with JsonFileStorage(path) as storage:
        with pytest.raises(StorageError, match="refusing"):
            await storage.get("a")
        with pytest.raises(StorageError, match="refusing"):
            await storage.names()
        with pytest.raises(StorageError, match="refusing"):
            await storage.compare_and_set("a", None, BreakerRecord(version=1))
        with pytest.raises(StorageError, match="refusing"):
            await storage.delete("a")
    assert path.read_bytes() == content


async def test_a_record_it_does_not_know_is_kept_through_other_writes(tmp_path: Path) -> None:
    """A record in an unknown shape is refused, and survives writes to other names."""
    path = tmp_path / "breakers.json"
    future = {"format": 99, "state": "sleeping"}
    path.write_text(
        json.dumps(
            {"format": "anybreaker-json-file", "format_version": 1, "breakers": {"new": future}}
        )
    )
    async with JsonFileStorage(path) as storage:
        with pytest.raises(StorageError, match="'new'"):
            await storage.get("new")
        with pytest.raises(StorageError, match="'new'"):
            await storage.compare_and_set("new", None, BreakerRecord(version=1))
        assert await storage.compare_and_set("other", None, BreakerRecord(version=1))
        assert sorted(await storage.names()) == ["new", "other"]
    assert json.loads(path.read_text())["breakers"]["new"] == future


async def test_the_file_is_replaced_whole(tmp_path: Path) -> None:
    """After writes, the directory holds the file and its lock, and no temporary file."""
    path = tmp_path / "breakers.json"
    async with JsonFileStorage(path) as storage:
        assert await storage.compare_and_set("a", None, BreakerRecord(version=1))
        assert await storage.compare_and_set("a", 1, BreakerRecord(version=2))
        await storage.delete("a")
    assert files_in(tmp_path) == [
        "breakers.json",
        "breakers.json.lock",
    ]


def files_in(directory: Path) -> list[str]:
    """The names of the files in ``directory``, sorted."""
    return sorted(entry.name for entry in directory.iterdir())


@pytest.mark.parametrize("staleness", [-1, float("nan"), float("inf"), "0.1"])
def test_staleness_must_be_seconds(staleness: object) -> None:
    """A staleness that is not a finite number of seconds >= 0 is refused."""
    with pytest.raises(ValueError, match="staleness"):
        JsonFileStorage("breakers.json", staleness=staleness)  # type: ignore[arg-type]


@pytest.fixture
def registered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Install the entry point a package shipping this storage would declare."""
    dist_info = tmp_path / "site" / "json_file_storage-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: json-file-storage\nVersion: 1.0\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[anybreaker.storages]\njsonfile = json_file_storage:from_url\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))


@pytest.mark.usefixtures("registered")
async def test_storage_from_url_opens_it_through_the_entry_point(tmp_path: Path) -> None:
    """``storage_from_url("jsonfile:///...")`` opens a JsonFileStorage on that path."""
    path = tmp_path / "shared" / "breakers.json"
    path.parent.mkdir()
    storage = storage_from_url(f"jsonfile://{path}?staleness=0.5")
    assert isinstance(storage, JsonFileStorage)
    async with storage:
        assert storage.path == path
        assert storage.staleness == 0.5
        assert await storage.compare_and_set("a", None, BreakerRecord(version=1))
    assert path.exists()


@pytest.mark.parametrize(
    "url", ["jsonfile://host/b.json", "jsonfile://", "jsonfile:///b.json?ttl=3", "other:///b.json"]
)
def test_from_url_refuses_what_it_does_not_know(url: str) -> None:
    """A host, a missing path, an unknown option or another scheme is a ValueError."""
    with pytest.raises(ValueError, match=r"jsonfile|option"):
        from_url(url)
