"""Issue 20, classes 1, 2, 9 and 11: files given carelessly or with hostile intent.

1. A lock file (`.NAME.lock`) is created exclusively and never through a link: a symlink, a hard link,
   a directory or a foreign file at its name is refused in one line and left as it was.
2. An output typed with a trailing '/' names a directory and is refused, as the shell would refuse it.
9. A name too long for the file system, a relative output after the working directory was removed, and
   a closed stdin, stdout or stderr end in one line (or a correct run), never a traceback.
11. Leftovers: a run killed before its first save, a dead run's temporary with a newline in its name,
   and MLPClassifier.save() beside a running `gpunet train` are handled like every other output.

Every case goes through the CLI (tests/helpers.invoke, or a real process where the case needs one) or
gpunet.*, and checks that nothing outside the named outputs changed.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gpunet
from gpunet.errors import OutputInUse, OutputRefused
from gpunet.files.outputs import BESIDE, atomic_file, claim_outputs
from gpunet.training import checkpoint
from tests.helpers import QUICK, invoke, one_line_error

ROOT = Path(__file__).resolve().parent.parent
TINY = ["train", "--dataset", "synthetic", "--iterations", "2", "--eval-every", "1", "--device", "cpu"]

pytestmark = pytest.mark.usefixtures("isolated_data")  # tests/conftest.py: nothing leaves the machine


def snapshot(directory: Path) -> dict[str, tuple[int, int, bytes | str | None]]:
    """Every entry under `directory`: its type, its number of names, and a file's bytes or a link's target."""
    seen = {}
    for root, dirs, files in os.walk(directory):
        if root == str(directory) and "cache" in dirs:
            dirs.remove("cache")  # the test's own download cache (tests/conftest.py), where matplotlib keeps fonts
        for name in dirs + files:
            p = Path(root, name)
            st = os.lstat(p)
            content = (
                p.read_bytes() if stat.S_ISREG(st.st_mode) else os.readlink(p) if stat.S_ISLNK(st.st_mode) else None
            )
            seen[str(p.relative_to(directory))] = (stat.S_IFMT(st.st_mode), st.st_nlink, content)
    return seen


def listing(directory: Path) -> list[str]:
    """The names in `directory`, but for the empty download cache tests/conftest.py points to."""
    return sorted(n for n in os.listdir(directory) if n != "cache")


def changed(before: dict, directory: Path) -> list[str]:
    after = snapshot(directory)
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def gpunet_process(args: list[str], cwd: Path, shell_prefix: str = "", **kwargs) -> subprocess.CompletedProcess:
    """`gpunet ARGS` as its own process (through sh, so a test can close a stream or remove the directory)."""
    command = f"{shell_prefix}exec {shlex.quote(sys.executable)} -m gpunet {shlex.join(args)}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        ["sh", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, **kwargs
    )


@pytest.fixture(scope="module")
def fitted() -> gpunet.MLPClassifier:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4))
    return gpunet.MLPClassifier(hidden=(4,), iterations=3, device="cpu").fit(x, (x[:, 0] > 0).astype(int))


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "model.npz"
    assert invoke(*TINY, "--checkpoint", path).exit_code == 0
    return path


# --- 1. the lock file never follows a link and never truncates what is there ---------------------------


def test_a_symlinked_lock_is_refused_and_the_file_it_points_to_is_untouched(tmp_path: Path) -> None:
    """The issue's example: `ln -s thesis.txt .x.npz.lock; gpunet train --checkpoint x.npz` wrote a pid into it."""
    (tmp_path / "thesis.txt").write_text("draft\n")
    (tmp_path / ".x.npz.lock").symlink_to("thesis.txt")
    before = snapshot(tmp_path)
    line = one_line_error(invoke(*TINY, "--checkpoint", "x.npz"), 2, "is a symbolic link")
    assert line.startswith(f"error: --checkpoint {tmp_path / 'x.npz'}: {tmp_path / '.x.npz.lock'}, the name of")
    assert changed(before, tmp_path) == []


