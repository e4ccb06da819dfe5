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
# DOTALL: a target's name may hold a newline, and its dead run's temporary must still be found.
_TMP_NAME = re.compile(r"\.(?P<target>.+)\.(?P<pid>\d+)-(?P<host>[0-9a-f]{8})\.[^.]+\.tmp", re.DOTALL)
# The bytes the temporary's name adds to its target's: '.', '.<pid>-<host>.<8 random>.tmp' (a pid
# has at most 7 digits); the lock's ('.', '.lock') are fewer. An output's name must leave room for them.
BESIDE = 31


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


class GivenPath(type(Path())):  # type: ignore[misc]  # PosixPath or WindowsPath, as Path() makes
    """A path that keeps the text it was typed as (`given`): pathlib drops a trailing slash
    ('keepme/' becomes 'keepme'), and an output named with one must be refused, not written."""

    # Paths derived from this one (with_name, /) are GivenPaths too, without a text of their own:
    # they have only this default, and are read as str(path).
    given: str | None = None


def given_path(text: str) -> Path:
    """`text` as a Path that remembers it; the CLI parses its output options with this."""
    path = GivenPath(text)
    path.given = text
    return path


def _limit(directory: Path, name: str, default: int) -> int:
    """A file system limit (NAME_MAX, PATH_MAX) where `directory` or its nearest existing parent is."""
    for d in (directory, *directory.parents):
        try:
            return os.pathconf(d, name)
        except (OSError, ValueError):
            continue
    return default


def output_path(option: str, value: Path | str) -> Path:
    """The absolute, resolved path to write for an output given as `value`, or OutputRefused in one line.

    Refused before anything is touched: a name that ends in '/' (or '/.', '/..'), which names a
    directory, as the shell would refuse it; a relative name when the working directory was
    removed; a name too long for the file system once the temporary and lock files beside it add
    their BESIDE bytes, and a path past PATH_MAX.
    """
    given = value.given if isinstance(value, GivenPath) else None
    text = given if given is not None else value if isinstance(value, str) else os.fspath(value)
    if not text:
        raise OutputRefused(f"{option} is an empty path: give the file's name")
    last = text.replace(os.sep, "/").rsplit("/", 1)[-1]
    if last in ("", ".", ".."):
        ending = text[-len(last) - 1 :] if len(text) > len(last) else text  # '/', '/.', '/..', or all of it
        raise OutputRefused(f"{option} {shown(text)} names a directory (it ends in '{ending}'), not a file")
    try:
        absolute = Path(os.path.abspath(text))
    except OSError as e:  # os.getcwd(): the working directory was removed, or is out of reach
        why = "was removed" if isinstance(e, FileNotFoundError) else f"cannot be found ({failure_reason(e)})"
        raise OutputRefused(
            f"{option} {shown(text)}: the working directory {why}, so a relative path names nothing; "
            "give an absolute path, or run gpunet from an existing directory"
        ) from None
    path = resolve(absolute)
    name_max = _limit(path.parent, "PC_NAME_MAX", 255)
    for part in path.parts[1:-1]:
        if len(os.fsencode(part)) > name_max:
            raise OutputRefused(
                f"{option} {shown(text)}: the directory name {shown(part)} is {len(os.fsencode(part)):,} bytes "
                f"long, more than the {name_max} this file system allows"
            )
    size = len(os.fsencode(path.name))
    if size + BESIDE > name_max:
        raise OutputRefused(
            f"{option} {shown(text)}: a file name of {size:,} bytes; this file system allows {name_max}, and "
            f"gpunet needs {BESIDE} of them for the temporary and lock files it keeps beside the output, "
            f"so give a name of at most {name_max - BESIDE} bytes"
        )
    path_max = _limit(path.parent, "PC_PATH_MAX", 4096)
    size = len(os.fsencode(str(path)))
    if size + BESIDE >= path_max:
        raise OutputRefused(
            f"{option} {shown(text)}: a path of {size:,} bytes (as an absolute path); this system allows "
            f"{path_max - 1}, and gpunet needs {BESIDE} of them for its temporary file beside the output, "
            f"so give a path of at most {path_max - 1 - BESIDE} bytes"
        )
    return path


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
    except (ProcessLookupError, OverflowError):  # OverflowError: more digits than any pid has
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
        # mkstemp creates it exclusively, never through a link (O_EXCL | O_NOFOLLOW).
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-{_HOST}.", suffix=".tmp")
        try:
            with os.fdopen(fd, mode, newline=newline) as f:
                # It is private; give it the usual permissions, by descriptor: a name can be swapped.
                os.fchmod(f.fileno(), 0o666 & ~UMASK)
                yield f
                f.flush()
                os.fsync(f.fileno())
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


