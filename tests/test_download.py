"""Downloads from a local HTTP server: verified, mirror by mirror, never leaving half a file behind."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from idxfiles import Announced, Paced, Raw, Trickled, serve

import gpunet.data.download
from gpunet.data.download import CHUNK, Deadlines, download
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
    assert time.monotonic() - start < 30  # a sanity bound: what failed is said by the message
    assert f"127.0.0.1:{port}" in message
    assert "cannot connect" in message
    assert "refused" in message.lower()


def test_silent_server_times_out(dest: Path) -> None:
    # Accepts the connection (the kernel does) but never answers: the read deadline, not the OS default,
    # applies. Which deadline ended the wait is in the message: the read's (0.5 s), not the first byte's (60 s).
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        start = time.monotonic()
        message = failure([f"http://127.0.0.1:{port}/f.gz"], dest, deadlines=Deadlines(connect_s=0.5, first_byte_s=60))
    assert time.monotonic() - start < 40  # a sanity bound, below the first-byte deadline
    assert "timed out: nothing received for a read's deadline" in message


# Short deadlines, so that the real mechanism (a socket shut down, a rate measured) acts within a second or two.
QUICK = Deadlines(connect_s=5, first_byte_s=1, min_rate=2_000, window_s=1)


def test_headers_trickled_a_byte_at_a_time_hit_the_first_byte_deadline_and_the_next_mirror_is_tried(
    dest: Path,
) -> None:
    """Each byte comes well within the read deadline, so only the deadline on the whole response catches it."""
    said: list[str] = []
    with serve({"/slow/f.gz": Trickled(PAYLOAD, every_s=0.2, headers=True), "/good/f.gz": PAYLOAD}) as server:
        download([server.base + "slow/f.gz", server.base + "good/f.gz"], dest, SHA, deadlines=QUICK, say=said.append)
    assert dest.read_bytes() == PAYLOAD  # the message below says which deadline ended the first mirror
    assert said == [f"mirror {server.netloc}: no response within 1 s of the request; trying {server.netloc}"]


def test_a_body_trickled_a_byte_at_a_time_fails_the_minimum_rate(dest: Path) -> None:
    with serve({"/f.gz": Trickled(PAYLOAD, every_s=0.2)}) as server:
        message = failure([server.base + "f.gz"], dest, deadlines=QUICK)
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


def test_each_failed_mirror_is_said_naming_exactly_the_next_one(dest: Path) -> None:
    """Three mirrors, the middle one without a scheme (so it is named by its whole text)."""
    said: list[str] = []
    with serve({}) as missing, serve({"/f.gz": PAYLOAD}) as good:
        urls = [missing.base + "f.gz", "example.invalid/f.gz", good.base + "f.gz"]
        download(urls, dest, SHA, say=said.append)
    assert said == [
        f"mirror {missing.netloc}: HTTP 404 Not Found; trying example.invalid/f.gz",
        f"mirror example.invalid/f.gz: ValueError: unknown url type: 'example.invalid/f.gz'; trying {good.netloc}",
    ]
    assert dest.read_bytes() == PAYLOAD


def test_checksum_mismatch_names_both_sums_by_their_first_16_digits(dest: Path) -> None:
    wrong = PAYLOAD[:-1] + b"X"
    with serve({"/f.gz": wrong}) as server:
        message = failure([server.base + "f.gz"], dest)
    got = hashlib.sha256(wrong).hexdigest()
    reason = f"checksum mismatch (got sha256 {got[:16]}…, expected {SHA[:16]}…)"
    assert message == f"could not download {dest.name}: {server.netloc}: {reason}"


def test_chunked_response_cut_short_names_the_bytes_received(dest: Path) -> None:
    cut = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\nab"
    with serve({"/f.gz": Raw(cut)}) as server:
        message = failure([server.base + "f.gz"], dest)
    assert message == f"could not download {dest.name}: {server.netloc}: connection closed after 7 bytes"


def test_progress_reports_a_total_of_0_when_the_server_sends_no_length(dest: Path) -> None:
    calls: list[tuple[int, int]] = []
    with serve({"/f.gz": Raw(b"HTTP/1.0 200 OK\r\n\r\n" + PAYLOAD)}) as server:
        download([server.base + "f.gz"], dest, SHA, progress=lambda n, total: calls.append((n, total)))
    assert dest.read_bytes() == PAYLOAD
    assert calls[-1] == (len(PAYLOAD), 0)
    assert {total for _, total in calls} == {0}


@pytest.fixture
def ctrl_c_raises() -> Iterator[None]:
    """Ctrl-C as in an interactive Python (a test runner may have its own handler): KeyboardInterrupt."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_during_a_download_stops_it_at_once_leaving_no_file(dest: Path, ctrl_c_raises: None) -> None:
    calls: list[int] = []

    def ctrl_c(received: int, total: int) -> None:
        calls.append(received)
        signal.raise_signal(signal.SIGINT)

    with serve({"/f.gz": PAYLOAD}) as server, pytest.raises(KeyboardInterrupt):
        download([server.base + "f.gz"], dest, SHA, progress=ctrl_c)
    assert len(calls) == 1  # not held until the file is complete
    assert os.listdir(dest.parent) == []  # neither the file nor its temporary


