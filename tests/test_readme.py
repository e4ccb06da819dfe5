"""The README's and docs/'s commands and code run as written, and their sample output is what the program prints.

The pages are README.md and every docs/*.md. Every `gpunet` command in their ```sh blocks is run
here, in order within its block, on small data: `--dataset synthetic`, and step counts
(`--iterations`, `--more`, `--checkpoint-every`) divided by 100. Commands that cannot run on a CI
machine (a GPU, a cluster, the internet) are listed in NOT_RUN with the reason; a documented command
that is neither run nor listed fails the test, so the pages and this test stay matched. Every
```python block runs as written, a page's blocks in order in one namespace; a page whose Python
uses cupy is a `gpu` test. Every relative link must point at a file, and a heading, that exists.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gpunet.bench import suite
from gpunet.data import datasets
from gpunet.device import backend
from gpunet.training import checkpoint
from tests.conftest import FASHION_DIR
from tests.helpers import invoke

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]
TEXT = {page: (ROOT / page).read_text() for page in PAGES}
README = TEXT["README.md"]

SETUP_LINE = "./setup.sh && .venv/bin/gpunet train"
TEST_LINE = "./setup.sh --dev && .venv/bin/python -m pytest"

NOT_RUN = {
    "gpunet datasets download mnist": "downloads from the internet (tests/test_download.py uses a local server)",
    "gpunet train --engine dask --workers 2 --dataset fashion-mnist": "starts a Dask cluster (test_distributed.py)",
    "gpunet train --engine dask --scheduler tcp://10.0.0.5:8786 --dataset fashion-mnist": "needs a running cluster",
    "gpunet train --engine dask --scheduler tcp://127.0.0.1:8786 --device cuda --dataset fashion-mnist": (
        "needs a dask-cuda cluster on GPUs"
    ),
}

pytestmark = pytest.mark.usefixtures("isolated_data")  # tests/conftest.py: nothing leaves the machine


def name(page: str) -> str:
    """A page's file name, for test ids: README.md, usage.md, ... (a bare `gpu` id would read as the mark)."""
    return Path(page).name


def blocks(language: str, page: str = "README.md") -> list[list[str]]:
    """The lines of each fenced block of `language` ('' for plain blocks) on `page`, in page order."""
    return [b.splitlines() for b in re.findall(rf"^```{language}\n(.*?)^```$", TEXT[page], flags=re.M | re.S)]


def gpunet_commands(line: str) -> list[list[str]]:
    """The gpunet invocations on one shell line, as argument lists (comments and set-up steps dropped)."""
    line = line.split(" #", 1)[0].strip()
    found = []
    for part in re.split(r"&&|;", line):
        words = shlex.split(part)
        if words and words[0] in ("gpunet", ".venv/bin/gpunet"):
            found.append(words[1:])
    return found


