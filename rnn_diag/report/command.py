"""The ``rnn-diag report`` command (registered on the main group in :mod:`rnn_diag.cli`).

Thin: find the run folders, check them all before writing anything, render each one
(:func:`rnn_diag.report.page.render_report`) and write the page atomically.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click

#: Where ``rnn-diag report`` without arguments looks for run folders (as ``rnn-diag run``).
DEFAULT_ROOT = Path("reports")
INDEX = "index.html"


def write_page(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file, then ``os.replace``), readable by
    everyone the umask allows (a page is meant to be shared, unlike a private temp file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fail(message: str, status: int = 2) -> None:
    click.echo(f"rnn-diag report: {message}", err=True)
    raise SystemExit(status)


def _run_dirs(given: tuple[str, ...]) -> list[Path]:
    # deferred here and below: this module is the CLI's, and rnn-diag --help must stay fast
    from .run_data import NotARunError, check_run, find_runs

    if not given:
        if not DEFAULT_ROOT.is_dir():
            _fail(f"no RUN_DIR given and no ./{DEFAULT_ROOT}/ folder here; give the folder "
                  "of a run (written by `rnn-diag run`)")
        runs = find_runs(DEFAULT_ROOT)
        if not runs:
            _fail(f"no run folder under ./{DEFAULT_ROOT}/ (a run folder holds trials.parquet, "
                  "config.yaml and manifest.json); run `rnn-diag run CONFIG` first")
        return runs
    dirs = []
    for d in given:  # check every folder before writing anything
        try:
            dirs.append(check_run(d))
        except NotARunError as exc:
            inside = find_runs(d)
            hint = (f"; it holds run folders: {', '.join(str(p) for p in inside[:5])}"
                    f"{' ...' if len(inside) > 5 else ''}" if inside else "")
            _fail(f"{exc}{hint}")
    return dirs


@click.command()
@click.argument("run_dirs", nargs=-1, metavar="[RUN_DIR]...", type=click.Path())
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Output file [default: RUN_DIR/index.html]; only with one RUN_DIR.")
@click.option("--format", "fmt", type=click.Choice(["auto", "png", "svg"]), default="auto",
              show_default=True, help="Image format of the figures (auto: the smaller one).")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Processes drawing the figures; 1 draws them in this process "
                   "[default: one per CPU, at most 4].")
@click.option("--quiet", is_flag=True, help="No progress bars; print only the written paths.")
def report(run_dirs: tuple[str, ...], out: str | None, fmt: str, jobs: int | None,
           quiet: bool) -> None:
    """Write the HTML report of each RUN_DIR (default: every run under ./reports/).

    The report is one self-contained file (figures inline, no network access) written to
    RUN_DIR/index.html; its path is printed. It reads only the stored tables. Exits with
    status 2 when a folder is not a run.

    \b
    Example:
        rnn-diag report reports/weather
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    from tqdm.auto import tqdm

    from .page import render_report
    from .run_data import NotARunError, load_run

    dirs = _run_dirs(run_dirs)
    if out is not None and len(dirs) != 1:
        _fail(f"--out needs exactly one RUN_DIR, got {len(dirs)} run folders")
    failed_figures = 0
    for d in tqdm(dirs, desc="reports", unit="run", disable=quiet or len(dirs) < 2):
        try:
            run = load_run(d)
        except NotARunError as exc:
            _fail(str(exc))
        rendered = render_report(run, fmt=fmt, progress=not quiet, jobs=jobs)
        target = Path(out) if out is not None else d / INDEX
        write_page(target, rendered.html)
        for s in rendered.errors:
            failed_figures += 1
            click.echo(f"warning: {d}: figure {s.key!r} could not be drawn: {s.error}", err=True)
        click.echo(str(target))
    if failed_figures:
        click.echo(f"{failed_figures} figure(s) could not be drawn; the reports show an error "
                   "box in their place (a bug in rnn_diag: please report it)", err=True)
