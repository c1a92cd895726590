"""Turn a matplotlib figure into a ``data:`` URI, so the report is one self-contained file.

PNG at a fixed resolution has a size bounded by its pixels whatever the data; SVG is sharper
in print but grows with the number of points. ``fmt="auto"`` encodes both and keeps the
smaller one. Text in SVG is drawn as paths (matplotlib's default ``svg.fonttype="path"``), so
no font is ever fetched.
"""

from __future__ import annotations

import base64
import io

__all__ = ["DPI", "figure_to_data_uri"]

#: Pixels per inch of the PNGs: sharp on screen at 100% and readable in print.
DPI = 110
_MIME = {"png": "image/png", "svg": "image/svg+xml"}


def _encode(fig, fmt: str) -> bytes:
    buf = io.BytesIO()
    # no creation date in the metadata: the same data give the same bytes
    metadata = {"Date": None} if fmt == "svg" else {"Software": None}
    fig.savefig(buf, format=fmt, dpi=DPI, bbox_inches="tight", metadata=metadata)
    return buf.getvalue()


def figure_to_data_uri(fig, fmt: str = "auto", close: bool = True) -> str:
    """Encode ``fig`` as a base64 ``data:`` URI and (by default) close it to free its memory.

    Args:
        fig: a ``matplotlib.figure.Figure``.
        fmt: "png", "svg", or "auto" (whichever of the two is smaller).
        close: ``plt.close(fig)`` afterwards, even when encoding fails.

    Example:
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> import matplotlib.pyplot as plt
        >>> fig, ax = plt.subplots(figsize=(2, 1))
        >>> _ = ax.plot([0, 1], [1, 0])
        >>> figure_to_data_uri(fig, "png")[:22]
        'data:image/png;base64,'
        >>> plt.fignum_exists(fig.number)
        False
    """
    if fmt not in ("png", "svg", "auto"):
        raise ValueError(f'fmt must be "png", "svg" or "auto", got {fmt!r}')
    try:
        if fmt == "auto":
            candidates = {f: _encode(fig, f) for f in ("png", "svg")}
            fmt = min(candidates, key=lambda f: len(candidates[f]))
            data = candidates[fmt]
        else:
            data = _encode(fig, fmt)
    finally:
        if close:
            import matplotlib.pyplot as plt

            plt.close(fig)
    return f"data:{_MIME[fmt]};base64," + base64.b64encode(data).decode("ascii")
