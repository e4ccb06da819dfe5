"""The GPUNET_* environment variables, read in one place into checked values.

Each reader returns the value its user needs, or raises ConfigError with one
line naming the variable, what it holds and what it should hold. `check_all()`
reads every one, so the command line refuses a malformed setting before any
work, as it refuses a bad option. An unset or empty variable is its default.

- GPUNET_DATA: a directory where datasets are looked for first (checked where used).
- GPUNET_MIRRORS: comma-separated http:// or https:// base URLs replacing the built-in mirrors.
- GPUNET_FUSE: 1 (the default) fuses the elementwise steps on cupy, 0 does not.
- GPUNET_MIRROR_COOLOFF: seconds after every mirror failed during which `auto` does not try them
  again (default 3600; 0 tries them every time; see gpunet.data.cooloff).
- GPUNET_CPU_ENGINE: `numba` computes numpy steps in gpunet.training.fused_cpu's kernels where
  they can serve, and is refused where they cannot run at all (numba missing, no cache directory);
  `reference` always in the array-API math (gpunet.core.model). Unset: numba's where they can run,
  else the reference, saying why.
"""

from __future__ import annotations

import os
from pathlib import Path

from gpunet.errors import ConfigError

NAMES = ("GPUNET_DATA", "GPUNET_MIRRORS", "GPUNET_FUSE", "GPUNET_MIRROR_COOLOFF", "GPUNET_CPU_ENGINE")


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value and value.strip() else None


def _refuse(name: str, value: str, wanted: str) -> ConfigError:
    shown = value if len(value) <= 200 else f"{value[:100]}…{value[-50:]}"
    return ConfigError(f"${name} is {shown!r}: {wanted}")


def data_dir() -> Path | None:
    """$GPUNET_DATA, or None when unset (whether it is a directory is checked where it is searched)."""
    value = _raw("GPUNET_DATA")
    return Path(value) if value is not None else None


def mirrors() -> tuple[str, ...] | None:
    """$GPUNET_MIRRORS as a tuple of base URLs, or None when unset (the built-in list is used)."""
    value = _raw("GPUNET_MIRRORS")
    if value is None:
        return None
    from urllib.parse import urlsplit  # lazily: `import gpunet` loads no URL handling

    urls = tuple(u.strip() for u in value.split(",") if u.strip())
    wanted = "give comma-separated http:// or https:// base URLs, such as https://example.org/mnist/"
    if not urls:
        raise _refuse("GPUNET_MIRRORS", value, wanted)
    for url in urls:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 -- reading it checks it: a port that is not a number raises
        except ValueError as e:
            raise _refuse("GPUNET_MIRRORS", value, f"{url!r} is not a URL ({e}); {wanted}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
            raise _refuse("GPUNET_MIRRORS", value, f"{url!r} is not an http:// or https:// URL; {wanted}")
    return urls


def fuse() -> bool:
    """$GPUNET_FUSE: whether cupy fuses the elementwise steps (default yes)."""
    value = _raw("GPUNET_FUSE")
    if value is None:
        return True
    if value.strip() not in ("0", "1"):
        raise _refuse("GPUNET_FUSE", value, "give 1 (fuse the elementwise steps on cupy, the default) or 0")
    return value.strip() == "1"


CPU_ENGINES = ("numba", "reference")


def cpu_engine() -> str | None:
    """$GPUNET_CPU_ENGINE: which engine computes a step on numpy, "numba" or "reference"; None when
    unset (numba's kernels where they can run, else the reference, saying why)."""
    value = _raw("GPUNET_CPU_ENGINE")
    if value is None:
        return None
    if value.strip() not in CPU_ENGINES:
        raise _refuse(
            "GPUNET_CPU_ENGINE",
            value,
            "give numba (the compiled CPU kernels, the default where they can run) or reference (the array-API math)",
        )
    return value.strip()


MIRROR_COOLOFF_S = 3600


def mirror_cooloff_s() -> float:
    """$GPUNET_MIRROR_COOLOFF: seconds during which mirrors that all failed are not tried again by `auto`."""
    value = _raw("GPUNET_MIRROR_COOLOFF")
    if value is None:
        return MIRROR_COOLOFF_S
    wanted = f"give a number of seconds, 0 or more (0 tries the mirrors every time; default {MIRROR_COOLOFF_S})"
    try:
        seconds = float(value)
    except ValueError:
        raise _refuse("GPUNET_MIRROR_COOLOFF", value, wanted) from None
    if not (seconds >= 0 and seconds != float("inf")):
        raise _refuse("GPUNET_MIRROR_COOLOFF", value, wanted)
    return seconds


def check_all() -> None:
    """Read every GPUNET_* setting once: a malformed one raises ConfigError now, before any work."""
    data_dir()
    mirrors()
    fuse()
    mirror_cooloff_s()
    if cpu_engine() == "numba":  # asked for by name: refused now, before any work, if the kernels cannot run
        from gpunet.training.engine import require_numba

        require_numba()
