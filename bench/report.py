"""The benchmark's output: Markdown tables of figures and ratios, and the plot of query cost."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Figure:
    """One measured figure against its baseline from the same run."""

    case: str
    value: str
    baseline: str
    ratio: float
    #: ``("≥", 0.5)`` or ``("≤", 2.0)``; ``None`` for a figure without a target.
    target: tuple[str, float] | None = None

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        sign, bound = self.target
        return self.ratio >= bound if sign == "≥" else self.ratio <= bound


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def figures_table(figures: list[Figure]) -> str:
    rows = []
    for figure in figures:
        target = "" if figure.target is None else f"{figure.target[0]} {figure.target[1]:g}x"
        met = {None: "", True: "met", False: "**not met**"}[figure.met]
        rows.append([figure.case, figure.value, figure.baseline, f"{figure.ratio:.2f}x", target, met])
    return table(["case", "runner", "baseline (same run)", "ratio", "target", ""], rows)


def plot(path: Path, by_rows: dict[str, dict[int, float]], by_hotkeys: dict[str, dict[int, float]], rows: int) -> str:
    """Draw query cost against rows and against hotkeys into ``path`` (SVG or PNG); say what was done."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot skipped: matplotlib is not installed (pip install -e '.[bench]')"
    matplotlib.rcParams["svg.hashsalt"] = "base-runner-bench"
    matplotlib.rcParams["svg.fonttype"] = "none"  # text as text: a tenth of the size
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for axes, series, xlabel, title in (
        (left, by_rows, "submissions (256 hotkeys)", "get_weights against submissions"),
        (right, by_hotkeys, f"hotkeys ({rows:,} submissions)", "get_weights against hotkeys"),
    ):
        for name, points in series.items():
            xs = sorted(points)
            axes.plot(xs, [points[x] for x in xs], marker="o", label=name)
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel(xlabel)
        axes.set_ylabel("milliseconds (fastest run)")
        axes.set_title(title)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, metadata={"Date": None} if path.suffix == ".svg" else None)
    plt.close(figure)
    return f"plot written to {path}"
