"""Fetching a file from a list of mirrors, verified, never leaving half a file behind, never waiting unbounded.

Every wait has a deadline: connecting and each read (`Deadlines.connect_s`),
the response's first byte counted from the request, TLS handshake included
(`first_byte_s`), and then a minimum transfer rate, measured over every
`window_s` (`min_rate`), so a mirror that trickles a byte every few seconds
fails in a bounded time and the next mirror is tried.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gpunet.errors import DatasetError
from gpunet.files.outputs import atomic_file

CHUNK = 1 << 16

Progress = Callable[[int, int], None]  # (bytes so far, total bytes or 0 if unknown)


@dataclass(frozen=True)
class Deadlines:
    """How long a mirror may keep a download waiting (seconds; bytes per second)."""

    connect_s: float = 10.0  # to connect, and for any one read to return something
    first_byte_s: float = 30.0  # from the request to the response's status line and headers
    min_rate: float = 20_000.0  # the MNIST training images (9.9 MB) then take at most ~8 minutes
    window_s: float = 30.0  # the rate is averaged over windows this long


DEADLINES = Deadlines()


class MirrorFailed(Exception):
    """One mirror could not deliver the file; the next one is tried."""


def download(
    urls: Sequence[str],
    dest: Path,
    sha256: str,
    progress: Progress | None = None,
    deadlines: Deadlines = DEADLINES,
    say: Callable[[str], None] = lambda _: None,
) -> Path:
    """Fetch the first of `urls` that delivers bytes with this SHA-256 to `dest`.

    The bytes go to a temporary file beside `dest`, which is renamed to `dest`
    only once complete and verified: an interrupted or corrupt download never
    appears under the real name. Each mirror that fails is reported through
    `say` in one line before the next one is tried.
    """
    failures = []
    for i, url in enumerate(urls):
        try:
            _fetch(url, dest, sha256, progress, deadlines)
            return dest
        except MirrorFailed as e:
            failures.append(f"{urlsplit(url).netloc or url}: {e}")
            if i + 1 < len(urls):
                say(f"mirror {failures[-1]}; trying {urlsplit(urls[i + 1]).netloc or urls[i + 1]}")
    raise DatasetError(f"could not download {dest.name}: " + "; ".join(failures))


class _Watchdog:
    """Shuts the connection's socket down when a deadline passes, waking a read blocked on it.

    The timer runs on its own thread and may fire before the connection's socket
    exists (a slow connect): a lock orders the two, and a socket watched after
    the deadline has passed is shut down at once, so the first-byte deadline is
    never lost to the read deadline.
    """

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.timer: threading.Timer | None = None
        self.fired = False
        self._lock = threading.Lock()
        self._armed = False

    def arm(self, seconds: float) -> None:
        self.disarm()
        with self._lock:
            self._armed, self.fired = True, False
        self.timer = threading.Timer(seconds, self._fire)
        self.timer.daemon = True
        self.timer.start()

    def disarm(self) -> None:
        with self._lock:  # a timer already running _fire waits here, then finds it has nothing to do
            self._armed = False
        if self.timer is not None:
            self.timer.cancel()

    def watch(self, sock: socket.socket) -> None:
        """Watch this connection through a descriptor of its own: a TLS layer takes `sock`'s over (detach)."""
        self.forget()
        with self._lock:
            self.sock = sock.dup()
            if self.fired:  # the deadline passed while connecting: the request is not even sent
                self._shut(self.sock)

    def forget(self) -> None:
        with self._lock:
            sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()

    def _fire(self) -> None:
        with self._lock:
            if not self._armed:
                return  # disarmed meanwhile: the response came in time
            self.fired = True
            if self.sock is not None:
                self._shut(self.sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):  # the connection may be gone already
            sock.shutdown(socket.SHUT_RDWR)

    def opener(self) -> urllib.request.OpenerDirector:
        """urllib's usual opener (proxies, redirects, HTTPS) whose connections report their sockets here."""
        watchdog = self

        def watched(connection_class: type[http.client.HTTPConnection]) -> type[http.client.HTTPConnection]:
            class Watched(connection_class):  # type: ignore[misc, valid-type]
                _create_connection: Callable[..., socket.socket]  # http.client's, undeclared in its stubs

                def __init__(self, *args: Any, **kwargs: Any) -> None:
                    super().__init__(*args, **kwargs)
                    create = self._create_connection

                    # http.client passes (address, timeout, source_address), all positionally.
                    def create_and_watch(*a: Any) -> socket.socket:
                        sock = create(*a)  # the raw socket, under any TLS layer
                        watchdog.watch(sock)
                        return sock

                    self._create_connection = create_and_watch

            return Watched

        class HTTP(urllib.request.HTTPHandler):
            def http_open(self, req: urllib.request.Request) -> Any:
                return self.do_open(watched(http.client.HTTPConnection), req)

        class HTTPS(urllib.request.HTTPSHandler):
            def https_open(self, req: urllib.request.Request) -> Any:
                # No context: HTTPSConnection makes the same default one urllib's handler would.
                return self.do_open(watched(http.client.HTTPSConnection), req)

        return urllib.request.build_opener(HTTP(), HTTPS())


