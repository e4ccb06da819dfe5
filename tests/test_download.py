"""Downloads from a local HTTP server: verified, mirror by mirror, never leaving half a file behind."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from pathlib import Path

import pytest
from idxfiles import Announced, Trickled, serve

from gpunet.download import CHUNK, Deadlines, download
from gpunet.errors import DatasetError

PAYLOAD = bytes(range(256)) * 1024  # 256 KiB: several chunks, so several progress calls
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests to 127.0.0.1 must never go through a proxy set in the environment."""
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "downloads" / "train-images-idx3-ubyte.gz"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def failure(urls: list[str], dest: Path, sha256: str = SHA, deadlines: Deadlines | None = None) -> str:
    """The message of the DatasetError that downloading raises; nothing may be left in dest's folder."""
    with pytest.raises(DatasetError) as info:
        download(urls, dest, sha256, deadlines=deadlines or Deadlines())
    assert not dest.exists()
    assert not dest.parent.exists() or os.listdir(dest.parent) == []  # no temporary .part file either
    return str(info.value)


def test_success_writes_the_file_under_its_final_name(dest: Path) -> None:
    calls: list[tuple[int, int]] = []
    with serve({"/mirror/f.gz": PAYLOAD}) as server:
        result = download([server.base + "mirror/f.gz"], dest, SHA, progress=lambda n, total: calls.append((n, total)))
    assert result == dest
    assert dest.read_bytes() == PAYLOAD
    assert os.listdir(dest.parent) == [dest.name]  # no .part file left beside it
    received = [n for n, _ in calls]
    assert len(calls) >= len(PAYLOAD) // CHUNK
    assert received == sorted(set(received))  # strictly increasing
    assert calls[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert all(total == len(PAYLOAD) for _, total in calls)


def test_success_creates_missing_parent_folders(tmp_path: Path) -> None:
    dest = tmp_path / "a" / "b" / "f.gz"
    with serve({"/f.gz": PAYLOAD}) as server:
        download([server.base + "f.gz"], dest, SHA)
    assert dest.read_bytes() == PAYLOAD


def test_success_replaces_an_older_file(dest: Path) -> None:
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"stale")
    with serve({"/f.gz": PAYLOAD}) as server:
        download([server.base + "f.gz"], dest, SHA)
    assert dest.read_bytes() == PAYLOAD
    assert os.listdir(dest.parent) == [dest.name]


def test_checksum_mismatch_leaves_nothing(dest: Path) -> None:
    with serve({"/f.gz": PAYLOAD[:-1] + b"X"}) as server:
        message = failure([server.base + "f.gz"], dest)
    assert "checksum mismatch" in message
    assert f"expected {SHA[:16]}" in message


def test_connection_dropped_midway_leaves_nothing(dest: Path) -> None:
    with serve({"/f.gz": Announced(PAYLOAD[:100_000], len(PAYLOAD))}) as server:
        message = failure([server.base + "f.gz"], dest)
    assert "connection closed" in message
    assert f"of {len(PAYLOAD)} bytes" in message  # reported as a short read, not as a checksum mismatch
    assert "checksum" not in message


def test_http_404_on_first_mirror_then_second_mirror_succeeds(dest: Path) -> None:
    with serve({"/second/f.gz": PAYLOAD}) as server:
        download([server.base + "first/f.gz", server.base + "second/f.gz"], dest, SHA)
    assert server.requests == ["/first/f.gz", "/second/f.gz"]
    assert dest.read_bytes() == PAYLOAD
    assert os.listdir(dest.parent) == [dest.name]


def test_first_mirror_that_succeeds_ends_the_search(dest: Path) -> None:
    with serve({"/one/f.gz": PAYLOAD, "/two/f.gz": PAYLOAD}) as server:
        download([server.base + "one/f.gz", server.base + "two/f.gz"], dest, SHA)
    assert server.requests == ["/one/f.gz"]


