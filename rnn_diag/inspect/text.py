"""The plain-text form of an :class:`~rnn_diag.inspect.analysis.InspectResult`: a header, one
table per module (a row per layer, direction and gate; the per-layer numbers on the layer's
first row), a verdict per layer, and a legend."""

from __future__ import annotations

import math
import textwrap

__all__ = ["format_text", "header_lines", "number"]

LEGEND = (
    "ρ: spectral radius and σ_max: largest singular value of the gate's block of weight_hh "
    "(W_hr·W_hh[g] with a projection). λ1..: top Lyapunov exponents of the layer's recurrence, "
    "nats/step. decay: fitted slope of log10‖∂s_T/∂s_(T−d)‖ against the distance d, "
    "decades/step (negative = vanishing). horizon: steps back until 3 decades are lost."
)


def number(value: float, fmt: str = ".4g") -> str:
    """A float for a table cell: ``nan`` → "n/a", infinities as "inf"/"-inf".

    Example:
        >>> number(0.123456), number(float("nan")), number(-0.5, "+.4f")
        ('0.1235', 'n/a', '-0.5000')
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return format(value, fmt)


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in
                 enumerate(zip(r, widths))]
        out.append("  " + "  ".join(cells).rstrip())
    return out


def header_lines(result) -> list[str]:
    """What was read and how the layers were driven (shared with the HTML page)."""
    s = result.settings
    where = {"": "a plain state dict", "nested dicts": "tensors collected from nested dicts"}
    source = where.get(result.container, f"the weights under {result.container!r}")
    kind = "Lightning checkpoint" if result.lightning else "checkpoint"
    lines = [
        f"{kind} {result.checkpoint}: {source}; {len(result.modules)} recurrent module(s)",
        f"driven by Gaussian input x_t ~ N(0, {s.input_scale:g}²·I) i.i.d. (seed {s.seed}), "
        f"from the zero state; {s.warmup} warm-up steps, then {s.steps} steps measured; "
        "layers above 0 read the output of the layers below on the same input",
    ]
    return lines


def format_text(result) -> str:
    """The tables and verdicts, as ``rnn-diag inspect`` prints them."""
    k = result.settings.lyapunov_k
    first, *rest = header_lines(result)  # the path stays on one line
    lines = [first, *[w for line in rest for w in textwrap.wrap(line, 100,
                                                               subsequent_indent="  ")]]
    for m in result.modules:
        lines += ["", f"{m.name or '(top level)'}  {m.signature}  [{m.dtype}]"]
        ks = max((len(layer.lyapunov) for layer in m.layers), default=k)
        head = ["layer", "dir", "gate", "ρ", "σ_max", *[f"λ{i + 1}" for i in range(ks)],
                "decay/step", "horizon", "verdict"]
        rows = [head]
        for layer in m.layers:
            per_layer = [
                *[number(v, "+.4f") for v in layer.lyapunov],
                *[""] * (ks - len(layer.lyapunov)),
                number(layer.decay_per_step, "+.4f"),
                (f"≥{result.settings.steps}" if layer.horizon >= result.settings.steps
                 else str(layer.horizon) if layer.horizon >= 0 else "n/a"),
                layer.verdict + (" (edge)" if layer.edge_of_chaos else ""),
            ]
            for i, g in enumerate(layer.gates):
                rows.append([
                    str(layer.layer) if i == 0 else "",
                    ("rev" if layer.direction else "fwd") if i == 0 else "",
                    g.gate, number(g.spectral_radius, ".4f"), number(g.sigma_max, ".4f"),
                    *(per_layer if i == 0 else [""] * len(per_layer)),
                ])
        lines += _table(rows, right={3, 4, *range(5, 5 + ks + 2)})
        for layer in m.layers:
            lines.append(f"  {layer.label}: {layer.sentence}")
        methods = sorted({layer.method for layer in m.layers})
        if "estimate" in methods:
            lines.append("  (Jacobian-product norms estimated by the forward–backward probe: "
                         "state size above 64)")
        if m.nonlinearity_assumed:
            lines.append(f"  note: a state dict does not store whether an nn.{m.type_name} uses "
                         f"tanh or relu; assumed {m.nonlinearity} (--nonlinearity "
                         f"{'relu' if m.nonlinearity == 'tanh' else 'tanh'} to change)")
    for prefix, reason in result.skipped:
        lines.append(f"skipped {prefix or '(top level)'}: {reason}")
    for note in result.notes:
        lines.append(f"note: {note}")
    lines += ["", *textwrap.wrap(LEGEND, 100)]
    return "\n".join(lines) + "\n"