@pytest.mark.parametrize("command", [[*TINY, "--no-save"], ["evaluate", "MODEL", "--device", "cpu"]])
def test_a_hard_linked_lock_beside_json_is_refused(tmp_path: Path, model: Path, command: list[str]) -> None:
    (tmp_path / "thesis.txt").write_text("draft\n")
    os.link(tmp_path / "thesis.txt", tmp_path / ".r.json.lock")
    before = snapshot(tmp_path)
    args = [str(model) if a == "MODEL" else a for a in command]
    one_line_error(invoke(*args, "--json", "r.json"), 2, "is a file with 2 names (hard links)")
    assert changed(before, tmp_path) == []


def test_evaluate_json_with_a_symlinked_lock_is_refused(tmp_path: Path, model: Path) -> None:
    (tmp_path / "thesis.txt").write_text("draft\n")
    (tmp_path / ".r.json.lock").symlink_to(tmp_path / "thesis.txt")
    before = snapshot(tmp_path)
    one_line_error(invoke("evaluate", model, "--device", "cpu", "--json", "r.json"), 2, "is a symbolic link")
    assert changed(before, tmp_path) == []


@pytest.mark.parametrize(
    "plant",
    [
        pytest.param(lambda lock: lock.mkdir(), id="directory"),
        pytest.param(lambda lock: lock.symlink_to("not-yet-there.txt"), id="dangling-symlink"),
        pytest.param(lambda lock: lock.write_text("my notes, not a pid\n"), id="foreign-text"),
        pytest.param(lambda lock: lock.write_bytes(b"123\n" * 1000), id="long-file"),
        pytest.param(lambda lock: os.mkfifo(lock), id="fifo"),
    ],
)
def test_anything_but_a_lock_at_the_locks_name_is_refused_and_left_alone(tmp_path: Path, plant) -> None:
    plant(tmp_path / ".r.json.lock")
    before = snapshot(tmp_path)
    result = invoke(*TINY, "--no-save", "--json", "r.json")
    line = one_line_error(result, 2, "the name of gpunet's lock for it, is ")
    assert "remove it if no gpunet process is writing" in line
    assert changed(before, tmp_path) == []
    assert not (tmp_path / "not-yet-there.txt").exists(), "a dangling link is never followed to create its target"


def test_the_python_api_refuses_a_symlinked_lock(tmp_path: Path, fitted: gpunet.MLPClassifier) -> None:
    (tmp_path / "thesis.txt").write_text("draft\n")
    (tmp_path / ".m.npz.lock").symlink_to("thesis.txt")
    before = snapshot(tmp_path)
    with pytest.raises(OutputRefused, match="is a symbolic link"):
        fitted.save("m.npz")
    with pytest.raises(OutputRefused, match="is a symbolic link"):
        claim_outputs({"--json": tmp_path / "m.npz"})
    assert changed(before, tmp_path) == []


def test_a_dead_runs_lock_is_taken_over_and_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for note in (f"{dead.pid}\n", "", "99999999999\n", f"{os.getpid()}\n"):  # dead, no note yet, impossible, ours
        (tmp_path / ".r.json.lock").write_text(note)
        result = invoke(*TINY, "--no-save", "--json", "r.json")
        assert result.exit_code == 0, result.output
        assert json.loads((tmp_path / "r.json").read_text())["status"] == "completed"
        assert listing(tmp_path) == ["r.json"]


