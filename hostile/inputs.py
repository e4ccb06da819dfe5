# ruff: noqa: E501  (the case table is one case a line)
"""Hostile and careless inputs, issue 20 classes 1, 2 and 4-11: links at the names gpunet creates, names
that name directories, pictures, archives, .npy as data, checkpoint fields, user text, names, streams and
settings, explicit settings, leftovers. Each case runs over the CLI (`python -m gpunet ...`) or
the Python API (`python -c ...`) in a fresh directory, as its own process, and must end either correctly
(exit 0, and what it printed checked) or with one clear line and a non-zero exit; never a traceback, and
no file in its directory changed except the outputs it names.

    PYTHONPATH=$PWD .venv/bin/python hostile/inputs.py [--out hostile/results/DATE-inputs.md] [-k WORD]

(hostile/signals.py covers class 3, stop signals; class 12 is a test's deadline, in tests/test_download.py.)
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import io
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
LABELS = ["[/b]", "[link=https://example.com]bank[/link]", "\x1b[31mred\x1b[0m", "two\nlines"]


@dataclass
class Case:
    klass: int
    name: str
    run: list[str] | str  # CLI arguments after `gpunet`, or Python code
    expect: str  # "ok" or "refused"
    setup: Callable[[Path], None] = lambda d: None
    outputs: tuple[str, ...] = ()  # the only files it may create or change
    says: tuple[str, ...] = ()  # text its output must hold (stdout when ok, the error line when refused)
    absent: tuple[str, ...] = ()  # text its output must not hold
    env: dict[str, str] = field(default_factory=dict)  # settings for this case's process
    shell: str = ""  # a CLI case run through sh after this prefix (closing a stream, removing the directory)
    result: dict = field(default_factory=dict)


# --- files the cases are made of -------------------------------------------------------------------


def npy_bytes(a: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, a)
    return out.getvalue()


def npy_header(shape: tuple[int, ...], dtype: str = "<f8") -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": dtype, "fortran_order": False, "shape": shape})
    return out.getvalue()


def write_zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in members.items():
            z.writestr(name, content)


def splits(n: int = 200) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n)
    x = (np.eye(3, 784)[y] * 200 + rng.integers(0, 50, (n, 784))).astype(np.uint8)
    arrays = {"x_train": x, "y_train": y, "x_test": x[: n // 4], "y_test": y[: n // 4]}
    return {f"{k}.npy": npy_bytes(v) for k, v in arrays.items()}


def members_of(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def forged(d: Path, member: str, content: bytes, name: str = "forged.npz") -> None:
    write_zip(d / name, members_of(d / "model.npz") | {member: content})


def with_meta(
    d: Path, change: Callable[[dict], None], name: str = "bad.npz", text: str | None = None, **arrays
) -> None:
    with np.load(d / "model.npz") as f:
        contents = {k: f[k] for k in f.files}
    meta = json.loads(str(contents.pop("meta")))
    change(meta)
    np.savez(d / name, meta=np.array(text if text is not None else json.dumps(meta)), **(contents | arrays))


def set_(*keys, value):
    def change(meta):
        for k in keys[:-1]:
            meta = meta[k]
        meta[keys[-1]] = value

    return change


def picture(d: Path, name: str, a: np.ndarray, **save) -> None:
    Image.fromarray(a).save(d / name, **save)


def bar(value=255, background=0, dtype=np.uint8, side=28) -> np.ndarray:
    a = np.full((side, side), background, dtype=dtype)
    a[side // 4 : 3 * side // 4, side // 3 : side // 2] = value
    return a


def coat(d: Path) -> None:  # a light item filling the frame (mean > 0.5) on a dark border
    a = np.zeros((28, 28), np.uint8)
    a[2:26, 3:25] = 230
    picture(d, "coat.png", a)


def canvas(d: Path) -> None:  # black strokes on a transparent canvas
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., 3] = bar()
    picture(d, "canvas.png", rgba)


def text_chunk(d: Path) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "x" * (PngImagePlugin.MAX_TEXT_CHUNK + 1), zip=True)
    picture(d, "chatty.png", np.zeros((28, 28), np.uint8), pnginfo=info)


def bomb(d: Path, side: int, name: str) -> None:
    Image.new("1", (side, side)).save(d / name)


def idx(shape, contents: bytes = b"", code: int = 8) -> bytes:
    header = bytes([0, 0, code, len(shape)]) + b"".join(int(n).to_bytes(4, "big") for n in shape)
    return header + contents


def idx_folder(d: Path, labels: bytes | None = None) -> None:
    import gzip

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 255, (60, 28, 28), dtype=np.uint8), (np.arange(60) % 3).astype(np.uint8)
    folder = d / "folder"
    folder.mkdir()
    for name, a in (("train-images-idx3-ubyte", x), ("train-labels-idx1-ubyte", y), ("t10k-images-idx3-ubyte", x),
                    ("t10k-labels-idx1-ubyte", y)):  # fmt: skip
        (folder / f"{name}.gz").write_bytes(gzip.compress(idx(a.shape, a.tobytes()), mtime=0))
    if labels is not None:
        (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels, mtime=0))


def huge_data(d: Path) -> None:
    write_zip(d / "huge.npz", splits() | {"x_train.npy": npy_header((10**12,)) + bytes(64)})


def unused_member(d: Path) -> None:
    write_zip(d / "extra.npz", splits() | {"notes.npy": npy_header((10**12,)) + b"\xff" * 100})


def a_npy(d: Path, name: str = "mine.npy") -> None:
    (d / name).write_bytes(npy_bytes(np.zeros((10, 784), np.uint8)))


def one_row(d: Path) -> None:
    (d / "one.npy").write_bytes(npy_bytes(np.zeros(784, np.uint8)))


def both(*fs):
    def setup(d: Path) -> None:
        for f in fs:
            f(d)

    return setup


def escaped_name(d: Path) -> None:
    ds = splits()
    write_zip(d / "[bold red]mine[link=x]\x1b[2J.npz", ds)


def big_floats(d: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 4))
    x[0, 0] = 1e300
    np.savez(d / "big.npz", x=x, y=np.arange(100) % 2)


# --- classes 1, 2, 9, 11: links, names, streams, settings, leftovers -----------------------------


def thesis(d: Path) -> None:
    (d / "thesis.txt").write_text("draft\n")


def linked_lock(lock: str, hard: bool = False) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        thesis(d)
        if hard:
            os.link(d / "thesis.txt", d / lock)
        else:
            os.symlink("thesis.txt", d / lock)

    return setup


def dead_pid() -> int:
    child = subprocess.run([PY, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(child.stdout)


def dead_placeholder(d: Path) -> None:  # what `kill -9` before the first save leaves: an empty file, a stale lock
    (d / "runs").mkdir()
    (d / "runs" / "synthetic-1.npz").write_bytes(b"")
    (d / "runs" / ".synthetic-1.npz.lock").write_text(f"{dead_pid()}\n")


def dead_temporary(d: Path) -> None:  # a writer killed mid-write of a name holding a newline
    code = "import os, sys, signal\nfrom gpunet.files.outputs import atomic_file\n"
    code += "with atomic_file(sys.argv[1]) as f:\n    f.write(b'half')\n    os.kill(os.getpid(), signal.SIGKILL)\n"
    subprocess.run([PY, "-c", code, str(d / "we\nird.json")], env=os.environ | {"PYTHONPATH": str(ROOT)}, check=False)


SAVE_WHILE_TRAINING = """import os, subprocess, sys, time, numpy as np, gpunet
m = gpunet.MLPClassifier(iterations=2, device='cpu').fit(np.random.rand(30, 4), np.arange(30) % 2)
run = subprocess.Popen([sys.executable, '-m', 'gpunet', 'train', '--dataset', 'synthetic', '--iterations', '1000000',
                        '--checkpoint', 'x.npz', '--checkpoint-every', '1000000', '--device', 'cpu', '-q'])
