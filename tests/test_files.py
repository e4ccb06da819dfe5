"""Issue 12, class 1: no output destroys an input, another output or a system file, and none fails silently.

Every command's outputs are claimed before any work (gpunet.files.outputs.claim_outputs):
these tests give the CLI clashing, non-file, unwritable and busy outputs, on
real character devices, FIFOs, sockets, immutable directories, read-only and
full file systems, and check that nothing that existed before was changed.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from filesystems import ROOT, fill, run_privileged, tmpfs
from idxfiles import write_dataset
from typer.testing import CliRunner

from gpunet.cli.commands import app
from gpunet.errors import OutputInUse, OutputRefused, WriteFailed
from gpunet.files.outputs import atomic_file, claim_outputs
from gpunet.training import checkpoint
from gpunet.training.train import TrainConfig, Trainer
from tests.conftest import numpy_device
from tests.helpers import QUICK, invoke, one_line_error

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("isolated_data")  # tests/conftest.py: nothing leaves the machine


def refused(args: list[str], code: int = 2, text: str = "") -> str:
    """Run the CLI and check it refused with one line, before doing any work."""
    result = invoke(*args)
    assert "dataset:" not in result.stdout and "test accuracy" not in result.stdout, "it worked before refusing"
    return one_line_error(result, code, text)


# The name of gpunet's temporary files, '.<target>.<pid>-<host>.<random>.tmp': a later run (another
# process, another gpunet) must recognise a leftover by it, so the tests hold the format themselves.
TEMPORARY = re.compile(r"\.(?P<target>.+)\.(?P<pid>\d+)-(?P<host>[0-9a-f]{8})\.[^.]+\.tmp", re.DOTALL)


def this_host(directory: Path) -> str:
    """The host tag gpunet writes into its temporaries' names here, read off a real one while it exists."""
    with atomic_file(directory / "probe.bin"):
        (name,) = [n for n in os.listdir(directory) if n.startswith(".probe.bin.")]
    m = TEMPORARY.fullmatch(name)
    assert m is not None and int(m["pid"]) == os.getpid(), name
    (directory / "probe.bin").unlink()
    return m["host"]


def temporary_of(directory: Path, pid: int, tag: str = "x") -> Path:
    """A leftover temporary for `directory`/c.npz, as process `pid` of this host would have named it."""
    path = directory / f".c.npz.{pid}-{this_host(directory)}.{tag}.tmp"
    path.write_text("x")
    return path


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def snapshot(directory: Path) -> dict[str, tuple[int, int, bytes | None]]:
    """Every entry under `directory`: its type and device number, and a regular file's bytes."""
    seen = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            p = Path(root, name)
            st = os.lstat(p)
            data = p.read_bytes() if stat.S_ISREG(st.st_mode) else None
            seen[str(p.relative_to(directory))] = (stat.S_IFMT(st.st_mode), st.st_rdev, data)
    return seen


def test_two_outputs_that_are_one_file_are_refused(tmp_path: Path) -> None:
    c = tmp_path / "c.npz"
    refused([*QUICK, "--checkpoint", str(c), "--json", str(c)], text="--json and --checkpoint are the same file")
    refused([*QUICK, "--json", str(tmp_path / "r"), "--history", str(tmp_path / "r")], text="same file")
    refused([*QUICK, "--json", str(tmp_path / "x" / ".." / "r"), "--plot", str(tmp_path / "r")], text="same file")
    c.write_bytes(b"a file")
    (tmp_path / "link.json").symlink_to(c)
    os.link(c, tmp_path / "hard.csv")
    refused([*QUICK, "--checkpoint", str(c), "--json", str(tmp_path / "link.json")], text="same file")
    refused([*QUICK, "--checkpoint", str(c), "--history", str(tmp_path / "hard.csv")], text="same file")
    assert c.read_bytes() == b"a file"
    assert not list(tmp_path.glob(".*")), "no lock or temporary file is left behind"


