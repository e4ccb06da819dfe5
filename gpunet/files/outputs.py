"""Users' files are sacred: every output is checked before work starts and written atomically.

Two things every command that writes files uses:

- `claim_outputs(outputs, inputs)`, before any work: each output path is
  resolved (symlinks followed) and refused, with one line naming the option,
  if it is the same file as another output or as an input (compared by
  resolved path and by inode, so hard links and symlinks count), if something
  that is not a regular file is there (a directory, a device, a FIFO, a
  socket), or if its directory cannot be written. Missing parent directories
  are created. Each output is then locked (a `.<name>.lock` file beside it,
  flock'd and holding the pid) until the command ends, so a second gpunet
  process given the same output is refused, naming the first one's pid:

      with claim_outputs({"--checkpoint": ckpt, "--json": summary},
                         inputs={"--resume": resume}, updates={"--checkpoint": "--resume"}) as claim:
          ...  # after the data is found: claim.check_inputs({"the dataset": ds.files})
          ...  # write with atomic_file(claim.path("--checkpoint")) or the writers that use it

  Options whose value is None are skipped. `updates` names the outputs allowed
  to be the same file as one input (a resumed checkpoint written back in place).
  A CLI command does this with `claim(ctx, outputs, inputs=..., updates=...)`
  (gpunet/cli/commands.py), which releases the claim when the command ends.

- `atomic_file(path)`: a temporary file beside `path` (`.<name>.<pid>-<host>.<random>.tmp`),
  flushed to disk and then renamed onto `path`; if anything fails, the
  temporary file is removed and `path` is untouched. At rename time it refuses
  to replace anything that is not a regular file, whatever the checks found
  earlier. Ctrl-C, SIGTERM and SIGHUP arriving while it writes are held until
  the file is complete (gpunet.files.signals.deferred). Before writing, it removes
  stale temporary files of the same target: those whose creating process on
  this machine has exited, or that are older than STALE_AFTER_S.

`write_each(jobs, report)` is the end of a run: each output written on its
own, each failure reported in one line, the failed ones returned. A writer
turns the OSError of atomic_file into WriteFailed(path, failure_reason(e)),
as cli.write_json and checkpoint.save do.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import socket
import stat
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from gpunet.errors import GpunetError, OutputInUse, OutputRefused, WriteFailed, shown
from gpunet.files import signals

STALE_AFTER_S = 24 * 3600  # a temporary file this old is nobody's write in progress


# Every file atomic_file completed in this process (the CLI clears it when a command starts),
# so the line a signal ends a command with can say exactly what was written.
WRITTEN: list[Path] = []


def written_so_far() -> str:
    """What a command interrupted now leaves: the files it wrote, or that it wrote none."""
    if not WRITTEN:
        return "nothing was written"
    return "written before it stopped: " + ", ".join(shown(p) for p in dict.fromkeys(WRITTEN))


def failure_reason(e: BaseException) -> str:
    """An OSError as a user reads it: 'no space left on device', not '[Errno 28] ...'."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror[0].lower() + e.strerror[1:]
    return str(e) or type(e).__name__


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once, at import: setting the umask to read it is process-wide, and a
# thread creating a file at that moment would create it world-writable.
UMASK = _read_umask()

# The temporary files' names say who made them, so a later run can tell a
# dead process's leftovers from a write in progress.
_HOST = f"{zlib.crc32(socket.gethostname().encode()):08x}"
_TMP_NAME = re.compile(r"\.(?P<target>.+)\.(?P<pid>\d+)-(?P<host>[0-9a-f]{8})\.[^.]+\.tmp")


def _kind(mode: int) -> str | None:
    """What a file is, when it is not a regular file (None when it is)."""
    if stat.S_ISREG(mode):
        return None
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def resolve(path: Path | str) -> Path:
    """The absolute path with every symlink followed (as far as the path exists)."""
    return Path(os.path.realpath(os.fspath(path)))


