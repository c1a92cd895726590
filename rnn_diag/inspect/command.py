"""The ``rnn-diag inspect`` command (registered on the main group in :mod:`rnn_diag.cli`).

Thin: load (:mod:`.checkpoint`), find and rebuild the modules (:mod:`.weights`), analyse
(:mod:`.analysis`), print (:mod:`.text` or JSON) and optionally write the page (:mod:`.html`).
Torch and matplotlib are imported inside the command, so ``rnn-diag --help`` stays fast.
"""

from __future__ import annotations

import click

from .checkpoint import InspectError

__all__ = ["inspect", "run_inspect"]

_LOOKS_FOR = ("rnn-diag inspect looks for PyTorch's recurrent parameter names under any prefix: "
              "weight_ih_l0/weight_hh_l0[_reverse] (nn.RNN/GRU/LSTM) or weight_ih/weight_hh "
              "(nn.RNNCell/GRUCell/LSTMCell)")


def run_inspect(checkpoint: str, *, input_size: int | None = None, steps: int = 1000,
                warmup: int = 100, input_scale: float = 1.0, seed: int = 0,
                nonlinearity: str = "tanh", lyapunov_k: int = 3):
    """Load, rebuild and analyse every recurrent module of a checkpoint.

    Returns:
        :class:`~rnn_diag.inspect.analysis.InspectResult`.

    Raises:
        InspectError: an unreadable or unsafe file, no recurrent weights, or an
            ``input_size`` that contradicts the weights.
    """
    from .analysis import InspectResult, InspectSettings, analyse_module
    from .checkpoint import load_checkpoint
    from .weights import find_groups, rebuild, summarise_names

    loaded = load_checkpoint(checkpoint)
    groups, skipped = find_groups(loaded.state_dict)
    if not groups:
        found = summarise_names(list(loaded.state_dict))
        why = "; ".join(f"{p or '(top level)'}: {r}" for p, r in skipped)
        raise InspectError(
            f"{checkpoint}: no recurrent weights found ({found})"
            + (f"; names that look recurrent but do not fit: {why}" if why else "")
            + f". {_LOOKS_FOR}")
    if input_size is not None:
        wrong = [g for g in groups if g.input_size != input_size]
        if wrong:
            sfx = "" if wrong[0].cell else "_l0"
            listed = ", ".join(f"{g.prefix or '(top level)'} {g.input_size}" for g in wrong)
            raise InspectError(
                f"{checkpoint}: --input-size {input_size} contradicts the weights: "
                f"weight_ih{sfx} has {wrong[0].input_size} columns in "
                f"{wrong[0].prefix or '(top level)'} (input sizes read: {listed}); drop "
                "--input-size, the weights give it")
    settings = InspectSettings(steps=steps, warmup=warmup, input_scale=input_scale, seed=seed,
                               nonlinearity=nonlinearity, lyapunov_k=lyapunov_k)
    modules = []
    for group in groups:
        try:
            module = rebuild(group, nonlinearity)
            modules.append(analyse_module(group.prefix, module, settings,
                                          nonlinearity_assumed=group.kind == "rnn"))
        except ValueError as exc:
            msg = str(exc)
            if "finite" in msg:
                msg = "its weights hold inf or NaN"
            skipped.append((group.prefix, msg))
    notes = []
    if any(g.dtype in ("float16", "bfloat16") for g in groups):
        notes.append("half-precision weights were analysed in float32")
    if not modules:
        why = "; ".join(f"{p or '(top level)'}: {r}" for p, r in skipped)
        raise InspectError(f"{checkpoint}: recurrent weights found but none could be rebuilt: "
                           f"{why}")
    return InspectResult(str(checkpoint), loaded.container, loaded.lightning, settings,
                         modules, skipped, notes)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=click.Path(dir_okay=True))
@click.option("--input-size", type=click.IntRange(min=1), default=None, metavar="N",
              help="Expected input size: checked against the columns of weight_ih_l0 (the "
                   "weights give it, so this is only a consistency check).")
@click.option("--steps", type=click.IntRange(min=1), default=1000, show_default=True,
              help="How far back the Jacobian products are followed (the distance of the "
                   "verdict's 'a signal N steps back').")
@click.option("--warmup", type=click.IntRange(min=0), default=100, show_default=True,
              help="Steps run first to leave the zero initial state; not counted.")
@click.option("--input-scale", type=click.FloatRange(min=0.0), default=1.0, show_default=True,
              help="Standard deviation of the Gaussian input driving layer 0.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the Gaussian input.")
@click.option("--nonlinearity", type=click.Choice(["tanh", "relu"]), default="tanh",
              show_default=True,
              help="Of nn.RNN/nn.RNNCell modules: a state dict does not store it.")
@click.option("-k", "--lyapunov", "lyapunov_k", type=click.IntRange(min=1), default=3,
              show_default=True, help="Number of leading Lyapunov exponents per layer.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None,
              metavar="FILE", help="Also write a self-contained one-page HTML report to FILE.")
@click.option("--json", "as_json", is_flag=True,
              help="Print machine-readable JSON (keys in docs/inspect.md) instead of tables.")
def inspect(checkpoint: str, input_size: int | None, steps: int, warmup: int,
            input_scale: float, seed: int, nonlinearity: str, lyapunov_k: int,
            html_path: str | None, as_json: bool) -> None:
    """Diagnose the recurrent weights of a saved CHECKPOINT, without the model's code.

    CHECKPOINT is a file written by torch.save (a state dict, or a dict holding one under
    "state_dict", "model_state_dict" or "model") or a Lightning .ckpt. It is read with
    torch.load(weights_only=True) on the CPU: a pickle of custom classes is refused, never
    loaded unsafely. Every nn.RNN/GRU/LSTM (any num_layers, bidirectional, proj_size, bias)
    and nn.RNNCell/GRUCell/LSTMCell is found by its parameter names under any prefix and
    rebuilt from the weight shapes.

    Per layer, direction and gate it prints the spectral radius and largest singular value of
    the recurrent weights; per layer the top Lyapunov exponents and the decay of the Jacobian
    products along a trajectory driven by Gaussian input (lower layers included), the memory
    horizon (steps back until 3 decades are lost) and a verdict in plain words. Exits with
    status 2 and a one-line message for a missing, unreadable, unsafe or truncated file, or
    one without recurrent weights.

    \b
    Examples:
        rnn-diag inspect model.pt
        rnn-diag inspect lightning_logs/version_0/checkpoints/last.ckpt --steps 500
        rnn-diag inspect model.pt --html inspect.html --json > inspect.json
    """
    import json
    from pathlib import Path

    try:
        result = run_inspect(checkpoint, input_size=input_size, steps=steps, warmup=warmup,
                             input_scale=input_scale, seed=seed, nonlinearity=nonlinearity,
                             lyapunov_k=lyapunov_k)
        if html_path is not None:
            from ..report.command import write_page
            from .html import render_html

            try:
                write_page(Path(html_path), render_html(result))
            except OSError as exc:
                raise InspectError(f"cannot write {html_path}: {exc.strerror or exc}") from None
    except InspectError as exc:
        click.echo(f"rnn-diag inspect: {exc}", err=True)
        raise SystemExit(2) from None
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, allow_nan=False))
    else:
        from .text import format_text

        click.echo(format_text(result), nl=False)
    if html_path is not None:
        click.echo(f"report written to {html_path}", err=True)