class Clock:
    """Stands in for the clock gpunet.data.download measures rates with, reading the time the test sets:
    the rate arithmetic is then checked exactly, and no test waits for a mirror to be slow."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(gpunet.data.download, "time", fake)
    return fake


def test_a_mirror_that_slows_down_fails_in_the_window_it_was_slow_in(dest: Path, clock: Clock) -> None:
    go = threading.Event()
    arrival = {1: 1.0, 2: 3.0}  # the first byte after 1 s (exactly the minimum rate), the second 2 s later

    def progress(received: int, total: int) -> None:
        clock.now = arrival[received]
        go.set()  # the server sends the next byte

    with serve({"/f.gz": Paced([b"a", b"b"], go)}) as server, pytest.raises(DatasetError) as info:
        download([server.base + "f.gz"], dest, SHA, progress, Deadlines(min_rate=1, window_s=1))
    assert str(info.value) == (
        f"could not download {dest.name}: {server.netloc}: too slow: 1 bytes in 2 s, below the minimum "
        "of 1 bytes/s (2 of 2 bytes received)"
    )
    assert os.listdir(dest.parent) == []


def test_too_slow_without_a_length_says_the_total_is_unknown(dest: Path, clock: Clock) -> None:
    def progress(received: int, total: int) -> None:
        clock.now = 1.0

    with serve({"/f.gz": Raw(b"HTTP/1.0 200 OK\r\n\r\nx")}) as server, pytest.raises(DatasetError) as info:
        download([server.base + "f.gz"], dest, SHA, progress, Deadlines(min_rate=2, window_s=1))
    assert str(info.value) == (
        f"could not download {dest.name}: {server.netloc}: too slow: 1 bytes in 1 s, below the minimum "
        "of 2 bytes/s (1 of ? bytes received)"
    )


def test_a_download_waiting_for_its_first_byte_never_keeps_the_process_alive(dest: Path) -> None:
    """Python waits at exit for every thread not marked daemon: the deadline's timer must be one."""
    before = set(threading.enumerate())
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/f.gz"
        downloader = threading.Thread(target=lambda: failure([url], dest, deadlines=Deadlines(first_byte_s=60)))
        downloader.start()
        connection, _ = silent.accept()  # the request is under way: the deadline is armed
        started = set(threading.enumerate()) - before - {downloader}
        connection.close()  # the download fails at once
        downloader.join(timeout=5)
    assert started and all(thread.daemon for thread in started)


def test_an_https_mirror_that_never_answers_its_handshake_fails_at_the_first_byte_deadline(dest: Path) -> None:
    """Only the watched connection can be shut down by the deadline. The message proves that it was: had
    the read deadline (60 s) ended the wait instead, the message would say so, and the test would take 60 s."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        netloc = f"127.0.0.1:{silent.getsockname()[1]}"
        url = f"https://{netloc}/f.gz"
        start = time.monotonic()
        message = failure([url], dest, deadlines=Deadlines(connect_s=60, first_byte_s=0.1))
    assert message == f"could not download {dest.name}: {netloc}: no response within 0.1 s of the request"
    assert time.monotonic() - start < 40  # a sanity bound, well below the read deadline


def test_a_first_byte_deadline_passing_before_the_socket_is_watched_still_shuts_it(
    dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race on a loaded machine: the deadline's timer fires while the connection is being made,
    before its socket is handed to the watchdog. That socket is then shut down the moment it is watched."""
    connect = socket.create_connection

    def connect_after_the_deadline(*args: object, **kwargs: object) -> socket.socket:
        sock = connect(*args, **kwargs)
        deadline_passed = [t for t in threading.enumerate() if isinstance(t, threading.Timer)]
        for timer in deadline_passed:
            timer.join(30)  # the timer has fired: the socket did not exist yet when it did
        return sock

    monkeypatch.setattr(socket, "create_connection", connect_after_the_deadline)
    with socket.create_server(("127.0.0.1", 0)) as silent:
        netloc = f"127.0.0.1:{silent.getsockname()[1]}"
        message = failure([f"https://{netloc}/f.gz"], dest, deadlines=Deadlines(connect_s=20, first_byte_s=0.1))
    assert message == f"could not download {dest.name}: {netloc}: no response within 0.1 s of the request"


@pytest.fixture
def stuck_port() -> Iterator[int]:
    """A port whose listen queue is full: connecting to it waits until the connect deadline."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):  # fills the queue (never accepted)
            yield port


@pytest.fixture
def thread_crashes(monkeypatch: pytest.MonkeyPatch) -> list[BaseException]:
    """Exceptions escaping any thread: Python would print each as a traceback on stderr."""
    crashes: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashes.append(args.exc_value))
    return crashes


STUCK = Deadlines(connect_s=0.8, first_byte_s=0.1)


def test_deadline_passing_while_still_connecting_fails_quietly(
    dest: Path, stuck_port: int, thread_crashes: list[BaseException]
) -> None:
    message = failure([f"http://127.0.0.1:{stuck_port}/f.gz"], dest, deadlines=STUCK)
    assert message == (
        f"could not download {dest.name}: 127.0.0.1:{stuck_port}: no response within 0.1 s of the request "
        "(still connecting; given up at the 0.8 s connect deadline)"
    )
    assert thread_crashes == []


def test_deadline_passing_while_connecting_to_a_redirect_fails_quietly(
    dest: Path, stuck_port: int, thread_crashes: list[BaseException]
) -> None:
    """The deadline passes while the redirect's new connection is being made, the first one already closed."""
    redirect = b"HTTP/1.0 302 Found\r\nLocation: http://127.0.0.1:%d/f.gz\r\nContent-Length: 0\r\n\r\n" % stuck_port
    with serve({"/f.gz": Raw(redirect)}) as server:
        message = failure([server.base + "f.gz"], dest, deadlines=STUCK)
    assert message == (
        f"could not download {dest.name}: {server.netloc}: no response within 0.1 s of the request "
        "(still connecting; given up at the 0.8 s connect deadline)"
    )
    assert thread_crashes == []