def test_an_output_that_is_an_input_is_refused(tmp_path: Path) -> None:
    c = tmp_path / "c.npz"
    assert runner.invoke(app, [*QUICK, "--checkpoint", str(c)]).exit_code == 0
    before = snapshot(tmp_path)
    refused([*QUICK, "--resume", str(c), "--history", str(c)], text="--history and --resume are the same file")
    os.link(c, tmp_path / "c-again.npz")
    before = snapshot(tmp_path)
    refused(
        [*QUICK, "--resume", str(c), "--checkpoint", str(tmp_path / "d.npz"), "--json", str(tmp_path / "c-again.npz")],
        text="is the input --resume",
    )
    refused(["evaluate", str(c), "--json", str(c)], text="is the input the checkpoint")
    image = tmp_path / "image.npy"
    np.save(image, np.zeros((28, 28), dtype=np.uint8))
    before = snapshot(tmp_path)
    refused(["predict", str(c), str(image), "--json", str(image)], text="is the input image file")
    assert snapshot(tmp_path) == before


def test_an_output_over_a_dataset_file_is_refused_before_training(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_dataset(data)
    before = snapshot(data)
    result = runner.invoke(
        app,
        ["train", "--dataset", "mnist", "--data-dir", str(data), "--json", str(data / "train-images-idx3-ubyte.gz")],
    )
    assert result.exit_code == 2, result.output
    assert "training" not in result.stdout
    assert "--json" in result.stderr and "is the input dataset file" in result.stderr
    assert snapshot(data) == before


def test_resume_writes_back_to_its_own_checkpoint(tmp_path: Path) -> None:
    c = tmp_path / "c.npz"
    assert runner.invoke(app, [*QUICK, "--checkpoint", str(c)]).exit_code == 0
    result = runner.invoke(app, ["train", "--resume", str(c), "--iterations", "30", "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert checkpoint.load(c).step == 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz", "r.json"]


def make_special(kind: str, path: Path) -> None:
    if kind == "character device":
        if ROOT:
            os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a real /dev/null
        else:
            path.symlink_to("/dev/null")  # as a user, the real one
    elif kind == "directory":
        path.mkdir()
    elif kind == "FIFO":
        os.mkfifo(path)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.close()
    elif kind == "symlink to a FIFO":
        os.mkfifo(path.with_name("fifo"))
        path.symlink_to(path.with_name("fifo"))


@pytest.mark.parametrize(
    ("kind", "option"),
    [
        ("character device", "--checkpoint"),
        ("directory", "--json"),
        ("FIFO", "--history"),
        ("socket", "--plot"),
        ("symlink to a FIFO", "--checkpoint"),
        ("character device", "--json"),
    ],
)
def test_a_target_that_is_not_a_regular_file_is_refused_and_left_alone(tmp_path: Path, kind: str, option: str) -> None:
    target = tmp_path / "out.png"
    make_special(kind, target)
    before = snapshot(tmp_path)
    line = refused([*QUICK, option, str(target)])
    assert f"{option} " in line and ("is a " in line or "is the " in line or "refusing" in line)
    assert snapshot(tmp_path) == before


def test_dev_full_and_dev_null_are_never_replaced() -> None:
    for device in ("/dev/full", "/dev/null"):
        before = os.stat(device)
        refused([*QUICK, "--json", device], text="is a character device")
        after = os.stat(device)
        assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)


def test_the_atomic_writer_refuses_to_replace_a_non_file_that_appears_while_it_writes(tmp_path: Path) -> None:
    """The check at rename time: it cannot be raced by something created after the up-front checks."""
    target = tmp_path / "r.json"
    with pytest.raises(IsADirectoryError) as e, atomic_file(target, "w") as f:
        f.write("{}")
        os.mkfifo(target)
    assert (e.value.errno, e.value.strerror, e.value.filename) == (17, "refusing to replace a FIFO", str(target))
    assert stat.S_ISFIFO(os.lstat(target).st_mode)
    assert os.listdir(tmp_path) == ["r.json"], "the temporary file is removed"


def test_a_symlink_to_a_regular_file_is_written_through(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    (tmp_path / "latest.json").symlink_to(tmp_path / "runs" / "r.json")
    assert runner.invoke(app, [*QUICK, "--json", str(tmp_path / "latest.json")]).exit_code == 0
    assert (tmp_path / "latest.json").is_symlink() and (tmp_path / "runs" / "r.json").stat().st_size > 0


def test_an_immutable_directory_is_refused_before_any_work(tmp_path: Path) -> None:
    """chattr +i: a directory even root cannot write in (root ignores permission bits)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "old.json").write_text("{}")
    if ROOT:
        run_privileged("chattr", "+i", str(locked))
    else:
        locked.chmod(0o555)
    try:
        line = refused([*QUICK, "--json", str(locked / "r.json")], text="--json")
        assert "cannot write in" in line and ("not permitted" in line or "denied" in line)
        refused([*QUICK, "--json", str(locked / "sub" / "r.json")], text="cannot write in")
        refused([*QUICK, "--json", str(locked / "old.json")])
        assert os.listdir(locked) == ["old.json"] and (locked / "old.json").read_text() == "{}"
    finally:
        if ROOT:
            run_privileged("chattr", "-i", str(locked))
        else:
            locked.chmod(0o755)


@pytest.mark.root  # a real small file system, mounted
def test_a_read_only_file_system_is_refused_before_any_work(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "1m", "ro") as ro:
        refused([*QUICK, "--checkpoint", str(ro / "c.npz")], text="read-only file system")


def test_missing_directories_are_created_and_removed_again_if_the_command_fails(tmp_path: Path) -> None:
    assert runner.invoke(app, [*QUICK, "--json", str(tmp_path / "a" / "b" / "r.json")]).exit_code == 0
    assert (tmp_path / "a" / "b" / "r.json").is_file()
    missing = str(tmp_path / "no-such.npz")
    result = runner.invoke(app, ["train", "--resume", missing, "--json", str(tmp_path / "x" / "y" / "r.json")])
    assert result.exit_code == 1 and "no such checkpoint" in result.stderr
    assert not (tmp_path / "x").exists()


def test_a_checkpoint_held_by_a_running_trainer_is_refused_naming_it(tmp_path: Path) -> None:
    c = tmp_path / "c.npz"
    args = ["train", "--dataset", "synthetic", "--device", "cpu", "--iterations", "100000000", "--checkpoint", str(c)]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    trainer = subprocess.Popen([sys.executable, "-m", "gpunet", *args], stdout=subprocess.PIPE, text=True, env=env)
    try:
        for line in trainer.stdout:
            if line.startswith("step"):
                break  # training, so its outputs are claimed
        line = refused([*QUICK, "--checkpoint", str(c)], code=1, text="is being written by another gpunet process")
        assert f"(pid {trainer.pid})" in line
        refused([*QUICK, "--json", str(tmp_path / "." / "c.npz")], code=1, text=f"(pid {trainer.pid})")
        with pytest.raises(OutputInUse):
            claim_outputs({"--json": c})
    finally:
        trainer.kill()  # kill -9: its lock file stays behind, and must not block anyone
        trainer.communicate()
    assert (tmp_path / ".c.npz.lock").exists()
    result = runner.invoke(app, [*QUICK, "--checkpoint", str(c)])
    assert result.exit_code == 0, result.output
    assert [name for name in os.listdir(tmp_path) if name.startswith(".")] == []
    assert checkpoint.load(c).step == 20


@pytest.mark.root  # a real small file system, mounted
def test_a_full_disk_is_reported_and_the_previous_checkpoint_survives(tmp_path: Path) -> None:
    """A real ENOSPC, from a small tmpfs filled up: never a silent success."""
    small = Trainer(TrainConfig(iterations=2, eval_every=2), numpy_synthetic(), numpy_device())
    small.run()
    with tmpfs(tmp_path / "full", "256k") as full:
        path = full / "c.npz"
        checkpoint.save(path, small)
        before = path.read_bytes()
        fill(full)
        with pytest.raises(WriteFailed, match="no space left on device"):
            checkpoint.save(path, small)
        assert path.read_bytes() == before
        assert sorted(os.listdir(full)) == ["c.npz", "filler"]


def numpy_synthetic():
    from gpunet.data import datasets

    return datasets.synthetic(n_train=300, n_test=100)


def test_claim_outputs_api(tmp_path: Path) -> None:
    """The mechanism other commands use, directly: resolved paths, updates, inputs known later."""
    a = tmp_path / "a.npz"
    a.write_bytes(b"x")
    with claim_outputs(
        {"--checkpoint": a, "--json": None}, inputs={"--resume": a}, updates={"--checkpoint": "--resume"}
    ) as c:
        assert c.path("--checkpoint") == a.resolve() and c.existed["--checkpoint"]
        assert (tmp_path / ".a.npz.lock").read_text().strip() == str(os.getpid())
        with pytest.raises(OutputRefused, match="is the input the data"):
            c.check_inputs({"the data": [tmp_path / "b", a]})
    assert not (tmp_path / ".a.npz.lock").exists()
    with pytest.raises(OutputRefused, match="same file"):
        claim_outputs({"--json": a, "--history": a})
    assert sorted(os.listdir(tmp_path)) == ["a.npz"]


def test_signals_module_restores_handlers() -> None:
    from gpunet.files import signals

    before = {s: signal.getsignal(s) for s in signals.STOP_SIGNALS}
    with signals.handling(), signals.deferred():
        pass
    assert {s: signal.getsignal(s) for s in signals.STOP_SIGNALS} == before


def test_the_default_model_file_is_claimed_like_any_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """runs/<dataset>-<N>.npz is known only once the data is: it is checked and locked then."""
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, [*QUICK, "--json", "runs/synthetic-1.npz"])
    assert result.exit_code == 2, result.output
    assert "the model file and --json are the same file" in result.stderr
    assert "test accuracy" not in result.stdout
    assert not (tmp_path / "runs").exists(), "the placeholder, its lock and the directory made for it are removed"
    result = runner.invoke(app, QUICK)
    assert result.exit_code == 0, result.output
    assert os.listdir(tmp_path / "runs") == ["synthetic-1.npz"]


# --- the mechanism, call by call (mutation testing found these unwatched) ------------------------


def test_a_failure_is_said_as_a_user_reads_it() -> None:
    from gpunet.files.outputs import failure_reason

    assert failure_reason(OSError(28, "No space left on device")) == "no space left on device"
    assert failure_reason(ValueError("bad value")) == "bad value"
    assert failure_reason(KeyError()) == "KeyError"  # no message: at least what it was


def test_a_temporary_files_creator_is_alive_while_its_process_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A leftover is removed only when the process named in it is gone: this one's and a running child's stay."""
    from gpunet.files.outputs import remove_stale_temporaries

    mine = temporary_of(tmp_path, os.getpid(), "mine")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    gone = temporary_of(tmp_path, child.pid, "gone")  # exited and reaped: no such process
    assert remove_stale_temporaries(tmp_path / "c.npz") == [gone] and mine.exists()

    def not_ours(pid: int, signum: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    other_users = temporary_of(tmp_path, 12345, "other")
    monkeypatch.setattr(os, "kill", not_ours)  # what kill(pid, 0) says of another user's process
    assert remove_stale_temporaries(tmp_path / "c.npz") == [] and other_users.exists()  # alive: not ours to remove


def test_inputs_named_before_an_output_is_added_still_protect_it(tmp_path: Path) -> None:
    data_file, model = tmp_path / "d.npz", tmp_path / "m.npz"
    data_file.write_bytes(b"data")
    with claim_outputs({"--json": tmp_path / "r.json"}) as claim:
        claim.check_inputs({"--data": data_file})
        claim.check_inputs({"--resume": None})  # an option not given: nothing to protect
        with pytest.raises(OutputRefused) as e:
            claim.add({"the model file": data_file})
        assert str(e.value) == f"the model file {data_file} is the input --data {data_file}: it would be overwritten"
        assert claim.outputs == {"--json": tmp_path / "r.json"}  # a refused output is not kept
        claim.add({"the model file": model})  # another path is fine
        assert claim.path("the model file") == model and claim.existed["the model file"] is False


def test_an_added_output_records_whether_it_existed(tmp_path: Path) -> None:
    old, placeholder, later = tmp_path / "old.npz", tmp_path / "runs-1.npz", tmp_path / "later.npz"
    old.write_bytes(b"model")
    placeholder.write_bytes(b"")
    with claim_outputs({"--json": tmp_path / "r.json"}) as claim:
        claim.add({"--checkpoint": old})
        claim.add({"the model file": placeholder}, new=True)  # this command just created it
        claim.add({"--history": later, "--plot": None})
        assert claim.existed == {"--json": False, "--checkpoint": True, "the model file": False, "--history": False}
        # Every output added is locked, not only the first of the claim.
        for out in (old, placeholder, later):
            assert (tmp_path / f".{out.name}.lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(OutputRefused, match=r"^--again and --checkpoint are the same file"):
            claim.add({"--again": old})


def test_a_busy_output_names_the_process_that_holds_it(tmp_path: Path) -> None:
    import fcntl

    out = tmp_path / "c.npz"
    lock = tmp_path / ".c.npz.lock"
    for note, holder in ((b"", "unknown"), (b"4242\n", "4242"), (b"7" * 40, "7" * 32)):
        lock.write_bytes(note)
        fd = os.open(lock, os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another process's lock, as far as flock can tell
        try:
            with pytest.raises(OutputInUse) as e:
                claim_outputs({"--checkpoint": out})
        finally:
            os.close(fd)
        assert str(e.value) == (
            f"--checkpoint {out} is being written by another gpunet process (pid {holder}); "
            "wait for it to finish or choose another path"
        )


def test_a_lock_file_has_the_usual_permissions(tmp_path: Path) -> None:
    from gpunet.files.outputs import UMASK

    with claim_outputs({"--json": tmp_path / "r.json"}):
        assert stat.S_IMODE(os.stat(tmp_path / ".r.json.lock").st_mode) == 0o666 & ~UMASK


def test_each_output_at_the_end_is_reported_in_one_line_and_returned() -> None:
    from gpunet.errors import ConfigError
    from gpunet.files.outputs import write_each

    lines: list[str] = []

    def full_disk() -> None:
        raise WriteFailed(Path("/out/c.npz"), "no space left on device")

    def os_error() -> None:
        raise PermissionError(13, "Permission denied", "/out/r.json")

    def refused() -> None:
        raise ConfigError("nothing to plot")

    written = []
    jobs = [
        ("checkpoint", Path("/given/c.npz"), full_disk),
        ("summary", Path("/out/r.json"), os_error),
        ("plot", Path("/out/p.png"), refused),
        ("history", Path("/out/h.csv"), lambda: written.append("history")),
    ]
    assert write_each(jobs, lines.append) == ["checkpoint", "summary", "plot"]
    assert lines == [
        "error: cannot write the checkpoint /out/c.npz: no space left on device",  # the path the writer names
        "error: cannot write the summary /out/r.json: permission denied",
        "error: cannot write the plot /out/p.png: nothing to plot",
    ]
    assert written == ["history"]


def test_a_lock_file_removed_by_its_holder_as_it_is_taken_is_taken_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The holder removes the lock file, then unlocks: whoever locked the removed file must lock the new one."""
    import fcntl

    out, lock = tmp_path / "c.npz", tmp_path / ".c.npz.lock"
    lock.write_text("99999999999\n")  # an earlier holder's note, longer than ours
    real_flock, taken = fcntl.flock, []

    def holder_leaves_just_then(fd: int, operation: int) -> None:
        real_flock(fd, operation)
        taken.append(os.fstat(fd).st_ino)
        if len(taken) == 1:
            lock.unlink()

    monkeypatch.setattr(fcntl, "flock", holder_leaves_just_then)
    with claim_outputs({"--checkpoint": out}):
        assert len(taken) == 2 and lock.stat().st_ino == taken[1]
        assert lock.read_text() == f"{os.getpid()}\n"
    assert not lock.exists()


def test_a_lock_holds_without_its_note_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", no_space)
    with claim_outputs({"--json": tmp_path / "r.json"}), pytest.raises(OutputInUse):  # still locked
        claim_outputs({"--json": tmp_path / "r.json"})


def test_an_unwritable_directory_is_named_with_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    out = tmp_path / "r.json"

    def refused(dir: str, **kwargs: object) -> tuple[int, str]:
        raise PermissionError(13, "Permission denied", dir)

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    with pytest.raises(OutputRefused) as e:
        claim_outputs({"--json": out})
    assert str(e.value) == f"--json {out}: cannot write in {tmp_path} (permission denied)"

    def read_only(dir: str, **kwargs: object) -> tuple[int, str]:
        raise OSError(30, "Read-only file system")  # no file name given: the output's directory is named

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(OutputRefused) as e:
        claim_outputs({"--json": out})
    assert str(e.value) == f"--json {out}: cannot write in {tmp_path} (read-only file system)"


def test_the_writability_probe_is_named_as_a_temporary_a_later_run_removes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed between creating and removing its probe, a run leaves a file the next run knows to remove."""

    removed: list[str] = []
    real_unlink = os.unlink
    monkeypatch.setattr(
        os, "unlink", lambda path, *a, **k: removed.append(os.fspath(path)) or real_unlink(path, *a, **k)
    )
    with claim_outputs({"--json": tmp_path / "r.json"}):
        (probe,) = removed
    m = TEMPORARY.fullmatch(Path(probe).name)
    assert m is not None and m["target"] == "r.json" and int(m["pid"]) == os.getpid()
    assert m["host"] == this_host(tmp_path)


def test_a_directory_replaced_by_a_file_while_checking_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A race only (a file where the directory was, between the two checks); said in one line all the same."""
    blocker = tmp_path / "runs"
    blocker.mkdir()
    out = blocker / "r.json"
    real_exists = os.path.exists

    def replaced_meanwhile(path: object) -> bool:  # the race, at its moment: after the first look at `out`
        if Path(os.fspath(path)) == out and blocker.is_dir():
            blocker.rmdir()
            blocker.write_text("a file, not a directory")
        return real_exists(path)

    monkeypatch.setattr(os.path, "exists", replaced_meanwhile)
    with pytest.raises(OutputRefused) as e:
        claim_outputs({"--json": out})
    assert str(e.value) == f"--json {out}: {blocker} is not a directory"


def test_what_stands_in_an_outputs_place_is_named(tmp_path: Path) -> None:
    """Each kind of file, made for real (a block device: the first in /dev, where there is one)."""
    from gpunet.files.outputs import not_a_regular_file

    (tmp_path / "file").write_text("x")
    (tmp_path / "directory").mkdir()
    os.mkfifo(tmp_path / "fifo")
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(str(tmp_path / "socket"))
    (tmp_path / "link").symlink_to(tmp_path / "file")
    try:
        kinds = {name: not_a_regular_file(tmp_path / name) for name in ("file", "directory", "fifo", "socket", "link")}
    finally:
        listening.close()
    assert kinds == {
        "file": None,
        "directory": "a directory",
        "fifo": "a FIFO",
        "socket": "a socket",
        "link": "a symbolic link",  # never followed
    }
    assert not_a_regular_file(Path("/dev/null")) == "a character device"
    blocks = [e.path for e in os.scandir("/dev") if stat.S_ISBLK(e.stat(follow_symlinks=False).st_mode)]
    for block in blocks[:1]:
        assert not_a_regular_file(Path(block)) == "a block device"
    assert not_a_regular_file(tmp_path / "absent") is None and not_a_regular_file(tmp_path / "file" / "x") == (
        "below something that is not a directory"
    )


def test_a_target_that_keeps_changing_is_given_up_after_three_tries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tries = []

    def taken_each_time(src: str, dst: str) -> None:
        tries.append(dst)
        raise FileExistsError(17, "File exists", dst)  # and gone again when looked at: a racing process

    monkeypatch.setattr(os, "link", taken_each_time)
    target = tmp_path / "r.json"
    with pytest.raises(FileExistsError) as e, atomic_file(target, "w") as f:
        f.write("{}")
    assert len(tries) == 3
    assert (e.value.errno, e.value.strerror, e.value.filename) == (17, "the target keeps changing", str(target))
    assert os.listdir(tmp_path) == []


def test_claim_refusals_name_the_option_and_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, d = tmp_path / "a.json", tmp_path / "d"
    d.mkdir()
    with pytest.raises(OutputRefused) as e:
        claim_outputs({"--json": a, "--history": a})
    assert str(e.value) == f"--history and --json are the same file ({a}): each output needs its own"
    with pytest.raises(OutputRefused) as e:
        claim_outputs({"--json": d})
    assert str(e.value) == f"--json {d} is a directory: refusing to replace it with a file"
    with claim_outputs({"--json": a}) as claim, pytest.raises(OutputRefused) as e:
        claim.add({"the model file": d})  # an output added later is checked as the first ones were
    assert str(e.value) == f"the model file {d} is a directory: refusing to replace it with a file"
    a.write_text("{}")
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # a read-only file, even for root
    with pytest.raises(OutputRefused) as e:
        claim_outputs({"--json": a})
    assert str(e.value) == f"--json {a} is read-only: refusing to replace it"


def test_a_directory_that_cannot_be_made_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "new" / "deeper" / "r.json"

    def refused(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refused)
    with pytest.raises(OutputRefused) as e:
        claim_outputs({"--json": out})
    assert str(e.value) == f"--json {out}: cannot write in {tmp_path / 'new'} (permission denied)"


def test_a_lock_file_someone_removed_is_released_quietly(tmp_path: Path) -> None:
    with claim_outputs({"--json": tmp_path / "r.json"}):
        (tmp_path / ".r.json.lock").unlink()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("errno_name", ["EPERM", "EOPNOTSUPP", "EMLINK"])
def test_without_hard_links_the_file_is_renamed_into_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, errno_name: str
) -> None:
    import errno

    def no_links(src: str, dst: str) -> None:
        raise OSError(getattr(errno, errno_name), "hard links not supported")  # FAT, some network file systems

    monkeypatch.setattr(os, "link", no_links)
    target = tmp_path / "r.json"
    with atomic_file(target, "w") as f:
        f.write("{}")
    assert target.read_text() == "{}" and os.listdir(tmp_path) == ["r.json"]


def test_another_failure_to_link_is_not_papered_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_disk(src: str, dst: str) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "link", broken_disk)
    with pytest.raises(OSError, match="Input/output error"), atomic_file(tmp_path / "r.json", "w") as f:
        f.write("{}")
    assert os.listdir(tmp_path) == []


def test_an_output_below_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes").write_text("a file")
    out = tmp_path / "notes" / "r.json"
    with pytest.raises(OutputRefused) as e:
        claim_outputs({"--json": out})
    assert str(e.value) == (
        f"--json {out} is below something that is not a directory: refusing to replace it with a file"
    )


def test_only_regular_stale_temporaries_are_removed_and_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from gpunet.files import outputs

    pid = dead_pid()
    stale = []
    for i in range(3):
        (tmp_path / f"unrelated-{i}").write_text("x")  # other names, listed in between, are passed over
        stale.append(temporary_of(tmp_path, pid, str(i)))
    keep = temporary_of(tmp_path, pid, "dir")
    keep.unlink()
    keep.mkdir()  # named like a leftover, but a directory: not gpunet's
    link = temporary_of(tmp_path, pid, "link")
    link.unlink()
    link.symlink_to(tmp_path / "unrelated-0")  # a link to a regular file: not gpunet's either
    assert sorted(outputs.remove_stale_temporaries(tmp_path / "c.npz")) == sorted(stale)
    assert keep.is_dir() and link.is_symlink() and not any(p.exists() for p in stale)
    # Age alone: exactly a day old is not yet stale, a second more is.
    mine = temporary_of(tmp_path, os.getpid(), "mine")
    now = time.time()
    os.utime(mine, (now - outputs.STALE_AFTER_S, now - outputs.STALE_AFTER_S))
    monkeypatch.setattr(time, "time", lambda: now)
    assert outputs.remove_stale_temporaries(tmp_path / "c.npz") == [] and mine.exists()
    monkeypatch.setattr(time, "time", lambda: now + 1)
    assert outputs.remove_stale_temporaries(tmp_path / "c.npz") == [mine]
    assert outputs.remove_stale_temporaries(tmp_path / "missing" / "c.npz") == []  # no directory: nothing to do


def test_asking_whether_a_process_is_alive_sends_it_nothing(tmp_path: Path) -> None:
    """kill(pid, 0) only asks; any other number would be a real signal to someone else's process."""
    from gpunet.files.outputs import remove_stale_temporaries

    program = "import signal, time\nfor s in (1, 2, 15): signal.signal(s, signal.SIG_DFL)\nprint('ready', flush=True)\n"
    child = subprocess.Popen([sys.executable, "-c", program + "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "ready\n"  # its signals are at their defaults (under nohup SIGHUP is ignored)
    try:
        leftover = temporary_of(tmp_path, child.pid)
        assert remove_stale_temporaries(tmp_path / "c.npz") == [] and leftover.exists()  # its maker is alive
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(timeout=0.5)  # still running: it was sent no signal
    finally:
        child.kill()
        child.wait(timeout=10)


def test_a_temporary_that_cannot_be_removed_does_not_stop_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gpunet.files import outputs

    pid = dead_pid()
    stale = [temporary_of(tmp_path, pid, str(i)) for i in range(4)]
    real_unlink, refused = os.unlink, []

    def first_one_is_busy(path, *args, **kwargs):
        if not refused:
            refused.append(Path(path))
            raise PermissionError(13, "Permission denied", path)  # another user's, on a shared disk
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", first_one_is_busy)
    removed = outputs.remove_stale_temporaries(tmp_path / "c.npz")
    assert sorted(removed) == sorted(set(stale) - set(refused)) and len(removed) == 3


def test_a_lock_note_that_is_not_text_still_names_something(tmp_path: Path) -> None:
    import fcntl

    out, lock = tmp_path / "c.npz", tmp_path / ".c.npz.lock"
    lock.write_bytes(b"\xff\xfe4242\n")
    fd = os.open(lock, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        with pytest.raises(OutputInUse, match="another gpunet process \\(pid \ufffd\ufffd4242\\)"):
            claim_outputs({"--checkpoint": out})
    finally:
        os.close(fd)