def test_a_lock_naming_a_live_process_that_does_not_hold_it_is_refused(tmp_path: Path) -> None:
    """No flock, but its pid runs (another machine's run, or a reused pid): a person must decide."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".r.json.lock").write_text(f"{sleeper.pid}\n")
        before = snapshot(tmp_path)
        line = one_line_error(invoke(*TINY, "--no-save", "--json", "r.json"), 2, f"names pid {sleeper.pid}")
        assert "a running process that does not hold it" in line
        assert changed(before, tmp_path) == []
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_held_lock_still_names_its_holder(tmp_path: Path) -> None:
    lock = tmp_path / ".r.json.lock"
    with claim_outputs({"--json": tmp_path / "r.json"}):
        assert lock.read_text() == f"{os.getpid()}\n" and os.lstat(lock).st_nlink == 1
        one_line_error(invoke(*TINY, "--no-save", "--json", "r.json"), 1, f"(pid {os.getpid()})")
    assert not lock.exists()


def test_a_lock_replaced_while_held_is_not_removed_by_its_holder(tmp_path: Path) -> None:
    """Releasing removes the lock file only if it is still the one locked: never a file put there since."""
    lock = tmp_path / ".r.json.lock"
    with claim_outputs({"--json": tmp_path / "r.json"}):
        lock.unlink()
        lock.symlink_to("thesis.txt")
    assert lock.is_symlink()


# --- 2. a trailing slash names a directory ----------------------------------------------------------


def test_a_trailing_slash_is_refused_and_the_file_of_that_name_kept(tmp_path: Path) -> None:
    """The issue's example: `gpunet train ... --no-save --json keepme/` replaced the file keepme."""
    (tmp_path / "keepme").write_text("notes\n")
    before = snapshot(tmp_path)
    line = one_line_error(invoke(*TINY, "--no-save", "--json", "keepme/"), 2)
    assert line == "error: --json keepme/ names a directory (it ends in '/'), not a file"
    assert changed(before, tmp_path) == []


@pytest.mark.parametrize("option", ["--checkpoint", "--history", "--plot", "--json"])
@pytest.mark.parametrize("name", ["keepme/", "keepme/.", "newdir/", "keepme/..", ".", ""])
def test_every_train_output_refuses_a_name_that_names_a_directory(tmp_path: Path, option: str, name: str) -> None:
    (tmp_path / "keepme").write_text("notes\n")
    before = snapshot(tmp_path)
    one_line_error(invoke(*TINY, option, name), 2, option)
    assert changed(before, tmp_path) == []
    assert not (tmp_path / "runs").exists()


def test_resume_written_back_through_a_trailing_slash_is_refused(tmp_path: Path, model: Path) -> None:
    before = snapshot(tmp_path)
    one_line_error(invoke("train", "--resume", f"{model}/", "--more", "1", "--device", "cpu"), 2, "--resume")
    assert changed(before, tmp_path) == []


@pytest.mark.parametrize(
    "command",
    [
        ["evaluate", "MODEL", "--device", "cpu", "--json"],
        ["predict", "MODEL", "row.npy", "--device", "cpu", "--json"],
        ["bench", "--backends", "numpy", "--iterations", "2", "--json"],
        ["bench", "--backends", "numpy", "--iterations", "2", "--plot"],
    ],
)
def test_the_other_commands_refuse_a_trailing_slash(tmp_path: Path, model: Path, command: list[str]) -> None:
    np.save(tmp_path / "row.npy", np.zeros(784, np.uint8))
    (tmp_path / "keepme").write_text("notes\n")
    before = snapshot(tmp_path)
    args = [str(model) if a == "MODEL" else a for a in command]
    one_line_error(invoke(*args, "keepme/"), 2, f"{command[-1]} keepme/ names a directory")
    assert changed(before, tmp_path) == []


@pytest.mark.parametrize("name", ["keepme/", "models/", "keepme/.", ""])
def test_save_refuses_a_name_that_names_a_directory(tmp_path: Path, fitted: gpunet.MLPClassifier, name: str) -> None:
    (tmp_path / "keepme").write_text("notes\n")
    before = snapshot(tmp_path)
    with pytest.raises(OutputRefused, match=r"^the path .*(names a directory|empty path)"):
        fitted.save(name)
    with pytest.raises(ValueError):  # as a Python caller expects of a bad argument
        fitted.save(name)
    assert changed(before, tmp_path) == []


