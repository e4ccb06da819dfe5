"""Figures for `gpunet bench` and `gpunet train --plot` (matplotlib is optional: pip install matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpunet.errors import ConfigError, install_hint
from gpunet.files.outputs import atomic_file

if TYPE_CHECKING:  # the report's shapes; the figures need nothing else of the bench
    from gpunet.bench.suite import BenchReport


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError(f"--plot needs matplotlib: {install_hint('--bench', 'matplotlib')}") from None
    return plt


def _format(path: Path) -> str:
    return Path(path).suffix[1:].lower() or "png"


def require(path: Path | None = None) -> None:
    """Fail before a run, not after it, when figures were asked for and cannot be drawn."""
    _pyplot()
    from matplotlib.backend_bases import FigureCanvasBase

    supported = FigureCanvasBase.get_supported_filetypes()
    if path is not None and _format(path) not in supported:
        raise ConfigError(
            f"--plot {path}: matplotlib cannot write .{_format(path)} files; use one of: {', '.join(supported)}"
        )


def _save(fig: Any, path: Path) -> None:
    """Write the figure atomically (never half a PNG under the real name), then let it go."""
    try:
        with atomic_file(path) as f:
            fig.savefig(f, dpi=120, format=_format(path))
    finally:
        fig.clf()
        _pyplot().close(fig)


def plot_bench(report: BenchReport, path: Path) -> None:
    """Test accuracy against wall-clock time per backend, and ms/step bars with the floor marked."""
    plt = _pyplot()
    results = report["results"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in results:
        left.plot([p["seconds"] for p in r["curve"]], [p["test_accuracy"] for p in r["curve"]], label=r["backend"])
    target = report["config"]["target_accuracy"]
    left.axhline(target, color="grey", linestyle=":", label=f"target {target:g}")
    left.set(xlabel="wall-clock seconds (data transfer and evaluations included)", ylabel="test accuracy")
    left.set_ylim(max(0.0, target - 0.25), 1.0)
    left.legend()
    names = [r["backend"] for r in results]
    medians = [r["ms_per_step_median"] for r in results]
    below = [r["ms_per_step_median"] - r["ms_per_step_p25"] for r in results]
    above = [r["ms_per_step_p75"] - r["ms_per_step_median"] for r in results]
    errors = [below, above]
    right.bar(names, medians, yerr=errors, capsize=4, color="tab:blue")
    for i, r in enumerate(results):
        right.hlines(r["floor_ms"], i - 0.4, i + 0.4, colors="tab:red", label="machine floor" if i == 0 else None)
        right.annotate(f"{r['x_floor']:.1f}x floor", (i, r["ms_per_step_median"]), ha="center", va="bottom")
    right.set(ylabel="ms per step (median, IQR)", ylim=(0, 1.15 * max(r["ms_per_step_p75"] for r in results)))
    right.legend()
    config = report["config"]
    fig.suptitle(
        f"{config['dataset']}, hidden {','.join(map(str, config['hidden']))}, {config['optimizer']} "
        f"lr {config['lr']:g}, {config['dtype']} — {report['machine']['cpu']}, {report['date'][:10]}"
    )
    fig.tight_layout()
    _save(fig, path)


def plot_sweep(report: BenchReport, path: Path) -> None:
    """ms per step against samples and against hidden width, per backend, with the floor."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    panels = ((axes[0], "samples", "training samples (hidden 16,16)"), (axes[1], "width", "hidden width (two layers)"))
    for ax, axis, xlabel in panels:
        rows = [r for r in report["sweep"] if r["axis"] == axis]
        if not rows:
            ax.set_axis_off()
            continue
        key = (lambda r: r["samples"]) if axis == "samples" else (lambda r: r["hidden"][0])
        for backend in dict.fromkeys(r["backend"] for r in rows):
            mine = [r for r in rows if r["backend"] == backend]
            ax.plot([key(r) for r in mine], [r["ms_per_step_median"] for r in mine], marker="o", label=backend)
            ax.plot([key(r) for r in mine], [r["floor_ms"] for r in mine], linestyle=":", color="grey")
        ax.set(xlabel=xlabel, ylabel="ms per step (median; dotted: floor)", xscale="log", yscale="log")
        ax.legend()
    fig.tight_layout()
    _save(fig, path)


def plot_history(history: list[Any], path: Path, title: str = "") -> None:
    """Loss, and train and test accuracy, against step: the curves `gpunet train --plot` draws."""
    plt = _pyplot()
    steps = [r.iteration for r in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(steps, [r.loss for r in history])
    left.set(xlabel="step", ylabel="training loss (cross-entropy)", yscale="log")
    right.plot(steps, [r.train_accuracy for r in history], label="train")
    right.plot(steps, [r.test_accuracy for r in history], label="test")
    right.set(xlabel="step", ylabel="accuracy (output layer)", ylim=(0, 1))
    right.legend()
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