# A lock file's whole content: the holder's pid and a newline, or nothing yet (the holder is between
# creating it and writing the note, or the disk was full).
_LOCK_NOTE = re.compile(rb"(?:(\d{1,20})\n?)?")


def _same_inode(fd: int, path: Path) -> bool:
    """Whether `path` is still the file open as `fd` (False when it is gone or was replaced)."""
    try:
        a, b = os.fstat(fd), os.lstat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _empty_regular(path: Path) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == 0


def _not_a_lock(option: str, out: Path, lock_path: Path, what: str) -> OutputRefused:
    return OutputRefused(
        f"{option} {shown(out)}: {shown(lock_path)}, the name of gpunet's lock for it, is {what}; gpunet "
        f"neither writes nor replaces it: remove it if no gpunet process is writing {shown(out)}"
    )


def _open_existing_lock(option: str, out: Path, lock_path: Path) -> int | None:
    """A descriptor of the lock file already at `lock_path`, or None if it went away meanwhile.

    Only a regular file with no other name is opened, never through a link and never truncated;
    anything else there (a symlink, a hard link to someone's file, a directory) is refused.
    """
    try:
        st = os.lstat(lock_path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise OutputRefused(
            f"{option} {shown(out)}: cannot read its lock {shown(lock_path)} ({failure_reason(e)})"
        ) from None
    what = _kind(st.st_mode)
    if what is None and st.st_nlink != 1:
        what = f"a file with {st.st_nlink} names (hard links), so perhaps someone's file"
    if what is not None:
        raise _not_a_lock(option, out, lock_path, what)
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:  # became a link since the look
            raise _not_a_lock(option, out, lock_path, "a symbolic link") from None
        raise OutputRefused(
            f"{option} {shown(out)}: cannot open its lock {shown(lock_path)} ({failure_reason(e)})"
        ) from None
    now = os.fstat(fd)
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or now.st_nlink != 1 or not stat.S_ISREG(now.st_mode):
        os.close(fd)
        return None  # changed between the look and the open: look again
    return fd


def _stale_holder(option: str, out: Path, lock_path: Path, fd: int) -> None:
    """Check that the unlocked lock file open as `fd` is a leftover of ours; refuse it otherwise."""
    note = os.pread(fd, 64, 0)
    m = _LOCK_NOTE.fullmatch(note)
    if m is None:
        raise _not_a_lock(option, out, lock_path, "a file that does not hold a gpunet lock note (a pid)")
    pid = int(m[1]) if m[1] else None
    if pid is not None and pid != os.getpid() and _is_alive(pid):
        raise OutputRefused(
            f"{option} {shown(out)}: its lock {shown(lock_path)} names pid {pid}, a running process that does "
            f"not hold it (another machine's, or a reused pid); remove the lock if no gpunet process is "
            f"writing {shown(out)}"
        )


def _take_lock(option: str, out: Path, lock_path: Path) -> tuple[int, bool]:
    """Lock `out` through `lock_path`; returns the descriptor and whether a dead run's lock was taken over.

    The lock file is created exclusively (O_EXCL, never through a link). One already there is taken
    over only if it is a regular single-link file holding a pid note, nobody holds its flock, and
    that pid no longer runs; a held one raises OutputInUse naming its holder's pid.
    """
    for _ in range(100):
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd, existing = os.open(lock_path, flags, 0o666), False
        except FileExistsError:
            found = _open_existing_lock(option, out, lock_path)
            if found is None:
                continue
            fd, existing = found, True
        except OSError as e:
            raise OutputRefused(
                f"{option} {shown(out)}: cannot create its lock {shown(lock_path)} ({failure_reason(e)})"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OutputInUse(
                f"{option} {shown(out)} is being written by another gpunet process (pid {holder}); "
                "wait for it to finish or choose another path"
            ) from None
        # The holder removes the lock file before unlocking it: if ours is
        # no longer the file at that name, someone came and went; lock again.
        if not _same_inode(fd, lock_path):
            os.close(fd)
            continue
        try:
            if existing:
                _stale_holder(option, out, lock_path, fd)
        except BaseException:
            os.close(fd)
            raise
        note = f"{os.getpid()}\n".encode()
        with contextlib.suppress(OSError):  # on a full disk the lock holds without its note
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, note)
            os.ftruncate(fd, len(note))  # a longer note of the dead holder is cut
        return fd, existing
    raise OutputInUse(f"{option} {shown(out)}: its lock {shown(lock_path)} keeps changing; try again")


def remove_stale_placeholder(path: Path) -> bool:
    """Remove `path` if it is an empty file left by a run that died before its first save.

    That is known only by its lock: a stale gpunet lock beside it (nobody holds it, its pid no
    longer runs). An empty file without one is left alone. Returns whether it was removed.
    """
    if not _empty_regular(path):
        return False
    lock_path = path.with_name(f".{path.name}.lock")
    if not os.path.lexists(lock_path):
        return False
    try:
        fd, stale = _take_lock("", path, lock_path)
    except GpunetError:
        return False  # in use, or not a lock of ours
    try:
        if stale and _empty_regular(path):
            os.unlink(path)
            return True
        return False
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            if _same_inode(fd, lock_path):
                os.unlink(lock_path)
        os.close(fd)


class Claim:
    """The checked, locked outputs of one command (see claim_outputs)."""

    def __init__(self, outputs: dict[str, Path], updates: Mapping[str, str]) -> None:
        self.outputs = outputs  # option -> resolved path
        self.updates = dict(updates)
        self.existed = {option: os.path.lexists(p) for option, p in outputs.items()}
        self._inputs: dict[str, list[Path | str]] = {}  # every input checked so far, for outputs added later
        self._locks: dict[str, tuple[Path, int]] = {}  # option -> its lock file and descriptor
        self._made_dirs: list[Path] = []
        self._placeholders: list[tuple[Path, int, int]] = []  # (path, st_dev, st_ino) of each made
        self._taken_over: set[str] = set()  # outputs whose lock a dead run had left

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
                try:
                    source = resolve(given)
                except OSError:  # relative, and the working directory is gone: no output is that
                    continue
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
        added = {option: output_path(option, p) for option, p in outputs.items() if p is not None}
        before = dict(self.outputs)
        self.outputs = before | added
        try:
            self._check()  # the earlier outputs again too: a cheap, harmless repeat
            self._refuse_inputs(self._inputs)
            self._lock(only=set(added))
        except BaseException:
            for option in added:
                if option in self._locks and option not in before:
                    self._release_one(option)
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
            try:
                what = not_a_regular_file(out)
            except OSError as e:  # out of reach: a directory not searchable, a loop of links
                raise OutputRefused(f"{option} {shown(out)}: {failure_reason(e)}") from None
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

    def directory(self, path: Path) -> None:
        """Make directory `path` if it is missing (its parent must exist); one this claim made is
        removed at release if it stayed empty (a run that saved nothing leaves no empty runs/)."""
        try:
            path.mkdir()
        except FileExistsError:
            return
        self._made_dirs.append(path)

    def add_placeholder(self, option: str, path: Path | str) -> Path:
        """Claim `path` as a new output and create it, empty, to hold its name; returns the resolved path.

        The lock is taken first, so a run killed at any moment leaves at most a stale lock and an
        empty file that the next claim of the same name (or remove_stale_placeholder) recognises
        as its leftovers. A dead run's empty placeholder there is replaced. Raises FileExistsError,
        having released the lock, if a file is already at `path`.
        """
        self.add({option: path}, new=True)
        out = self.outputs[option]
        try:
            if option in self._taken_over and _empty_regular(out):
                os.unlink(out)  # the placeholder of a run that died holding this name: nobody's data
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        except BaseException:
            self._release_one(option)
            del self.outputs[option], self.existed[option]
            self._taken_over.discard(option)
            raise
        st = os.fstat(fd)
        os.close(fd)
        self._placeholders.append((out, st.st_dev, st.st_ino))
        return out

    def _lock(self, only: set[str] | None = None) -> None:
        for option, out in self.outputs.items():
            if only is not None and option not in only:
                continue
            lock_path = out.with_name(f".{out.name}.lock")
            fd, stale = _take_lock(option, out, lock_path)
            self._locks[option] = (lock_path, fd)
            if stale:
                self._taken_over.add(option)

    def _release_one(self, option: str) -> None:
        lock_path, fd = self._locks.pop(option)
        with contextlib.suppress(OSError):
            if _same_inode(fd, lock_path):  # never a file someone put in its place
                os.unlink(lock_path)
        os.close(fd)

    def release(self) -> None:
        """Unlock the outputs and remove placeholders never written and directories made that stayed empty."""
        while self._placeholders:
            path, dev, ino = self._placeholders.pop()
            with contextlib.suppress(OSError):
                st = os.lstat(path)
                if (st.st_dev, st.st_ino) == (dev, ino) and st.st_size == 0:
                    os.unlink(path)
        for option in reversed(list(self._locks)):
            self._release_one(option)
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
    claim = Claim({}, updates or {})
    try:
        claim.outputs = {option: output_path(option, p) for option, p in outputs.items() if p is not None}
        claim.existed = {option: os.path.lexists(p) for option, p in claim.outputs.items()}
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
