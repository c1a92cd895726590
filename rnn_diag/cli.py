"""The ``rnn-diag`` command line. Thin: parse, call, print.

Nothing heavy (torch, pandas) is imported at module level, so ``rnn-diag --help`` stays fast.
"""

from __future__ import annotations

import click

from . import __version__

HELP = """\
rnn_diag shows how the gradient flows through time in PyTorch recurrent networks.

It records, for every timestep, the total gradient dL/dh_t of the loss with respect to the
hidden state (not only the immediate part that module hooks see) and reports its norm as
log10, so vanishing and exploding gradients stay measurable far past float32's range.

From Python, wrap your own training step:

\b
    with rnn_diag.attach(model) as probe:
        loss = criterion(model(x), y)
        loss.backward()
    probe.hidden_grad_log10_norms()   # [T, B] log10 ||dL/dh_t||
"""


@click.group(
    help=HELP,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, "-V", "--version", prog_name="rnn-diag")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Entry point of the ``rnn-diag`` console script."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


def _load_or_exit(path: str):
    from .experiments.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        raise SystemExit(2) from None


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
def validate(config: str) -> None:
    """Check an experiment CONFIG file without running anything.

    Prints the number of trials of its sweep; exits with status 2 and a message naming the
    file, the key and what was expected when the config is invalid.
    """
    from .experiments.grid import expand, trial_label

    cfg = _load_or_exit(config)
    specs = expand(cfg)
    click.echo(f"{config}: valid, {len(specs)} trial(s)")
    for spec in specs:
        click.echo(f"  {spec.id}  {trial_label(spec)}")


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Result directory [default: reports/<name>/].")
@click.option("--backend", type=click.Choice(["local", "dask"]), default=None,
              help="Where trials run: this machine, or a Dask cluster (needs "
                   "pip install 'rnn_diag[dask]') [default: local; dask with --scheduler].")
@click.option("--scheduler", metavar="ADDRESS", default=None,
              help="Dask scheduler of an existing cluster, e.g. tcp://10.0.0.5:8786 "
                   "[default with --backend dask: start a LocalCluster for this run].")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="local: N worker processes [default: in this process]. dask: N "
                   "single-threaded LocalCluster workers [default: one per CPU]; with "
                   "--scheduler, at most N trials at once [default: all].")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Torch threads per trial [default: 1 locally, the fastest measured for "
                   "small models; dask: a machine's CPUs / its Dask threads].")
@click.option("--fresh", is_flag=True, help="Discard earlier results in the directory.")
@click.option("--quiet", is_flag=True, help="No progress bars or summary table.")
def run(config: str, out: str | None, backend: str | None, scheduler: str | None,
        jobs: int | None, threads: int | None, fresh: bool, quiet: bool) -> None:
    """Train and record every trial of an experiment CONFIG (a YAML file).

    Finished trials already in the result directory are skipped, so re-running an interrupted
    sweep resumes it (Ctrl-C cancels outstanding trials and keeps finished ones; exit status
    130). Exits with status 1 if any trial failed, 2 for an invalid config or backend. The
    summary names every diverged or failed trial with its reason.

    \b
    Examples:
        rnn-diag run experiments/weather.yaml --jobs 2
        rnn-diag run experiments/weather.yaml --backend dask --scheduler tcp://HOST:8786
    """
    from .experiments.backends import BackendError
    from .experiments.config import ConfigError
    from .experiments.runner import format_summary, run_sweep

    if backend is None:
        backend = "local" if scheduler is None else "dask"
    try:
        outcome = run_sweep(config, out=out, jobs=jobs, fresh=fresh, quiet=quiet,
                            backend=backend, scheduler=scheduler, threads=threads)
    except (ConfigError, BackendError) as exc:
        click.echo(str(exc), err=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt as exc:
        detail = str(exc) or "interrupted"
        click.echo(f"rnn-diag run: {detail}; run the same command again to resume.", err=True)
        raise SystemExit(130) from None
    if not quiet:
        click.echo(format_summary(outcome.summary))
    click.echo(
        f"{outcome.ran} trial(s) run, {outcome.skipped} already finished, "
        f"{outcome.diverged} diverged, {outcome.failed} failed; results in {outcome.out}"
    )
    if outcome.renamed:
        click.echo(f"note: {outcome.renamed} stored trial(s) took this config's names (their "
                   "settings are unchanged, only a label or a named-axis value was renamed)",
                   err=True)
    if outcome.stale:
        click.echo(f"note: {outcome.stale} trial(s) stored in {outcome.out} are not trials of "
                   "this config (left by an earlier run with other settings); they stay in the "
                   "store and the report shows them too: run with --fresh to start over",
                   err=True)
    if outcome.failed:
        raise SystemExit(1)


def _register_subcommands() -> None:
    from .inspect.command import inspect
    from .report.command import report

    main.add_command(report)
    main.add_command(inspect)


_register_subcommands()


if __name__ == "__main__":  # pragma: no cover
    main(prog_name="rnn-diag")
