"""The one-page HTML form of an inspection: the report's stylesheet inline, the tables, the
verdicts and the figures as ``data:`` URIs (:func:`rnn_diag.report.embed.figure_to_data_uri`),
so the file is self-contained (nothing is fetched; the page's Content-Security-Policy forbids
it) and can be mailed or attached to an issue."""

from __future__ import annotations

import re
from importlib import resources

from .text import LEGEND, header_lines, number

__all__ = ["render_html"]

_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="rnn_diag {{ version }}">
<title>{{ title }} — rnn_diag inspect</title>
<style>{{ css }}</style>
</head>
<body>
<main>
<header id="top">
  <h1>{{ title }}</h1>
  <p class="lead">Recurrent weights of a checkpoint, analysed without the model's code.</p>
  <p class="meta">{% for line in header %}{{ line }}<br>{% endfor %}written {{ generated }} by rnn_diag {{ version }}</p>
  <nav>{% for m in modules %}<a href="#m{{ loop.index }}">{{ m.name or "(top level)" }}</a>{% endfor %}</nav>
</header>
{% for w in warnings %}<p class="warning">{{ w }}</p>{% endfor %}
{% for m in modules %}
<section id="m{{ loop.index }}" class="figure-section">
  <h2>{{ m.name or "(top level)" }} <span class="mono">{{ m.signature }}</span></h2>
  <p class="meta">{{ m.dtype }}{% if m.nonlinearity_assumed %} · nonlinearity not stored in a state dict: assumed <b>{{ m.nonlinearity }}</b> (change with <span class="mono">--nonlinearity</span>){% endif %}</p>
  <ul class="findings">
  {% for layer in m.layers %}<li><b>{{ layer.label }}</b> <span class="badge {{ layer.verdict }}">{{ layer.verdict }}</span> {{ layer.sentence | detail }}<br><span class="meta">driven by {{ layer.driven_by }}</span></li>
  {% endfor %}
  </ul>
  <div class="table-wrap"><table class="trials">
    <tr>{% for h in m.head %}<th{% if loop.index <= 3 or loop.last %} class="text"{% endif %}>{{ h }}</th>{% endfor %}</tr>
    {% for row in m.rows %}<tr>{% for c in row %}<td{% if loop.index <= 3 or loop.last %} class="text"{% endif %}>{{ c }}</td>{% endfor %}</tr>
    {% endfor %}
  </table></div>
  <div class="grid">
    <figure><img src="{{ m.eig }}" alt="eigenvalues of {{ m.name }}"><figcaption>Eigenvalues of each gate block of weight_hh in the complex plane, with the unit circle; one panel per layer and direction.</figcaption></figure>
    <figure><img src="{{ m.profile }}" alt="Jacobian-product norms of {{ m.name }}"><figcaption>Norm of the Jacobian product ∂s_T/∂s_(T−d) along the driven trajectory against the distance d (decades); dotted: 3 decades below each line's peak, where its horizon ends.</figcaption></figure>
  </div>
</section>
{% endfor %}
<section id="legend"><h2>How to read this page</h2><div class="howto"><p>{{ legend }}</p></div></section>
<footer>rnn_diag {{ version }} · <span class="mono">rnn-diag inspect</span></footer>
</main>
</body>
</html>
"""  # noqa: E501 (HTML lines)

_FALLBACK_CSS = """
body { font: 15px/1.45 system-ui, sans-serif; color: #1b1f24; margin: 0; }
main { max-width: 1180px; margin: 0 auto; padding: 1.2rem 1.5rem 3rem; }
table.trials { border-collapse: collapse; font-size: .82rem; }
table.trials th, table.trials td { padding: .25rem .35rem; border-bottom: 1px solid #d8dde3;
                                   text-align: right; }
.text { text-align: left; } .meta { color: #5b6570; font-size: .85rem; }
figure img { max-width: 100%; }
"""


def _report_css() -> str:
    """The stylesheet of the run report (``report.html.j2``), so both pages look alike."""
    try:
        text = resources.files("rnn_diag.report").joinpath("templates/report.html.j2") \
            .read_text(encoding="utf-8")
    except OSError:
        return _FALLBACK_CSS
    m = re.search(r"<style>(.*?)</style>", text, re.DOTALL)
    return m.group(1) if m else _FALLBACK_CSS


def _detail(sentence: str):
    """A verdict sentence without its leading label (the badge shows it), powers of ten as
    superscripts, HTML-escaped.

    Example:
        >>> str(_detail("vanishing: a signal 9 steps back arrives scaled by 10^-3.1"))
        'a signal 9 steps back arrives scaled by 10<sup>-3.1</sup>'
    """
    from markupsafe import Markup, escape

    text = str(escape(sentence.split(": ", 1)[-1]))
    return Markup(re.sub(r"10\^([+-]?[0-9.]+)", r"10<sup>\1</sup>", text))


def _rows(m, steps: int) -> tuple[list[str], list[list[str]]]:
    ks = max((len(layer.lyapunov) for layer in m.layers), default=0)
    head = ["layer", "dir", "gate", "ρ", "σ_max", *[f"λ{i + 1} (nats/step)" for i in range(ks)],
            "decay (decades/step)", "horizon (steps)", "verdict"]
    rows = []
    for layer in m.layers:
        for i, g in enumerate(layer.gates):
            first = i == 0
            rows.append([
                str(layer.layer) if first else "",
                ("reverse" if layer.direction else "forward") if first else "",
                g.gate, number(g.spectral_radius, ".4f"), number(g.sigma_max, ".4f"),
                *([number(v, "+.4f") for v in layer.lyapunov] + [""] * (ks - len(layer.lyapunov))
                  if first else [""] * ks),
                number(layer.decay_per_step, "+.4f") if first else "",
                ((f"≥ {steps}" if layer.horizon >= steps else str(layer.horizon))
                 if first else ""),
                layer.verdict if first else "",
            ])
    return head, rows


def render_html(result) -> str:
    """The page of an :class:`~rnn_diag.inspect.analysis.InspectResult` (draws the figures)."""
    import datetime as dt

    import jinja2
    from markupsafe import Markup

    from .. import __version__
    from ..report.embed import figure_to_data_uri
    from .figures import eigenvalue_figure, profile_figure

    modules = []
    for m in result.modules:
        head, rows = _rows(m, result.settings.steps)
        modules.append(dict(
            name=m.name, signature=m.signature, dtype=m.dtype, layers=m.layers, head=head,
            rows=rows, nonlinearity=m.nonlinearity, nonlinearity_assumed=m.nonlinearity_assumed,
            eig=figure_to_data_uri(eigenvalue_figure(m)),
            profile=figure_to_data_uri(profile_figure(m, result.settings.steps)),
        ))
    warnings = [f"skipped {p or '(top level)'}: {r}" for p, r in result.skipped]
    warnings += list(result.notes)
    env = jinja2.Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["detail"] = _detail
    return env.from_string(_TEMPLATE).render(
        title=str(result.checkpoint).replace("\\", "/").rsplit("/", 1)[-1],
        css=Markup(_report_css()),
        header=header_lines(result),
        modules=modules,
        warnings=warnings,
        legend=LEGEND,
        version=__version__,
        generated=dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
    )