def _fetch(url: str, dest: Path, sha256: str, progress: Progress | None, deadlines: Deadlines) -> None:
    received = 0
    watchdog = _Watchdog()
    try:
        watchdog.arm(deadlines.first_byte_s)  # connecting, TLS, the request and the headers, all within
        with watchdog.opener().open(url, timeout=deadlines.connect_s) as response:
            watchdog.disarm()
            total = int(response.headers.get("Content-Length") or 0)
            # finish_on_signal=False: Ctrl-C stops a download at once (its temporary file is removed).
            with atomic_file(dest, finish_on_signal=False) as out:
                digest = hashlib.sha256()
                window_start, window_bytes = time.monotonic(), 0
                while chunk := response.read1(CHUNK):  # whatever has arrived: a slow mirror is measured
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    if progress:
                        progress(received, total)
                    elapsed = time.monotonic() - window_start
                    if elapsed >= deadlines.window_s:
                        rate = (received - window_bytes) / elapsed
                        if rate < deadlines.min_rate:
                            raise MirrorFailed(
                                f"too slow: {received - window_bytes:,} bytes in {elapsed:.0f} s, below the minimum "
                                f"of {deadlines.min_rate:,.0f} bytes/s ({received:,} of {total or '?'} bytes received)"
                            )
                        window_start, window_bytes = time.monotonic(), received
                if total and received != total:
                    raise MirrorFailed(f"connection closed after {received} of {total} bytes")
                if digest.hexdigest() != sha256:
                    raise MirrorFailed(
                        f"checksum mismatch (got sha256 {digest.hexdigest()[:16]}…, expected {sha256[:16]}…)"
                    )
    except MirrorFailed:
        raise
    except Exception as e:
        if watchdog.fired:  # whatever the read that the shutdown woke up said
            late = f"no response within {deadlines.first_byte_s:g} s of the request"
            if isinstance(e, TimeoutError) or isinstance(getattr(e, "reason", None), TimeoutError):
                # The wait outlasted the deadline: the socket did not exist yet to be shut down (a
                # connect in progress), so the connect deadline ended it; the user is told how long.
                late += f" (still connecting; given up at the {deadlines.connect_s:g} s connect deadline)"
            raise MirrorFailed(late) from e
        raise MirrorFailed(_reason(e, received)) from e
    finally:
        watchdog.disarm()
        watchdog.forget()


def _reason(e: Exception, received: int) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return f"cannot connect ({e.reason})"
    if isinstance(e, http.client.IncompleteRead):
        # Under read1, e.partial is at most the chunked framing's CRLF, never body bytes.
        return f"connection closed after {received} bytes"
    if isinstance(e, TimeoutError):
        return f"timed out: nothing received for a read's deadline ({received:,} bytes so far)"
    if isinstance(e, OSError | ValueError | http.client.HTTPException):  # ValueError: bad URL or header
        return f"{type(e).__name__}: {e}"
    raise e