try:
    deadline = time.monotonic() + 60
    while not os.path.exists('.x.npz.lock') and time.monotonic() < deadline:
        time.sleep(0.05)
    m.save('x.npz')
finally:
    run.kill()
    run.wait()
"""
SYNTHETIC = ["train", "--dataset", "synthetic", "--iterations", "2"]


PYTHON_FIT = "import numpy as np, gpunet\nrng = np.random.default_rng(0)\nX = rng.normal(size=(120, 5))\n"
PYTHON_FIT += "y = np.array(['a', 'b', 'c'])[np.arange(120) % 3]\n"

CASES = [
    # 1. links at the names gpunet creates
    Case(1, "a symlink at the checkpoint's lock name", [*SYNTHETIC, "--checkpoint", "x.npz"], "refused",
         linked_lock(".x.npz.lock"), says=("is a symbolic link; gpunet neither writes nor replaces it",)),
    Case(1, "a hard link at the --json lock name", [*SYNTHETIC, "--no-save", "--json", "r.json"], "refused",
         linked_lock(".r.json.lock", hard=True), says=("a file with 2 names (hard links)",)),
    Case(1, "evaluate --json with a symlinked lock", ["evaluate", "model.npz", "--json", "e.json"], "refused",
         linked_lock(".e.json.lock"), says=("is a symbolic link",)),
    Case(1, "a directory at the lock name", [*SYNTHETIC, "--checkpoint", "x.npz"], "refused",
         lambda d: (d / ".x.npz.lock").mkdir(), says=("is a directory; gpunet neither writes nor replaces it",)),
    # A name the user gave is followed as the shell's `>` follows it (documented: the link's file is the
    # output); only the names gpunet makes beside it (locks, temporaries) never follow a link.
    Case(1, "the output named a symlink the user made: its file is the output", [*SYNTHETIC, "--no-save", "--json",
         "r.json"], "ok", both(thesis, lambda d: os.symlink("thesis.txt", d / "r.json")), outputs=("thesis.txt",)),
    Case(1, "a symlink at a temporary's name cannot be one: mkstemp's names are new", [*SYNTHETIC, "--no-save",
         "--json", "r.json"], "ok", both(thesis, lambda d: os.symlink("thesis.txt", d / ".r.json.1-00000000.x.tmp")),
         outputs=("r.json",)),
    Case(1, "Python save() with a symlinked lock", PYTHON_FIT + "gpunet.MLPClassifier(iterations=2, device='cpu')"
         ".fit(X, y).save('x.npz')", "refused", linked_lock(".x.npz.lock"), says=("is a symbolic link",)),
    # 2. a name that names a directory
    Case(2, "--json keepme/ where keepme is a file", [*SYNTHETIC, "--no-save", "--json", "keepme/"], "refused",
         lambda d: (d / "keepme").write_text("notes\n"), says=("names a directory (it ends in '/'), not a file",)),
    Case(2, "--checkpoint keepme/", [*SYNTHETIC, "--checkpoint", "keepme/"], "refused",
         lambda d: (d / "keepme").write_text("notes\n"), says=("--checkpoint keepme/ names a directory",)),
    Case(2, "evaluate --json out/ (no such directory)", ["evaluate", "model.npz", "--json", "out/"], "refused",
         says=("--json out/ names a directory",)),
    Case(2, "Python save('keepme/')", PYTHON_FIT + "gpunet.MLPClassifier(iterations=2, device='cpu').fit(X, y)"
         ".save('keepme/')", "refused", lambda d: (d / "keepme").write_text("notes\n"), says=("names a directory",)),
    # 9. names, the working directory, streams, settings
    Case(9, "an output name of 300 bytes", [*SYNTHETIC, "--no-save", "--json", "n" * 295 + ".json"], "refused",
         says=("a file name of 300 bytes",)),
    Case(9, "a relative output after the working directory was removed", [*SYNTHETIC, "--no-save", "--json",
         "r.json"], "refused", shell="mkdir gone && cd gone && rmdir ../gone && ",
         says=("the working directory was removed",)),
    Case(9, "the default model file after the working directory was removed", SYNTHETIC, "refused",
         shell="mkdir gone && cd gone && rmdir ../gone && ", says=("runs: cannot keep the model there",)),
    Case(9, "stdout closed (>&-)", [*SYNTHETIC, "--no-save", "--json", "r.json"], "ok", shell="exec >&-; ",
         outputs=("r.json",)),
    Case(9, "stdin, stdout and stderr closed", [*SYNTHETIC, "--checkpoint", "c.npz"], "ok",
         shell="exec <&- >&- 2>&-; ", outputs=("c.npz",)),
    Case(9, "GPUNET_MIRRORS not a URL", ["train", "--dataset", "mnist", "--iterations", "2"], "refused",
         env={"GPUNET_MIRRORS": "http://[::1"}, says=("$GPUNET_MIRRORS is 'http://[::1'",)),
    Case(9, "GPUNET_MIRRORS of ftp://", ["doctor"], "refused", env={"GPUNET_MIRRORS": "ftp://example.org/"},
         says=("is not an http:// or https:// URL",)),
    Case(9, "GPUNET_MIRROR_COOLOFF=abc", ["train", "--dataset", "mnist", "--iterations", "2"], "refused",
         env={"GPUNET_MIRROR_COOLOFF": "abc"}, says=("$GPUNET_MIRROR_COOLOFF is 'abc'",)),
    Case(9, "GPUNET_FUSE=maybe", [*SYNTHETIC, "--no-save"], "refused", env={"GPUNET_FUSE": "maybe"},
         says=("$GPUNET_FUSE is 'maybe'",)),
    Case(9, "GPUNET_CPU_ENGINE=fast", [*SYNTHETIC, "--no-save"], "refused", env={"GPUNET_CPU_ENGINE": "fast"},
         says=("$GPUNET_CPU_ENGINE is 'fast'",)),
    Case(9, "Python: GPUNET_MIRRORS not a URL", "import gpunet\ngpunet.load_dataset('mnist')", "refused",
         env={"GPUNET_MIRRORS": "http://[::1"}, says=("GPUNET_MIRRORS",)),
    # 11. leftovers
    Case(11, "a dead run's empty placeholder (kill -9 before its first save)", SYNTHETIC, "ok", dead_placeholder,
         outputs=("runs/synthetic-1.npz",), says=("runs/synthetic-1.npz",)),
    Case(11, "a dead writer's temporary, its target's name holding a newline",
         [*SYNTHETIC, "--no-save", "--json", "we\nird.json"], "ok", dead_temporary, outputs=("we\nird.json",)),
    Case(11, "Python save() while gpunet train writes the same file", SAVE_WHILE_TRAINING, "refused",
         outputs=("x.npz",), says=("being written by another gpunet process",)),
    Case(11, "a run that saves nothing (not learning) in an empty directory", ["train", "--dataset", "synthetic",
         "--lr", "50", "--iterations", "60"], "refused", says=("nothing was saved",)),
    # 4. pictures for predict
    Case(4, "light item filling the frame (mean > 0.5), dark border", ["predict", "model.npz", "coat.png"], "ok", coat,
         says=("coat.png (8-bit greyscale): ",), absent=("inverted",)),
    Case(4, "dark blot on white paper (mean < 0.5)", ["predict", "model.npz", "blot.png"], "ok",
         lambda d: picture(d, "blot.png", np.pad(np.zeros((22, 22), np.uint8), 3, constant_values=255)),
         says=("blot.png (8-bit greyscale, inverted: light border): ",)),
    Case(4, "16-bit PNG", ["predict", "model.npz", "deep.png"], "ok",
         lambda d: picture(d, "deep.png", bar(30000, 0, np.uint16)), says=("16-bit greyscale, 0..65535",)),
    Case(4, "32-bit integer TIFF", ["predict", "model.npz", "deep.tif"], "ok",
         lambda d: picture(d, "deep.tif", bar(2**30, 0, np.int32)), says=("32-bit integer greyscale, 0..2,147,483,647",)),
    Case(4, "float TIFF in [0, 1]", ["predict", "model.npz", "unit.tif"], "ok",
         lambda d: picture(d, "unit.tif", bar(0.8, 0, np.float32)), says=("float greyscale, [0, 1]",)),
    Case(4, "float TIFF in [0, 255]", ["predict", "model.npz", "bytes.tif"], "ok",
         lambda d: picture(d, "bytes.tif", bar(200.0, 0, np.float32)), says=("float greyscale, [0, 255]",)),
    Case(4, "float TIFF in [0, 1000]", ["predict", "model.npz", "wide.tif"], "refused",
         lambda d: picture(d, "wide.tif", bar(1000.0, 0, np.float32)), says=("gpunet reads float pictures in [0, 1] or [0, 255]",)),
    Case(4, "black strokes on a transparent canvas", ["predict", "model.npz", "canvas.png"], "ok", canvas,
         says=("transparency laid on white, inverted: light border",)),
    Case(4, "--invert yes on a light-on-dark picture", ["predict", "model.npz", "coat.png", "--invert", "yes"], "ok",
         coat, says=("inverted: --invert yes",)),
    Case(4, "--invert no on a drawing on paper", ["predict", "model.npz", "canvas.png", "--invert", "no"], "ok",
         canvas, says=("not inverted (--invert no)",)),
    Case(4, "--invert maybe", ["predict", "model.npz", "coat.png", "--invert", "maybe"], "refused", coat,
         says=("--invert must be auto, yes or no",)),
    Case(4, "Python: read_images of a 16-bit PNG",
         "from gpunet.data.images import read_images\nrows, names = read_images('deep.png')\n"
         "assert abs(rows.max() - 30000 / 65535) < 1e-4, rows.max()\nprint(names[0])", "ok",
         lambda d: picture(d, "deep.png", bar(30000, 0, np.uint16)), says=("16-bit greyscale",)),
    # 5. memory bounds
    Case(5, "train --data: a member's header claims 10^12 float64", ["train", "--data", "huge.npz", "--no-save"],
         "refused", huge_data, says=("8 TB, but it holds 64 B",)),
    Case(5, "evaluate --data: the same", ["evaluate", "model.npz", "--data", "huge.npz"], "refused", huge_data,
         says=("member 'x_train'",)),
    Case(5, "doctor --data: the same", ["doctor", "--data", "huge.npz"], "refused", huge_data, says=("8 TB",)),
    Case(5, "Python load_dataset: the same", "import gpunet\ngpunet.load_dataset('huge.npz')", "refused", huge_data,
         says=("8 TB",)),
    Case(5, "predict: a .npy claiming 10^12 values", ["predict", "model.npz", "huge.npy"], "refused",
         lambda d: (d / "huge.npy").write_bytes(npy_header((10**12,), "|u1") + bytes(784)), says=("1 TB, but it holds 784 B",)),
    Case(5, "--resume: a checkpoint whose param_0 claims 10^12 values", ["train", "--resume", "forged.npz", "--more", "1"],
         "refused", lambda d: forged(d, "param_0.npy", npy_header((10**12,), "<f4")), says=("param_0",)),
    Case(5, "evaluate: a checkpoint whose meta claims 4 TB", ["evaluate", "forged.npz"], "refused",
         lambda d: forged(d, "meta.npy", npy_header((10**12,), "<U1")), says=("member 'meta'",)),
    Case(5, "Python gpunet.load: a forged slot", "import gpunet\ngpunet.load('forged.npz')", "refused",
         lambda d: forged(d, "slot_m_0.npy", npy_header((784, 16), "<f4")), says=("member 'slot_m_0'",)),
    Case(5, "an unused member claiming 8 TB in --data is never read", ["train", "--data", "extra.npz", "--no-save",
         "--iterations", "3"], "ok", unused_member, says=("data: extra.npz",)),
    Case(5, "an unused member in a checkpoint is never read", ["predict", "forged.npz", "one.npy"], "ok",
         both(lambda d: forged(d, "notes.npy", npy_header((10**12,)) + b"\xff" * 100), one_row), says=("one.npy: ",)),
    Case(5, "gzip IDX declaring 79 EB", ["train", "--data", "folder", "--no-save"], "refused",
         lambda d: idx_folder(d, idx((2**32 - 1,) * 3) + bytes(100)), says=("more than the",)),
    Case(5, "gzip IDX 10 MB longer than it declares", ["train", "--data", "folder", "--no-save"], "refused",
         lambda d: idx_folder(d, idx((60,), bytes(60)) + bytes(10_000_000)), says=("decompresses to more than the 68 bytes",)),
    Case(5, "PNG text chunk past Pillow's limit", ["predict", "model.npz", "chatty.png"], "refused", text_chunk,
         says=("not an image gpunet can read",)),
    Case(5, "picture past Pillow's decompression-bomb error (196 Mpixel)", ["predict", "model.npz", "bomb.png"],
         "refused", lambda d: bomb(d, 14000, "bomb.png"), says=("decompression-bomb limit",)),
    Case(5, "picture between Pillow's warning and error (100 Mpixel)", ["predict", "model.npz", "bomb.png"],
         "refused", lambda d: bomb(d, 10000, "bomb.png"), says=("decompression-bomb limit",)),
    # 6. a .npy as --data
    Case(6, "train --data mine.npy", ["train", "--data", "mine.npy", "--no-save"], "refused", a_npy,
         says=("a single .npy array, which holds no labels",)),
    Case(6, "bench --data mine.npy", ["bench", "--data", "mine.npy", "--backends", "numpy"], "refused", a_npy,
         says=("a single .npy array",)),
    Case(6, "evaluate --data mine.npy", ["evaluate", "model.npz", "--data", "mine.npy"], "refused", a_npy,
         says=("a single .npy array",)),
    Case(6, "doctor --data mine.npy", ["doctor", "--data", "mine.npy"], "refused", a_npy, says=("a single .npy array",)),
    Case(6, "train --data renamed.npz (a .npy inside)", ["train", "--data", "renamed.npz", "--no-save"], "refused",
         lambda d: a_npy(d, "renamed.npz"), says=("a single .npy array",)),
    Case(6, "Python load_dataset('mine.npy')", "import gpunet\ngpunet.load_dataset('mine.npy')", "refused", a_npy,
         says=("a single .npy array",)),
    # 7. checkpoint fields
    Case(7, "lr 'abc'", ["evaluate", "bad.npz"], "refused", lambda d: with_meta(d, set_("config", "lr", value="abc")),
         says=("bad.npz: a damaged or foreign checkpoint (config.lr: the text 'abc', not a number)",)),
    Case(7, "history loss 'lots'", "import gpunet\ngpunet.load('bad.npz')", "refused",
         lambda d: with_meta(d, set_("history", 0, "loss", value="lots")), says=("history[0].loss",)),
    Case(7, "step 10^30", ["train", "--resume", "bad.npz", "--more", "1"], "refused",
         lambda d: with_meta(d, set_("step", value=10**30)), says=("(step: 1e+30 is outside",)),
    Case(7, "garbage batch state", ["train", "--resume", "bad.npz", "--more", "1"], "refused",
         lambda d: with_meta(d, set_("batch_state", value={"epoch_rng_state": [1, 2], "position": "x"})),
         says=("batch_state.position",)),
    Case(7, "100,000-deep JSON", ["evaluate", "bad.npz"], "refused",
         lambda d: with_meta(d, lambda m: None, text="[" * 100_000 + "]" * 100_000), says=("meta: nested too deeply",)),
    Case(7, "string parameters", ["predict", "bad.npz", "one.npy"], "refused",
         both(one_row, lambda d: with_meta(d, lambda m: None, param_0=np.full((784, 16), "w"))), says=("param_0: <U1",)),
    Case(7, "complex parameters", ["evaluate", "bad.npz"], "refused",
         lambda d: with_meta(d, lambda m: None, param_2=np.zeros((16, 16), np.complex64)), says=("param_2: complex64",)),
    Case(7, "float16 parameters", ["evaluate", "bad.npz"], "refused",
         lambda d: with_meta(d, lambda m: None, param_0=np.zeros((784, 16), np.float16)), says=("param_0: float16",)),
    Case(7, "config dtype float16", "import gpunet\ngpunet.load('bad.npz')", "refused",
         lambda d: with_meta(d, set_("config", "dtype", value="float16")), says=("config.dtype: 'float16'",)),
    # 8. user text
    Case(8, "evaluate: labels with markup and escapes", ["evaluate", "labels.npz", "--data", "d.npz"], "ok",
         says=("[/b]", "bank[/link]", "\\x1b[31mred", "two\\nlines"), absent=("\x1b",)),
    Case(8, "predict: the same labels", ["predict", "labels.npz", "rows.npy", "--top", "4"], "ok",
         says=("rows.npy[0]: ", "[/b]", "\\x1b[31mred"), absent=("\x1b",)),
    Case(8, "train --data a file named with markup and an escape",
         ["train", "--data", "[bold red]mine[link=x]\x1b[2J.npz", "--no-save", "--iterations", "2"], "ok", escaped_name,
         says=("data: [bold red]mine[link=x]\\x1b[2J.npz from",), absent=("\x1b",)),
    Case(8, "predict a missing file named with escapes", ["predict", "model.npz", "\x1b]0;owned\x07.png"], "refused",
         says=("\\x1b]0;owned\\x07.png: no such file",), absent=("\x1b",)),
    # 10. explicit settings
    Case(10, "train --resume ... --seed 7", ["train", "--resume", "model.npz", "--more", "1", "--seed", "7"], "refused",
         says=("--seed 7 would change nothing",)),
    Case(10, "train --resume ... --seed 0 (its own)", ["train", "--resume", "copy.npz", "--more", "1", "--seed", "0"],
         "ok", lambda d: shutil.copy(d / "model.npz", d / "copy.npz"), outputs=("copy.npz",), says=("resuming from",)),
    Case(10, "score(): integer labels against string classes",
         PYTHON_FIT + "m = gpunet.MLPClassifier(iterations=3, device='cpu').fit(X, y)\nm.score(X, np.arange(120) % 3)",
         "refused", says=("y holds numbers",)),
    Case(10, "score(): y of the wrong length",
         PYTHON_FIT + "m = gpunet.MLPClassifier(iterations=3, device='cpu').fit(X, y)\nm.score(X, y[:7])", "refused",
         says=("X has 120 samples but y has 7",)),
    Case(10, "fit(): y of the wrong length", PYTHON_FIT + "gpunet.MLPClassifier(iterations=3).fit(X, y[:50])",
         "refused", says=("X has 120 samples but y has 50",)),
    Case(10, "fit(): 100,000 classes", "import numpy as np, gpunet\n"
         "gpunet.MLPClassifier(iterations=1, device='cpu').fit(np.zeros((100000, 2)), np.arange(100000))", "refused",
         says=("100,000 classes: the one-hot targets",)),
    Case(10, "fit(): float64 1e300 in float32", PYTHON_FIT + "X[0, 0] = 1e300\n"
         "gpunet.MLPClassifier(iterations=3, device='cpu').fit(X, y)", "refused", says=("beyond float32's range",),
         absent=("diverged",)),
    Case(10, "train --data with float64 1e300", ["train", "--data", "big.npz", "--no-save"], "refused", big_floats,
         says=("beyond float32's range",), absent=("diverged",)),
    Case(10, "warm_start with another seed", PYTHON_FIT + "m = gpunet.MLPClassifier(iterations=3, device='cpu', "
         "warm_start=True).fit(X, y)\nm.set_params(seed=7).fit(X, y)", "refused", says=("seed cannot change",)),
]  # fmt: skip

PYTHON_WRAPPER = """
import sys, warnings
warnings.simplefilter("ignore")
from gpunet.errors import GpunetError
try:
{code}
except (ValueError, TypeError, GpunetError) as e:
    print("error: " + type(e).__name__ + ": " + " ".join(str(e).split()), file=sys.stderr)
    sys.exit(1)
