"""Test helpers: IDX files written from arrays, tiny datasets, and a local HTTP server to download from."""

from __future__ import annotations

import contextlib
import gzip as gzip_module
import http.server
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TYPE_CODES = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}
FILE_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of `array`: magic, dimensions as big-endian uint32, big-endian values."""
    a = np.asarray(array)
    code = TYPE_CODES[f"{a.dtype.kind}{a.dtype.itemsize}"]
    header = struct.pack(">BBBB", 0, 0, code, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
    return header + a.astype(a.dtype.newbyteorder(">")).tobytes()


def gzipped(data: bytes) -> bytes:
    return gzip_module.compress(data, mtime=0)  # mtime=0: the same bytes (and SHA-256) every run


def write_idx(path: Path, array: np.ndarray, gzip: bool = True) -> Path:
    """Write `array` as an IDX file at exactly `path`, gzip-compressed or raw."""
    data = idx_bytes(array)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzipped(data) if gzip else data)
    return path


def make_dataset(n_train: int = 20, n_test: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """Arrays for the four standard files: 28x28 uint8 images, labels cycling through 0..9 (shuffled)."""
    rng = np.random.default_rng(seed)

    def labels(n: int) -> np.ndarray:
        return rng.permutation(np.arange(n) % 10).astype(np.uint8)

    return {
        FILE_NAMES[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        FILE_NAMES[1]: labels(n_train),
        FILE_NAMES[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        FILE_NAMES[3]: labels(n_test),
    }


def write_dataset(
    directory: Path, n_train: int = 20, n_test: int = 10, seed: int = 0, gzip: bool = True
) -> dict[str, np.ndarray]:
    """Write a small, structurally valid dataset under the four standard names; returns its arrays."""
    arrays = make_dataset(n_train, n_test, seed)
    for name, array in arrays.items():
        write_idx(Path(directory) / (f"{name}.gz" if gzip else name), array, gzip=gzip)
    return arrays


@dataclass
class Announced:
    """A response whose Content-Length says `content_length` (sent verbatim), whatever `body`'s size.

    Announcing more than the body holds simulates a connection dropped midway: the server sends
    `body` and closes the connection.
    """

    body: bytes
    content_length: int | str


@dataclass
class Trickled:
    """A response sent one byte every `every_s` seconds: the headers too when `headers` is True,
    else the headers at once and then the body byte by byte."""

    body: bytes
    every_s: float
    headers: bool = False


@dataclass
class Raw:
    """A response sent exactly as `data`, status line and headers included; then the connection closes."""

    data: bytes


@dataclass
class Paced:
    """Headers with a Content-Length, then the body's `parts` one by one: each after the first only once
    the test sets `go` (from a progress callback, say), so the client receives exactly one part per read."""

    parts: list[bytes]
    go: threading.Event


@dataclass
class LocalServer:
    base: str  # "http://127.0.0.1:PORT/"
    netloc: str
    requests: list[str] = field(default_factory=list)


@contextlib.contextmanager
def serve(routes: dict[str, bytes | int | Announced | Trickled | Raw | Paced]) -> Iterator[LocalServer]:
    """An HTTP server on 127.0.0.1 (any free port) answering GET path -> bytes, an error status or Announced.

    Paths not in `routes` get 404. Every requested path is recorded in `.requests`.
    """
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            route = routes.get(self.path, 404)
            if isinstance(route, int):
                self.send_error(route)
                return
            if isinstance(route, Trickled):
                self.trickle(route)
                return
            if isinstance(route, Raw):
                self.wfile.write(route.data)
                return
            if isinstance(route, Paced):
                self.pace(route)
                return
            body, length = (route.body, route.content_length) if isinstance(route, Announced) else (route, len(route))
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(length))
            self.end_headers()
            self.wfile.write(body)  # HTTP/1.0: the connection closes after this, short or not

        def trickle(self, route: Trickled) -> None:
            head = f"HTTP/1.0 200 OK\r\nContent-Length: {len(route.body)}\r\n\r\n".encode()
            if not route.headers:
                self.wfile.write(head)
                head = b""
            try:
                for byte in head + route.body:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(route.every_s)
            except OSError:  # the client gave up, as it should
                pass

        def pace(self, route: Paced) -> None:
            self.wfile.write(f"HTTP/1.0 200 OK\r\nContent-Length: {sum(map(len, route.parts))}\r\n\r\n".encode())
            for i, part in enumerate(route.parts):
                if i:
                    if not route.go.wait(timeout=5):
                        return  # the client never asked for more
                    route.go.clear()
                self.wfile.write(part)
                self.wfile.flush()

        def log_message(self, format: str, *args: object) -> None:  # keep the test output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    netloc = f"127.0.0.1:{server.server_port}"
    try:
        yield LocalServer(f"http://{netloc}/", netloc, requests)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