# --- 9. names too long, a removed working directory, closed standard streams -------------------------


@pytest.mark.parametrize("size", [256, 300, 255 - BESIDE + 1])
def test_a_name_too_long_is_refused_in_one_line(tmp_path: Path, size: int) -> None:
    before = snapshot(tmp_path)
    line = one_line_error(invoke(*TINY, "--no-save", "--json", "a" * size), 2, f"a file name of {size} bytes")
    assert f"give a name of at most {255 - BESIDE} bytes" in line
    assert changed(before, tmp_path) == []


def test_the_longest_name_allowed_is_written(tmp_path: Path) -> None:
    name = "a" * (255 - BESIDE - 5) + ".json"
    result = invoke(*TINY, "--no-save", "--json", name)
    assert result.exit_code == 0, result.output
    assert listing(tmp_path) == [name]


def test_a_directory_name_too_long_and_a_path_past_path_max_are_refused(tmp_path: Path) -> None:
    before = snapshot(tmp_path)
    one_line_error(invoke(*TINY, "--no-save", "--json", f"{'d' * 300}/r.json"), 2, "the directory name d")
    deep = "/".join(["d" * 200] * 25) + "/r.json"
    line = one_line_error(invoke(*TINY, "--no-save", "--history", deep), 2, "as an absolute path")
    assert "(5,0" in line and "characters)" in line, "a path of thousands of characters is shown by its two ends"
    assert changed(before, tmp_path) == []


def test_the_python_api_refuses_a_name_too_long(tmp_path: Path, fitted: gpunet.MLPClassifier) -> None:
    with pytest.raises(OutputRefused, match="a file name of 300 bytes"):
        fitted.save("m" * 296 + ".npz")
    assert os.listdir(tmp_path) == []


def test_a_relative_output_after_the_working_directory_was_removed_is_refused(tmp_path: Path) -> None:
    gone = shlex.quote(str(tmp_path / "gone"))
    remove = f"mkdir {gone} && cd {gone} && rmdir {gone} && "  # the process starts in a removed directory
    done = gpunet_process([*TINY, "--no-save", "--json", "r.json"], tmp_path, remove)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip() == (
        "error: --json r.json: the working directory was removed, so a relative path names nothing; "
        "give an absolute path, or run gpunet from an existing directory"
    )
    done = gpunet_process([*TINY], tmp_path, remove)  # the default model file, runs/ in the working directory
    assert done.returncode == 1 and done.stderr.strip() == (
        "error: runs: cannot keep the model there (the working directory was removed); "
        "use --checkpoint PATH or --no-save"
    )
    done = gpunet_process([*TINY, "--no-save", "--json", str(tmp_path / "r.json")], tmp_path, remove)
    assert done.returncode == 0, done.stderr  # an absolute output is still written
    assert json.loads((tmp_path / "r.json").read_text())["status"] == "completed"
    assert listing(tmp_path) == ["r.json"]