"""


def template(root: Path) -> Path:
    """The files every case starts from: a synthetic model, a model with hostile labels and its data."""
    base = root / "template"
    base.mkdir()
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    subprocess.run([PY, "-m", "gpunet", "train", "--dataset", "synthetic", "--iterations", "4", "--eval-every", "2",
                    "--batch-size", "500", "--device", "cpu", "--checkpoint", "model.npz", "-q"],
                   cwd=base, env=env, check=True, capture_output=True)  # fmt: skip
    code = textwrap.dedent(f"""
        import numpy as np, gpunet
        rng = np.random.default_rng(0)
        y = rng.integers(0, 4, 200)
        x = (np.eye(4, 6)[y] * 3 + 0.1 * rng.normal(size=(200, 6))).astype(np.float32)
        gpunet.MLPClassifier(iterations=20, device="cpu").fit(x, np.array({LABELS!r}, dtype=object)[y]).save("labels.npz")
        texts = np.array({LABELS!r})[y]  # the data is labelled as the model was trained: with those texts
        np.savez("d.npz", x_train=x, y_train=texts, x_test=x[:50], y_test=texts[:50])
        np.save("rows.npy", x[:3])
    """)
    subprocess.run([PY, "-c", code], cwd=base, env=env, check=True, capture_output=True)
    return base


def snapshot(d: Path) -> dict[str, str]:
    return {
        str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in d.rglob("*")
        if p.is_file() and not p.is_symlink()
    }


def run_case(case: Case, base: Path, root: Path, index: int) -> None:
    d = root / f"case-{index:02d}"
    shutil.copytree(base, d)
    case.setup(d)
    before = snapshot(d)
    env = os.environ | {
        "PYTHONPATH": str(ROOT),
        "XDG_CACHE_HOME": str(root / "cache"),
        "GPUNET_MIRRORS": "http://127.0.0.1:9/",
    }
    env.pop("GPUNET_DATA", None)
    if isinstance(case.run, str):
        argv = [PY, "-c", PYTHON_WRAPPER.format(code=textwrap.indent(case.run, "    "))]
    else:
        device = [] if case.run[0] in ("bench",) else ["--device", "cpu"]
        argv = [PY, "-m", "gpunet", *case.run, *device]
        if case.shell:
            argv = ["sh", "-c", case.shell + "exec " + shlex.join(argv)]
    env |= case.env
    start = time.monotonic()
    try:
        done = subprocess.run(argv, cwd=d, env=env, capture_output=True, text=True, timeout=300, errors="replace")
        rc, out, err = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired:
        rc, out, err = None, "", "timed out after 300 s"
    seconds = time.monotonic() - start
    after = snapshot(d)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))

    def own(name: str) -> bool:  # an output, its lock, or a temporary of its (a dead writer's, removed)
        n = Path(name)
        for o in map(Path, case.outputs):
            beside = n.parent == o.parent
            lock = n.name == f".{o.name}.lock"
            temporary = n.name.startswith(f".{o.name}.") and n.name.endswith(".tmp")
            if n == o or (beside and (lock or temporary)):
                return True
        return False

    problems = []
    if "Traceback" in out + err:
        problems.append("traceback")
    if rc is None:
        problems.append("timed out")
    err_lines = [line for line in err.splitlines() if line.strip()]
    shown = out if case.expect == "ok" else (err_lines[0] if err_lines else "")
    if case.expect == "ok" and rc != 0:
        problems.append(f"exit {rc}, expected 0: {err_lines[-1] if err_lines else ''}")
    if case.expect == "refused":
        if rc == 0:
            problems.append("exit 0, expected a refusal")
        if len(err_lines) != 1 or not err_lines[0].startswith("error: "):
            problems.append(f"{len(err_lines)} lines on stderr, expected one 'error: ' line")
    problems += [f"does not say {t!r}" for t in case.says if t not in shown]
    problems += [f"says {t!r}" for t in case.absent if t in out + err]
    if outside := [name for name in changed if not own(name)]:
        problems.append(f"changed files outside its outputs: {outside}")
    case.result = {
        "rc": rc,
        "seconds": round(seconds, 1),
        "passed": not problems,
        "problems": problems,
        "line": (err_lines[0] if case.expect == "refused" and err_lines else (out.splitlines() or [""])[0]),
    }
    shutil.rmtree(d, ignore_errors=True)


def cell(text: str) -> str:
    return ascii(text)[1:-1].replace("|", "\\|")[:230]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the results as markdown here")
    parser.add_argument("-k", default="", help="only the cases whose name holds this")
    args = parser.parse_args()
    cases = [c for c in CASES if args.k in c.name]
    with tempfile.TemporaryDirectory(prefix="gpunet-hostile-") as tmp:
        root = Path(tmp)
        base = template(root)
        for i, case in enumerate(cases, 1):
            run_case(case, base, root, i)
            r = case.result
            print(f"{'PASS' if r['passed'] else 'FAIL'} {case.klass:>2} {case.name} (exit {r['rc']}, {r['seconds']} s)"
                  + ("" if r["passed"] else f": {'; '.join(r['problems'])}"), flush=True)  # fmt: skip
    failed = [c for c in cases if not c.result["passed"]]
    print(f"{len(cases)} cases: {len(cases) - len(failed)} passed, {len(failed)} failed")
    if args.out:
        lines = [
            "# Hostile inputs, issue 20 classes 1, 2 and 4-11",
            "",
            f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
            f"- machine: {platform.node()}, {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}",
            f"- commit: {subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, capture_output=True, text=True).stdout.strip()}",
            "- command: `PYTHONPATH=$PWD .venv/bin/python hostile/inputs.py --out " + str(args.out) + "`",
            "- each case: a fresh directory holding a synthetic model (`model.npz`), a model whose class labels are "
            "markup and escapes (`labels.npz`, data `d.npz`, rows `rows.npy`) and the case's files; CLI cases run "
            "`python -m gpunet ... --device cpu`, Python cases `python -c` (ValueError, TypeError or a GpunetError "
            "printed as one line, exit 1; anything else would be a traceback). Passed: the expected end (exit 0 "
            "with the text checked, or exit != 0 with exactly one `error:` line holding the text), no traceback, "
            "no file in the directory changed except the outputs named.",
            f"- result: {len(cases)} cases, {len(cases) - len(failed)} passed, {len(failed)} failed",
            "",
            "| class | case | via | expected | exit | result | first line of output (refusal: the error line) |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in cases:
            r = c.result
            via = "Python" if isinstance(c.run, str) else "`gpunet " + " ".join(c.run[:1]) + "`"
            verdict = "pass" if r["passed"] else "FAIL: " + "; ".join(r["problems"])
            lines.append(
                f"| {c.klass} | {cell(c.name)} | {via} | {c.expect} | {r['rc']} | {cell(verdict)} | {cell(r['line'])} |"
            )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
