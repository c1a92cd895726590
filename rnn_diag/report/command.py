"""The ``rnn-diag report`` command (registered on the main group in :mod:`rnn_diag.cli`)."""

from __future__ import annotations

import click


@click.command()
@click.argument("run_dirs", nargs=-1, type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Output file [default: RUN_DIR/index.html]; only with one RUN_DIR.")
def report(run_dirs: tuple[str, ...], out: str | None) -> None:
    """Write the HTML report of each RUN_DIR (default: every run under ./reports/)."""
    raise click.ClickException("the report is not implemented yet")