def test_closed_port_fails_fast(dest: Path) -> None:
    port = closed_port()
    start = time.monotonic()
    message = failure([f"http://127.0.0.1:{port}/f.gz"], dest)
    assert time.monotonic() - start < 5
    assert f"127.0.0.1:{port}" in message
    assert "cannot connect" in message
    assert "refused" in message.lower()


def test_silent_server_times_out(dest: Path) -> None:
    # Accepts the connection (the kernel does) but never answers: the timeout, not the OS default, applies.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        start = time.monotonic()
        message = failure([f"http://127.0.0.1:{port}/f.gz"], dest, deadlines=Deadlines(connect_s=0.5))
    assert time.monotonic() - start < 5
    assert "timed out" in message


# Short deadlines, so that the real mechanism (a socket shut down, a rate measured) acts within a second or two.
QUICK = Deadlines(connect_s=5, first_byte_s=1, min_rate=2_000, window_s=1)


def test_headers_trickled_a_byte_at_a_time_hit_the_first_byte_deadline_and_the_next_mirror_is_tried(
    dest: Path,
) -> None:
    """Each byte comes well within the read deadline, so only the deadline on the whole response catches it."""
    said: list[str] = []
    with serve({"/slow/f.gz": Trickled(PAYLOAD, every_s=0.2, headers=True), "/good/f.gz": PAYLOAD}) as server:
        start = time.monotonic()
        download([server.base + "slow/f.gz", server.base + "good/f.gz"], dest, SHA, deadlines=QUICK, say=said.append)
    assert time.monotonic() - start < 10
    assert dest.read_bytes() == PAYLOAD
    assert said == [f"mirror {server.netloc}: no response within 1 s of the request; trying {server.netloc}"]


def test_a_body_trickled_a_byte_at_a_time_fails_the_minimum_rate(dest: Path) -> None:
    with serve({"/f.gz": Trickled(PAYLOAD, every_s=0.2)}) as server:
        start = time.monotonic()
        message = failure([server.base + "f.gz"], dest, deadlines=QUICK)
    assert time.monotonic() - start < 10
    assert message.startswith(f"could not download {dest.name}: {server.netloc}: too slow: ")
    assert "below the minimum of 2,000 bytes/s" in message and f"of {len(PAYLOAD)} bytes received" in message


def test_all_mirrors_failing_lists_every_reason(dest: Path) -> None:
    port = closed_port()
    with serve({}) as missing, serve({"/f.gz": b"not the file"}) as wrong:
        urls = [missing.base + "f.gz", wrong.base + "f.gz", f"http://127.0.0.1:{port}/f.gz"]
        message = failure(urls, dest)
    assert message.startswith(f"could not download {dest.name}: ")
    reasons = message.split(": ", 1)[1].split("; ")
    assert len(reasons) == 3
    assert reasons[0].startswith(f"{missing.netloc}: HTTP 404")
    assert reasons[1].startswith(f"{wrong.netloc}: checksum mismatch")
    assert reasons[2].startswith(f"127.0.0.1:{port}: cannot connect")


def test_malformed_content_length_does_not_escape_as_value_error(dest: Path) -> None:
    with serve({"/bad/f.gz": Announced(PAYLOAD, "lots"), "/good/f.gz": PAYLOAD}) as server:
        download([server.base + "bad/f.gz", server.base + "good/f.gz"], dest, SHA)
    assert dest.read_bytes() == PAYLOAD
    assert os.listdir(dest.parent) == [dest.name]


def test_mirror_url_without_scheme_fails_that_mirror_only(dest: Path) -> None:
    with serve({"/f.gz": PAYLOAD}) as server:
        download(["example.invalid/mnist/f.gz", server.base + "f.gz"], dest, SHA)
    assert dest.read_bytes() == PAYLOAD


def test_no_mirrors_is_a_dataset_error(dest: Path) -> None:
    assert failure([], dest).startswith("could not download")
