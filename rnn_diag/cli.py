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


if __name__ == "__main__":  # pragma: no cover
    main(prog_name="rnn-diag")
