"""Fetching a file from a list of mirrors, verified, never leaving half a file behind."""

from __future__ import annotations

import hashlib
import http.client
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from gpunet.errors import DatasetError
from gpunet.files import atomic_file

# Seconds to wait for a connection or for the next bytes: a dead mirror
# should cost seconds, not the minutes of the operating system's default.
TIMEOUT_S = 10.0
CHUNK = 1 << 16

Progress = Callable[[int, int], None]  # (bytes so far, total bytes or 0 if unknown)


class MirrorFailed(Exception):
    """One mirror could not deliver the file; the next one is tried."""


def download(
    urls: Sequence[str],
    dest: Path,
    sha256: str,
    progress: Progress | None = None,
    timeout: float = TIMEOUT_S,
) -> Path:
    """Fetch the first of `urls` that delivers bytes with this SHA-256 to `dest`.

    The bytes go to a temporary file beside `dest`, which is renamed to `dest`
    only once complete and verified: an interrupted or corrupt download never
    appears under the real name.
    """
    failures = []
    for url in urls:
        try:
            _fetch(url, dest, sha256, progress, timeout)
            return dest
        except MirrorFailed as e:
            failures.append(f"{urlsplit(url).netloc or url}: {e}")
    raise DatasetError(f"could not download {dest.name}: " + "; ".join(failures))


def _fetch(url: str, dest: Path, sha256: str, progress: Progress | None, timeout: float) -> None:
    received = 0
    try:
        # finish_on_signal=False: Ctrl-C stops a download at once (its temporary file is removed).
        with atomic_file(dest, finish_on_signal=False) as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0)
            digest = hashlib.sha256()
            while chunk := response.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                if progress:
                    progress(received, total)
            if total and received != total:
                raise MirrorFailed(f"connection closed after {received} of {total} bytes")
            if digest.hexdigest() != sha256:
                raise MirrorFailed(
                    f"checksum mismatch (got sha256 {digest.hexdigest()[:16]}…, expected {sha256[:16]}…)"
                )
    except urllib.error.HTTPError as e:
        raise MirrorFailed(f"HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        raise MirrorFailed(f"cannot connect ({e.reason})") from e
    except http.client.IncompleteRead as e:
        raise MirrorFailed(f"connection closed after {received + len(e.partial)} bytes") from e
    except (OSError, ValueError, http.client.HTTPException) as e:  # ValueError: bad URL or header
        raise MirrorFailed(f"{type(e).__name__}: {e}") from e