def small(args: list[str]) -> list[str]:
    """The same command on small data: synthetic, and a hundredth of the steps."""
    args = list(args)
    command = args[0]
    if command in ("train", "bench", "doctor") and "--resume" not in args and "--data" not in args:
        if "--dataset" in args:
            args[args.index("--dataset") + 1] = "synthetic"
        else:
            args += ["--dataset", "synthetic"]
    for option in ("--iterations", "--more", "--checkpoint-every"):
        if option in args:
            i = args.index(option) + 1
            args[i] = str(max(1, int(args[i]) // 100))
    if command in ("train", "bench") and "--iterations" not in args and "--more" not in args and "--resume" not in args:
        args += ["--iterations", "5"]
    if command == "bench":
        args += ["--timed-steps", "2", "--repeats", "1", "--warmup", "1", "--target-accuracy", "0.5"]
    return args


NUMBER = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?(?:e[+-]?\d+)?")


def shape(text: str) -> str:
    """A line with every number replaced: samples show one machine's numbers, the program another's."""
    return NUMBER.sub("#", text.strip())


def assert_printed(sample: list[str], printed: list[str]) -> None:
    """`printed` is the `sample`, line for line: the same words, the same counts, and each decimal
    within one unit of its last digit (float32 sums added in another order, on another number of
    cores, move a loss from 0.6000 to 0.5999, not one prediction)."""
    assert [shape(line) for line in printed] == [shape(line) for line in sample], "\n".join(printed)
    for want, got in zip(sample, printed):
        for a, b in zip(NUMBER.findall(want), NUMBER.findall(got)):
            if "." in a:
                unit = 10.0 ** -len(a.split(".")[1].split("e")[0])
                assert abs(float(a.replace(",", "")) - float(b.replace(",", ""))) <= unit * 1.01, (want, got)
            else:
                assert a == b, (want, got)


def run(args: list[str]):
    return invoke(*args)


def test_the_two_lines_are_the_first_commands_and_ci_runs_the_test_line_exactly() -> None:
    first, second = (block for block in blocks("sh")[:2])
    assert first == [SETUP_LINE] and second == [TEST_LINE]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert TEST_LINE in ci
    setup = (ROOT / "setup.sh").read_text()
    assert "--dev)" in setup and "--bench)" in setup and "python3 -m venv .venv" in setup


def test_the_readme_is_for_users_and_short() -> None:
    """Under 200 lines, with a link to every page of docs/ under 'Where to read more'."""
    assert len(README.splitlines()) <= 200
    more = README[README.index("## Where to read more") :]
    assert {page for page in PAGES if page != "README.md"} <= set(re.findall(r"\]\((docs/[^)#]+)\)", more))


@pytest.mark.parametrize("page", PAGES, ids=map(name, PAGES))
def test_a_contents_line_lists_the_sections_in_page_order(page: str) -> None:
    found = re.search(r"\bContents: (.*?)\n\n", TEXT[page], flags=re.S)
    assert found or page != "README.md", "the README has a contents line"
    if found:
        listed = re.findall(r"\]\(#([^)]+)\)", found.group(1))
        headings = [slug(h) for h in re.findall(r"^## (.*)$", without_code(TEXT[page]), flags=re.M)]
        assert listed == headings, (listed, headings)


def documented_commands() -> list[tuple[str, int, list[str], str]]:
    """(page, block number, argument list, the page's words) for every gpunet command in a ```sh block."""
    found = []
    for page in PAGES:
        for number, block in enumerate(blocks("sh", page)):
            for line in block:
                for args in gpunet_commands(line):
                    found.append((page, number, args, shlex.join(["gpunet", *args])))
    return found


def test_every_documented_command_is_run_or_listed_with_a_reason() -> None:
    written = {text for _, _, _, text in documented_commands()}
    assert set(NOT_RUN) <= written, set(NOT_RUN) - written  # a listed command the pages have dropped
    assert len(written) >= 15


def needs_gpu(args: list[str]) -> bool:
    return any(a.startswith("cuda") for a in args)


def block_params() -> list:
    by_block: dict[tuple[str, int], list[list[str]]] = {}
    for page, number, args, text in documented_commands():
        if text not in NOT_RUN:
            by_block.setdefault((page, number), []).append(args)
    return [
        pytest.param(
            commands, id=f"{name(page)}-block{number}", marks=[pytest.mark.gpu] if any(map(needs_gpu, commands)) else []
        )
        for (page, number), commands in by_block.items()
    ]


@pytest.mark.parametrize("commands", block_params())
def test_documented_commands_run_as_written(commands: list[list[str]]) -> None:
    """Each block's commands in order, in one directory (a block's later lines use its earlier files)."""
    if any("image.png" in arg for args in commands for arg in args):
        # Pillow only where a block predicts a picture: a gpu block must run where the GPU machine's
        # image lacks the CPU-only test tools (tests/conftest.py, benchmarks/gpu_check.sh).
        from PIL import Image

        picture = np.zeros((28, 28), np.uint8)
        picture[6:22, 12:16] = 255
        Image.fromarray(picture).save("image.png")
    own_data()
    for args in commands:
        result = run(small(args))
        if args[0] == "bench" and "torch-cpu" in " ".join(args) and suite.unavailable("torch-cpu"):
            # Without the documented set-up (./setup.sh --bench) the example says how to get it.
            assert result.exit_code == 1 and "--index-url https://download.pytorch.org/whl/cpu" in result.stderr
            continue
        assert result.exit_code == 0, f"gpunet {shlex.join(small(args))}\n{result.output}"
        assert "Traceback" not in result.output


def own_data() -> None:
    """The files the --data examples name: mine.npz and the IDX folder my-images/ (small)."""
    from idxfiles import FILE_NAMES, write_idx

    ds = datasets.synthetic(n_train=300, n_test=100)
    np.savez("mine.npz", x_train=ds.train_images, y_train=ds.train_labels, x_test=ds.test_images, y_test=ds.test_labels)
    for file_name, array in zip(FILE_NAMES, (ds.train_images, ds.train_labels, ds.test_images, ds.test_labels)):
        write_idx(Path("my-images") / file_name, array.reshape(len(array), 28, 28) if array.ndim == 2 else array)


def sample(after: str, page: str = "README.md") -> list[str]:
    """The plain block that follows the text `after` on `page` (its line breaks may fall anywhere)."""
    words = r"\s+".join(map(re.escape, after.split()))
    tail = TEXT[page][re.search(words, TEXT[page]).end() :]
    return re.search(r"^```\n(.*?)^```$", tail, flags=re.M | re.S).group(1).splitlines()


def test_train_first_lines_without_internet(monkeypatch: pytest.MonkeyPatch) -> None:
    mirrors = sample("its first lines are")
    monkeypatch.setenv("GPUNET_MIRRORS", ",".join(f"http://127.0.0.1:{port}/" for port in (9, 10, 11)))
    result = run(["train", "--iterations", "0", "--no-save"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()[: len(mirrors)]
    refused = re.compile(r"mirror \S+: cannot connect \(.+\); trying \S+")
    assert len(mirrors) == 3 and all(refused.fullmatch(line) for line in mirrors[:2] + lines[:2]), lines
    assert mirrors[2] == f"MNIST unavailable (could not be downloaded): training on Fashion-MNIST from {FASHION_DIR}"
    assert lines[2] == mirrors[2]
    offline = run(["train", "--iterations", "0", "--no-save", "--offline"])
    assert offline.output.splitlines()[0].startswith("MNIST unavailable offline: ")


def test_the_saved_model_line() -> None:
    result = run(["train", "--dataset", "synthetic", "--iterations", "5"])
    expected = sample("The last line says where", "docs/usage.md")[0].replace("fashion-mnist", "synthetic")
    assert result.output.strip().splitlines()[-1] == expected


def test_the_refusals_and_the_not_learning_report() -> None:
    usage = "docs/usage.md"
    assert run(["train", "--dataset", "synthetic", "--iterations", "5", "--checkpoint", "run.npz"]).exit_code == 0
    finished = run(["train", "--resume", "run.npz"])
    assert shape(finished.stderr) == shape(sample("saying how to continue", usage)[0])
    mixed = run(["train", "--resume", "run.npz", "--more", "1", "--hidden", "32"])
    assert mixed.stderr.strip() == sample("architecture, dtype, optimizer or dataset is refused", usage)[0]

    words = re.search(r"`(gpunet train --optimizer gd --lr 50 --dataset synthetic)`", TEXT[usage]).group(1)
    blew_up = run(shlex.split(words)[1:])
    assert blew_up.exit_code == 3
    assert shape(blew_up.stderr) == shape(sample(words, usage)[0])
    assert checkpoint.load(Path("run.npz")).step == 5


def test_doctor_sample_output() -> None:
    lines = sample("the exit code is 1 if any fails:", "docs/usage.md")
    command = shlex.split(lines[0].removeprefix("$ "))
    assert command[:2] == ["gpunet", "doctor"] and "--device" in command  # auto would add a line about the device
    result = run(command[1:])
    assert result.exit_code == 0, result.output
    assert [shape(line) for line in result.output.splitlines()] == [shape(line) for line in lines[1:]]


def dark_stroke_on_white() -> Any:
    """The README's drawing.png: a dark stroke on a 40×60 white page."""
    from PIL import Image  # here, not at the top: the GPU machine's gpu-only run lacks Pillow

    page = np.full((60, 40), 255, np.uint8)
    page[10:50, 15:25] = 0
    return Image.fromarray(page)


def test_evaluate_and_predict_samples_are_what_the_program_prints() -> None:
    """The README's model of 60 steps, trained as it says, gives its evaluate and predict samples:
    every line, every count of the confusion matrix."""
    words = re.search(r"For a model of 60 steps, `(gpunet train [^`]+)`", README).group(1)
    trained = run([*shlex.split(words)[1:], "--device", "cpu"])  # cpu: on a GPU, auto would take cuda
    assert trained.exit_code == 0, trained.output

    evaluate = sample("### Evaluate and predict")
    result = run([*shlex.split(evaluate[0].removeprefix("$ "))[1:], "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert_printed([line.rstrip() for line in evaluate[1:]], [line.rstrip() for line in result.output.splitlines()])

    saving = next(block for block in blocks("python") if "three.npy" in "\n".join(block))
    exec(compile("\n".join(saving), "README.md", "exec"), {})
    dark_stroke_on_white().save("drawing.png")
    predict = sample("a dark stroke on a 40×60 white page")
    result = run([*shlex.split(predict[0].removeprefix("$ "))[1:], "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert_printed(predict[1:], result.output.splitlines())


def write_python_data() -> None:
    """mine.npz as the Python examples read it: x and y, float features and string labels."""
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(5000, 20))
    y = np.array(["low", "mid", "high"])[np.digitize(x[:, 0] + x[:, 1], [5.0, 7.0])]
    np.savez("mine.npz", x=x, y=y)


def uses_cupy(page: str) -> bool:
    return any("import cupy" in "\n".join(block) for block in blocks("python", page))


def readme_python(scope: dict[str, Any], host_copies: list[tuple]) -> None:
    model = scope["model"]
    assert list(model.classes_) == ["high", "low", "mid"] and model.score(scope["X"][4000:], scope["y"][4000:]) > 0.9
    assert np.load("three.npy").shape == (3, 784) and (Path("mine-model.npz").stat().st_size > 0)


def python_page(scope: dict[str, Any], host_copies: list[tuple]) -> None:
    model, report, test = scope["model"], scope["report"], scope["test"]
    assert model.n_iter_ == 400 and list(model.classes_) == ["high", "low", "mid"]
    assert report.confusion.sum() == 1000 and report.accuracy > 0.9
    assert scope["pixels"].score(scope["x_test"], scope["y_test"]) > 0.6
    assert model.score(scope["X"][test], scope["y"][test]) > 0.9


def gpu_page(scope: dict[str, Any], host_copies: list[tuple]) -> None:
    """The cupy example trains on the device, and X is never copied to the host."""
    import cupy

    assert scope["model"].device_.startswith("cuda") and isinstance(scope["predicted"], cupy.ndarray)
    assert not [shape for shape in host_copies if 4000 in shape or 1000 in shape], host_copies


# What each page's Python leaves behind, checked after its blocks ran.
PYTHON_CHECKS: dict[str, Callable[[dict[str, Any], list[tuple]], None]] = {
    "README.md": readme_python,
    "docs/python.md": python_page,
    "docs/gpu.md": gpu_page,
}


def python_params() -> list:
    return [
        pytest.param(page, id=name(page), marks=[pytest.mark.gpu] if uses_cupy(page) else [])
        for page in PAGES
        if blocks("python", page)
    ]


def test_every_page_with_python_is_checked() -> None:
    assert {page for page in PAGES if blocks("python", page)} == set(PYTHON_CHECKS)


@pytest.mark.parametrize("page", python_params())
def test_python_blocks_run_as_written(page: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A page's Python blocks in order, in one namespace, on mine.npz (float features, string labels)."""
    write_python_data()
    host_copies: list[tuple] = []  # with cupy: every array gpunet brings to the host goes through to_numpy
    if uses_cupy(page):

        def recording(a):
            host_copies.append(tuple(a.shape))
            return backend.to_numpy(a)

        for module in list(sys.modules.values()):
            if module.__name__.startswith("gpunet.") and getattr(module, "to_numpy", None) is backend.to_numpy:
                monkeypatch.setattr(module, "to_numpy", recording)
    scope: dict[str, Any] = {}
    for block in blocks("python", page):
        exec(compile("\n".join(block), page, "exec"), scope)
    PYTHON_CHECKS[page](scope, host_copies)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    return {slug(h) for h in re.findall(r"^#+ (.*)$", without_code(text), flags=re.M)}


def without_code(text: str) -> str:
    """The page without its fenced blocks (a `#` comment there is no heading, a `[x](y)` no link)."""
    return re.sub(r"^```.*?^```$", "", text, flags=re.M | re.S)


@pytest.mark.parametrize("page", PAGES, ids=map(name, PAGES))
def test_every_relative_link_points_at_a_file_and_heading_that_exist(page: str) -> None:
    links = re.findall(r"\]\(([^)\s]+)\)", without_code(TEXT[page]))
    for target in links:
        if re.match(r"[a-z]+:", target):  # https:, mailto:: not this repository's
            continue
        path, _, anchor = target.partition("#")
        file = ((ROOT / page).parent / path).resolve() if path else ROOT / page
        assert file.is_relative_to(ROOT) and file.exists(), f"{page}: {target} names no file here"
        if anchor:
            assert file.suffix == ".md" and anchor in anchors(file.read_text()), f"{page}: {target}: no such heading"
