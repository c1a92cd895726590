"""Shared look of the report's figures: one colour per sequence length, seaborn styling, and
the figure factory every figure function uses.

Colour is reserved for the sequence length in every figure, so a reader learns it once: the
same ``seq_len`` has the same colour in the loss curves, the gradient profiles, the spectra and
the summary table of the page. Everything else (train vs. held-out, init vs. end, theory vs.
measurement) is told apart by line style or marker. The palette is seaborn's "colorblind"
(Okabe-Ito-like, distinguishable under the common colour-vision deficiencies); with more than
its ten colours the lengths get evenly spaced colours of ``cividis`` instead, which is ordered
and colour-blind-safe.

Figures are built with the object-oriented API (``matplotlib.figure.Figure``), never with
pyplot's global state, so they work headless and nothing leaks from one figure to the next.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator

import matplotlib as mpl
import numpy as np
import seaborn as sns
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

__all__ = [
    "BAND_ALPHA",
    "DEFAULT_INIT",
    "MISSING_COLOUR",
    "add_note",
    "figure_style",
    "new_figure",
    "seq_len_palette",
    "weight_scale_text",
]

#: The colour of anything without a sequence length (and of init snapshots shared by all).
MISSING_COLOUR = "#7f7f7f"
#: Opacity of the bands over seeds.
BAND_ALPHA = 0.22
#: How a trial with ``model.weight_scale`` unset (NaN/None: the init as is) is named.
DEFAULT_INIT = "default init"

_BASE_PALETTE = "colorblind"
_WIDTH = 11.0  # inches: the page shows figures at about this width at 110 dpi


def seq_len_palette(seq_lens: Iterable) -> dict[int, str]:
    """One colour (hex string) per distinct sequence length, in increasing order of length.

    Pass *all* the lengths of a run (``trials["task.seq_len"]``) so every figure agrees; missing
    values are dropped.

    Example:
        >>> seq_len_palette([1000, 10, 100, 10])
        {10: '#0173b2', 100: '#de8f05', 1000: '#029e73'}
    """
    lengths = sorted({int(v) for v in seq_lens if v is not None and not _isnan(v)})
    base = sns.color_palette(_BASE_PALETTE)
    if len(lengths) <= len(base):
        colours = [to_hex(c) for c in base[: len(lengths)]]
    else:
        cmap = mpl.colormaps["cividis"]
        colours = [to_hex(cmap(x)) for x in np.linspace(0.0, 0.9, len(lengths))]
    return dict(zip(lengths, colours))


def weight_scale_text(value) -> str:
    """``model.weight_scale`` as a reader sees it: ``"default init"`` when unset, else ``"0.5"``.

    Example:
        >>> weight_scale_text(None), weight_scale_text(float("nan")), weight_scale_text(1.50)
        ('default init', 'default init', '1.5')
    """
    if value is None or _isnan(value):
        return DEFAULT_INIT
    return f"{float(value):g}"


def _isnan(value) -> bool:
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


@contextlib.contextmanager
def figure_style() -> Iterator[None]:
    """Seaborn's "whitegrid" look at a size readable in an 11-inch-wide figure, as a temporary
    rc context (the global rcParams are restored on exit)."""
    rc = {**sns.axes_style("whitegrid"), **sns.plotting_context("paper", font_scale=1.05)}
    rc.update({
        "axes.titlesize": 9.5,
        "axes.labelsize": 9,
        "legend.fontsize": 8,
        "legend.title_fontsize": 8,
        "xtick.labelsize": 8,
        "ytick.labelsize": 8,
        "figure.titlesize": 11,
        "axes.titleweight": "normal",
        "svg.fonttype": "path",
    })
    with mpl.rc_context(rc):
        yield


def new_figure(nrows: int, ncols: int, *, panel_height: float = 2.6,
               width: float | None = None, sharex=False, sharey=False,
               squeeze: bool = False, layout: str | None = "constrained",
               **kwargs) -> tuple[Figure, np.ndarray]:
    """A ``Figure`` with a grid of axes (``[nrows, ncols]`` array), sized for the page.

    Call inside :func:`figure_style`. The figure is ``width`` inches wide (default 11, or less
    for one or two columns) and ``panel_height`` inches per row; layout is "constrained".
    """
    if width is None:
        width = min(_WIDTH, 3.2 + 2.9 * ncols)
    fig = Figure(figsize=(width, panel_height * nrows + 0.5), layout=layout)
    axes = fig.subplots(nrows, ncols, sharex=sharex, sharey=sharey, squeeze=squeeze, **kwargs)
    return fig, axes


#: Characters per line of a note under a figure (about the page's width at 7.5 pt).
NOTE_WIDTH = 170


def add_note(fig: Figure, text: str) -> None:
    """A small grey note under the figure, for what the caption cannot know (e.g. "24 of 48
    trials shown", "last of 2 layers"). A note longer than :data:`NOTE_WIDTH` characters is
    broken into lines after its "; " separators (a part is never split), so a long note does
    not widen the figure."""
    if text:
        fig.supxlabel(_wrap(text), fontsize=7.5, color="#555555", ha="center")


def _wrap(text: str, width: int = NOTE_WIDTH) -> str:
    r"""``text`` with its "; "-separated parts packed into lines of at most ``width``
    characters (a longer part gets a line of its own).

    Example:
        >>> _wrap("aaa; bbb; ccc", width=8)
        'aaa; bbb;\nccc'
    """
    lines: list[str] = []
    for part in text.split("; "):
        if lines and len(lines[-1]) + 2 + len(part) <= width:
            lines[-1] += "; " + part
        else:
            if lines:
                lines[-1] += ";"
            lines.append(part)
    return "\n".join(lines)