def not_a_regular_file(path: Path) -> str | None:
    """What stands at `path` if it is something an output must never replace, else None."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return "below something that is not a directory"
    return _kind(st.st_mode)


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove gpunet's leftover temporary files for `target`; returns what was removed.

    A temporary file is stale when the process that created it (named in the
    file name, on this host) no longer runs, or when it is older than
    STALE_AFTER_S whoever made it. Files of other names are never touched.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        m = _TMP_NAME.fullmatch(entry.name)
        if m is None or m["target"] != target.name:
            continue
        try:
            st = os.lstat(entry.path)  # a link is never followed: only gpunet's own regular files go
            if not stat.S_ISREG(st.st_mode):
                continue
            dead = m["host"] == _HOST and not _is_alive(int(m["pid"]))
            if dead or now - st.st_mtime > STALE_AFTER_S:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue  # gone already, or not ours to remove
    return removed


def _rename_into_place(tmp: str, path: Path) -> None:
    """Move the finished temporary file onto `path`, never replacing a non-file.

    When nothing is at `path`, a hard link claims the name (it fails if
    something appeared meanwhile); otherwise only a regular file is replaced.
    """
    for _ in range(3):
        what = not_a_regular_file(path)
        if what is not None:
            raise IsADirectoryError(errno.EEXIST, f"refusing to replace {what}", str(path))
        if not os.path.lexists(path):
            try:
                os.link(tmp, path)
            except FileExistsError:
                continue  # something appeared since: look again
            except OSError as e:  # a file system without hard links
                if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
                    raise
                os.replace(tmp, path)
                return
            os.unlink(tmp)
            return
        os.replace(tmp, path)
        return
    raise FileExistsError(errno.EEXIST, "the target keeps changing", str(path))


@contextlib.contextmanager
def atomic_file(
    path: Path, mode: str = "wb", *, newline: str | None = None, finish_on_signal: bool = True
) -> Iterator[IO[Any]]:
    """A temporary file beside `path`, renamed onto it once written and flushed to disk.

    If the block raises, the temporary file is removed and `path` is untouched.
    `path` is resolved first (a symlink to a file updates that file). Raises
    OSError (IsADirectoryError when `path` is not a regular file). With
    `finish_on_signal` (the default), Ctrl-C, SIGTERM and SIGHUP wait until the
    file is complete or removed; pass False for long writes such as downloads,
    which are then interrupted, still leaving no temporary file behind.
    """
    path = resolve(path)
    what = not_a_regular_file(path)
    if what is not None:
        raise IsADirectoryError(errno.EEXIST, f"refusing to replace {what}", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    hold = signals.deferred() if finish_on_signal else contextlib.nullcontext()
    with hold:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-{_HOST}.", suffix=".tmp")
        try:
            with os.fdopen(fd, mode, newline=newline) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes it private; give it the usual permissions
            _rename_into_place(tmp, path)
            WRITTEN.append(path)
        finally:
            with signals.deferred():  # a second signal must not skip the clean-up
                Path(tmp).unlink(missing_ok=True)


def _same_file(a: Path, b: Path) -> bool:
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _paths(value: Path | str | Iterable[Path | str] | None) -> list[Path]:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [Path(value)]
    return [Path(v) for v in value]


class Claim:
    """The checked, locked outputs of one command (see claim_outputs)."""

    def __init__(self, outputs: dict[str, Path], updates: Mapping[str, str]) -> None:
        self.outputs = outputs  # option -> resolved path
        self.updates = dict(updates)
        self.existed = {option: os.path.lexists(p) for option, p in outputs.items()}
        self._inputs: dict[str, list[Path | str]] = {}  # every input checked so far, for outputs added later
        self._locks: list[tuple[Path, int]] = []
        self._made_dirs: list[Path] = []

    def path(self, option: str) -> Path:
        """The resolved path to write for `option` (it must have been claimed)."""
        return self.outputs[option]

    def check_inputs(self, inputs: Mapping[str, Path | str | Iterable[Path | str] | None]) -> None:
        """Refuse any output that is the same file as one of `inputs` (label -> path or paths)."""
        for label, value in inputs.items():
            self._inputs.setdefault(label, []).extend(_paths(value))
        self._refuse_inputs(inputs)

    def _refuse_inputs(self, inputs: Mapping[str, Path | str | Iterable[Path | str] | None]) -> None:
        for label, value in inputs.items():
            for given in _paths(value):
                source = resolve(given)
                for option, out in self.outputs.items():
                    if self.updates.get(option) == label:
                        continue
                    if _same_file(out, source):
                        raise OutputRefused(
                            f"{option} {shown(out)} is the input {label} {shown(given)}: it would be overwritten"
                        )

    def add(self, outputs: Mapping[str, Path | str | None], new: bool = False) -> None:
        """Claim more outputs, known only once the work began (a default file named after the dataset).

        They are checked against every output and input so far, then locked.
        `new`: the file there is a placeholder this command just created.
        """
        added = {option: resolve(p) for option, p in outputs.items() if p is not None}
        before = dict(self.outputs)
        self.outputs = before | added
        try:
            self._check()  # the earlier outputs again too: a cheap, harmless repeat
            self._refuse_inputs(self._inputs)
            self._lock(only=set(added))
        except BaseException:
            self.outputs = before
            raise
        for option in added:
            self.existed[option] = False if new else os.path.lexists(added[option])

    def _check(self) -> None:
        seen: list[tuple[str, Path]] = []
        for option, out in self.outputs.items():
            for other, earlier in seen:
                if _same_file(out, earlier):
                    raise OutputRefused(
                        f"{option} and {other} are the same file ({shown(out)}): each output needs its own"
                    )
            seen.append((option, out))
            what = not_a_regular_file(out)
            if what is not None:
                raise OutputRefused(f"{option} {shown(out)} is {what}: refusing to replace it with a file")
            if os.path.exists(out) and not os.access(out, os.W_OK):
                raise OutputRefused(f"{option} {shown(out)} is read-only: refusing to replace it")
            self._check_directory(option, out)

    def _check_directory(self, option: str, out: Path) -> None:
        missing = []
        parent = out.parent
        while not os.path.lexists(parent):
            missing.append(parent)
            parent = parent.parent
        if not parent.is_dir():
            raise OutputRefused(f"{option} {shown(out)}: {shown(parent)} is not a directory")
        try:  # the honest test of writability (ACLs, read-only mounts, immutable directories, root)
            for d in reversed(missing):
                d.mkdir()
                self._made_dirs.append(d)
            fd, probe = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.{os.getpid()}-{_HOST}.", suffix=".tmp")
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise OutputRefused(
                f"{option} {shown(out)}: cannot write in {shown(e.filename or out.parent)} ({failure_reason(e)})"
            ) from None

    def _lock(self, only: set[str] | None = None) -> None:
        for option, out in self.outputs.items():
            if only is not None and option not in only:
                continue
            lock_path = out.with_name(f".{out.name}.lock")
            while True:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                    os.close(fd)
                    raise OutputInUse(
                        f"{option} {shown(out)} is being written by another gpunet process (pid {holder}); "
                        "wait for it to finish or choose another path"
                    ) from None
                # The holder removes the lock file before unlocking it: if ours is
                # no longer the file at that name, someone came and went; lock again.
                with contextlib.suppress(FileNotFoundError):
                    if os.fstat(fd).st_ino == os.stat(lock_path).st_ino:
                        break
                os.close(fd)
            self._locks.append((lock_path, fd))
            note = f"{os.getpid()}\n".encode()
            with contextlib.suppress(OSError):  # on a full disk the lock holds without its note
                os.write(fd, note)
                os.ftruncate(fd, len(note))  # a longer note of an earlier holder is cut

    def release(self) -> None:
        """Unlock the outputs and remove directories made for them that stayed empty."""
        while self._locks:
            lock_path, fd = self._locks.pop()
            with contextlib.suppress(OSError):
                os.unlink(lock_path)
            os.close(fd)
        while self._made_dirs:
            with contextlib.suppress(OSError):
                self._made_dirs.pop().rmdir()

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def claim_outputs(
    outputs: Mapping[str, Path | str | None],
    inputs: Mapping[str, Path | str | Iterable[Path | str] | None] | None = None,
    updates: Mapping[str, str] | None = None,
) -> Claim:
    """Check and lock a command's outputs before any work starts; use as `with claim_outputs(...) as claim:`.

    `outputs` maps an option name (as the user typed it: "--json") to its path
    or None; `inputs` maps a label ("--resume", "the dataset") to a path or
    paths the command reads; `updates` maps an output to the one input label it
    may be the same file as. Raises OutputRefused (exit code 2) or
    OutputInUse (exit code 1) with one line naming the option and the path.
    """
    claim = Claim({option: resolve(p) for option, p in outputs.items() if p is not None}, updates or {})
    try:
        claim._check()
        claim.check_inputs(inputs or {})
        claim._lock()
    except BaseException:
        claim.release()
        raise
    return claim


def write_each(jobs: Iterable[tuple[str, Path, Callable[[], None]]], report: Callable[[str], None]) -> list[str]:
    """Write each output on its own: `jobs` are (what, path, write) triples.

    A failing write (an OSError or a GpunetError) is reported as one line,
    `error: cannot write the <what> <path>: <reason>`, and the next output is
    still written. Returns the `what` of each that failed.
    """
    failed = []
    for what, path, write in jobs:
        try:
            write()
        except WriteFailed as e:
            report(f"error: cannot write the {what} {shown(e.path)}: {e.reason}")
            failed.append(what)
        except (OSError, GpunetError) as e:
            report(f"error: cannot write the {what} {shown(path)}: {failure_reason(e)}")
            failed.append(what)
    return failed
