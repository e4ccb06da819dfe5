"""Mirrors that could not be reached are remembered for a while, so that run after run does not retry them.

When every mirror of a dataset failed, the time and the mirrors tried are kept in the data cache
(<cache>/<name>-mirrors-unreachable.json). For `$GPUNET_MIRROR_COOLOFF` seconds after that (an hour
by default; 0 retries every time), `auto` goes straight to its installed fallback, saying so in one
line, instead of spending seconds and a line per file on mirrors that just failed. An explicit
`gpunet datasets download NAME` (or --dataset NAME) always tries again; a success, or another
$GPUNET_MIRRORS, forgets the failure. The record is a convenience: a cache that cannot be written
only means the mirrors are tried the next time.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from gpunet.files import environment


def _record(cache: Path, name: str) -> Path:
    return cache / f"{name}-mirrors-unreachable.json"


def remember(cache: Path, name: str, mirrors: tuple[str, ...]) -> None:
    """Every mirror in `mirrors` failed just now."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
        _record(cache, name).write_text(json.dumps({"failed_at": time.time(), "mirrors": list(mirrors)}))
    except OSError:
        pass  # the mirrors will be tried next time: nothing worse


def forget(cache: Path, name: str) -> None:
    """A download succeeded: the mirrors are reachable."""
    with contextlib.suppress(OSError):  # a stale record only delays the next try
        _record(cache, name).unlink(missing_ok=True)


def failed_recently(cache: Path, name: str, mirrors: tuple[str, ...]) -> float | None:
    """Seconds since these same mirrors all failed, if that is within the cool-off; else None."""
    try:
        record = json.loads(_record(cache, name).read_text())
        age = time.time() - float(record["failed_at"])
        same = record["mirrors"] == list(mirrors)
    except (OSError, ValueError, TypeError, KeyError):  # none, or not one this code wrote: try the mirrors
        return None
    return age if same and 0 <= age < environment.mirror_cooloff_s() else None


def ago(seconds: float) -> str:
    """How long ago, for a person: 'under a minute ago', '12 min ago', '1 h 5 min ago'."""
    minutes = int(seconds // 60)
    if minutes < 1:
        return "under a minute ago"
    return f"{minutes} min ago" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min ago"