def test_save_after_the_working_directory_was_removed_is_refused(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    code = (
        "import os, numpy as np, gpunet\n"
        "m = gpunet.MLPClassifier(iterations=2, device='cpu').fit(np.eye(4), [0, 1, 0, 1])\n"
        f"os.chdir({str(gone)!r}); os.rmdir({str(gone)!r})\n"
        "try:\n    m.save('m.npz')\nexcept ValueError as e:\n    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("the path m.npz: the working directory was removed")


@pytest.mark.parametrize("stream", ["<&-", ">&-", "2>&-", "<&- >&- 2>&-"])
def test_a_closed_standard_stream_becomes_dev_null_and_no_file_gets_its_output(tmp_path: Path, stream: str) -> None:
    """Otherwise the first file opened would be descriptor 1 or 2, and the lines printed would go into it."""
    args = [*TINY, "--checkpoint", "c.npz", "--json", "r.json", "--history", "h.csv"]
    done = gpunet_process(args, tmp_path, f"exec {stream}; ")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert json.loads((tmp_path / "r.json").read_text())["status"] == "completed"
    assert (tmp_path / "h.csv").read_text().startswith("iteration,loss,")
    assert checkpoint.load(tmp_path / "c.npz").step == 2
    assert listing(tmp_path) == ["c.npz", "h.csv", "r.json"]
    if ">&-" not in stream:
        assert "test accuracy" in done.stdout


def test_a_refusal_with_stderr_closed_still_exits_non_zero_and_writes_nowhere(tmp_path: Path) -> None:
    before = snapshot(tmp_path)
    done = gpunet_process([*TINY, "--json", "keepme/"], tmp_path, "exec 2>&-; ")
    assert done.returncode == 2
    assert changed(before, tmp_path) == []


# --- 11. leftovers ----------------------------------------------------------------------------------------


def start_training(cwd: Path, *args: str) -> subprocess.Popen:
    """A long `gpunet train` in its own process, returned once it is training (its outputs claimed)."""
    command = [sys.executable, "-m", "gpunet", "train", "--dataset", "synthetic", "--device", "cpu"]
    command += ["--iterations", "100000000", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, text=True, env=env)
    for line in process.stdout:
        if line.startswith("step"):
            return process
    raise AssertionError(f"training did not start: exit {process.wait()}")


def kill_9(process: subprocess.Popen) -> None:
    process.kill()
    process.communicate()


def test_a_run_killed_before_its_first_save_leaves_nothing_the_next_run_keeps(tmp_path: Path) -> None:
    """The issue's example: kill -9 left an empty runs/synthetic-1.npz that nothing ever removed."""
    kill_9(start_training(tmp_path))
    runs = tmp_path / "runs"
    assert (runs / "synthetic-1.npz").stat().st_size == 0, "the placeholder is there, empty"
    assert (runs / ".synthetic-1.npz.lock").exists(), "and its lock, which says whose it was"
    result = invoke(*QUICK)
    assert result.exit_code == 0, result.output
    assert os.listdir(runs) == ["synthetic-1.npz"]
    assert checkpoint.load(runs / "synthetic-1.npz").step == 20


def test_several_dead_runs_placeholders_are_all_removed_and_saved_runs_kept(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    assert invoke(*QUICK).exit_code == 0  # synthetic-1, a real model
    for _ in range(2):
        kill_9(start_training(tmp_path))  # synthetic-2 and -3, empty
    saved = (runs / "synthetic-1.npz").read_bytes()
    assert invoke(*QUICK).exit_code == 0
    assert sorted(os.listdir(runs)) == ["synthetic-1.npz", "synthetic-2.npz"]
    assert (runs / "synthetic-1.npz").read_bytes() == saved
    assert checkpoint.load(runs / "synthetic-2.npz").step == 20


@pytest.mark.parametrize(
    "args",
    [
        ["--lr", "50", "--iterations", "60"],  # not learning: stopped before its first checkpoint
        ["--lr", "1e30", "--iterations", "5"],  # diverged at step 1
    ],
    ids=["not learning", "diverged"],
)
def test_a_run_that_saved_nothing_leaves_no_empty_runs_directory(tmp_path: Path, args: list[str]) -> None:
    result = invoke("train", "--dataset", "synthetic", "--device", "cpu", *args)
    assert result.exit_code != 0 and "nothing was saved" in result.output, result.output
    assert listing(tmp_path) == []


def test_a_runs_directory_that_was_there_is_kept_even_if_empty(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    result = invoke("train", "--dataset", "synthetic", "--device", "cpu", "--lr", "50", "--iterations", "60")
    assert result.exit_code != 0, result.output
    assert listing(tmp_path) == ["runs"] and os.listdir(tmp_path / "runs") == []


def test_an_empty_file_is_removed_only_when_its_lock_shows_a_dead_run_made_it(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "synthetic-1.npz").write_bytes(b"")  # no lock: perhaps the user's, kept
    (runs / "synthetic-2.npz").write_bytes(b"")  # a live run's: its lock is held
    held = runs / ".synthetic-2.npz.lock"
    held.write_text(f"{os.getpid()}\n")
    fd = os.open(held, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    (runs / "synthetic-3.npz").write_bytes(b"")  # a lock that is not one of ours
    (runs / ".synthetic-3.npz.lock").write_text("not a pid\n")
    try:
        result = invoke(*QUICK)
    finally:
        os.close(fd)
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(runs)) == [
        ".synthetic-2.npz.lock", ".synthetic-3.npz.lock", "synthetic-1.npz", "synthetic-2.npz",
        "synthetic-3.npz", "synthetic-4.npz",
    ]  # fmt: skip
    assert [(runs / f"synthetic-{n}.npz").stat().st_size for n in (1, 2, 3)] == [0, 0, 0]


def test_a_run_killed_between_its_lock_and_its_placeholder_blocks_nobody(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / ".synthetic-1.npz.lock").write_text(f"{dead.pid}\n")
    result = invoke(*QUICK)
    assert result.exit_code == 0, result.output
    assert os.listdir(runs) == ["synthetic-1.npz"]


DIE_WRITING = (
    "import os, sys\nfrom pathlib import Path\nfrom gpunet.files.outputs import atomic_file\n"
    "with atomic_file(Path(sys.argv[1])) as f:\n    f.write(b'half')\n    f.flush()\n    os._exit(9)\n"
)


def die_writing(cwd: Path, name: str) -> None:
    """A process that dies (as kill -9 would end it) in the middle of writing `name`: its temporary stays."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    assert subprocess.run([sys.executable, "-c", DIE_WRITING, name], cwd=cwd, env=env, timeout=120).returncode == 9


@pytest.mark.parametrize("name", ["a\nb.json", "r.json\n", "\nr.json", "a.b\n.c.json"])
def test_a_dead_writers_temporary_is_removed_even_with_a_newline_in_its_name(tmp_path: Path, name: str) -> None:
    die_writing(tmp_path, name)
    die_writing(tmp_path, "other.json")
    leftovers = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert len(leftovers) == 2
    result = invoke(*TINY, "--no-save", "--json", name)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / name).read_text())["status"] == "completed"
    assert [n for n in os.listdir(tmp_path) if n.endswith(".tmp")] == [
        n for n in leftovers if n.startswith(".other.json.")
    ], "another target's temporary is not this write's to remove"


def test_save_is_refused_while_gpunet_train_writes_the_same_file(tmp_path: Path, fitted) -> None:
    """The issue's example: MLPClassifier.save() ignored the lock of a running `gpunet train`."""
    trainer = start_training(tmp_path, "--checkpoint", "c.npz", "--checkpoint-every", "1000000")
    try:
        with pytest.raises(OutputInUse, match=rf"being written by another gpunet process \(pid {trainer.pid}\)"):
            fitted.save("c.npz")
        with pytest.raises(OutputInUse):
            fitted.save(tmp_path / "." / "c.npz")  # the same file by another name
        assert not (tmp_path / "c.npz").exists()
    finally:
        kill_9(trainer)
    fitted.save("c.npz")  # once the run is gone, its lock holds nobody back
    assert gpunet.load("c.npz").classes_.tolist() == [0, 1]
    assert sorted(os.listdir(tmp_path)) == ["c.npz"]


def test_save_waits_for_no_one_but_respects_a_claim_in_this_process(tmp_path: Path, fitted) -> None:
    with claim_outputs({"--checkpoint": tmp_path / "c.npz"}), pytest.raises(OutputInUse, match=f"pid {os.getpid()}"):
        fitted.save("c.npz")
    fitted.save("c.npz")
    with atomic_file(tmp_path / "other.bin") as f:  # the writer itself leaves nothing but its file
        f.write(b"x")
    assert sorted(os.listdir(tmp_path)) == ["c.npz", "other.bin"]
