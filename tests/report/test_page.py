"""The HTML page: self-contained, escaped, every section accounted for, figures that raise
contained (and caught here: a raising figure is a bug)."""

import base64
import re
from dataclasses import dataclass
from html.parser import HTMLParser

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from rnn_diag.report.embed import figure_to_data_uri  # noqa: E402
from rnn_diag.report.page import render_report  # noqa: E402
from rnn_diag.report.run_data import load_run  # noqa: E402


@dataclass(frozen=True)
class Section:  # the FigureSection interface, for sections made up in these tests
    key: str
    title: str
    caption: str
    needs: tuple
    build: object


class Page(HTMLParser):
    """Collects tags with their attributes, ids and the text of the page."""

    def __init__(self, html):
        super().__init__()
        self.tags, self.ids, self.text = [], set(), []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if "id" in attrs:
            self.ids.add(attrs["id"])

    def handle_data(self, data):
        self.text.append(data)

    def all(self, tag):
        return [a for t, a in self.tags if t == tag]


def _line(tables):
    fig = Figure(figsize=(3, 2))
    fig.add_subplot().plot(tables["curves"].epoch, tables["curves"].train_loss)
    return fig


def _raises(tables):
    plt.figure()  # left open by the failing function: must be closed by the page
    raise ValueError("no column <val_loss>")


FAKE = (
    Section("loss", "Loss", "Look for <b>the chance line</b>.", ("trials", "curves"), _line),
    Section("heatmap", "Heatmap", "cap", ("gradients",), _raises),
    Section("jacobians", "Jacobians", "cap", ("nothing_recorded",), _line),
)


@pytest.fixture(scope="module")
def rendered(small_run):
    """The small run with the real figures, drawn in this process."""
    return render_report(load_run(small_run), jobs=1)


def test_figures_drawn_by_worker_processes_are_the_same(rendered, small_run):
    pooled = render_report(load_run(small_run), jobs=2)
    assert [(s.key, s.state, s.note) for s in pooled.sections] == [
        (s.key, s.state, s.note) for s in rendered.sections]
    # encoding carries no date, so the same figure gives the same bytes in any process
    assert [s.image for s in pooled.sections] == [s.image for s in rendered.sections]


def test_every_real_figure_draws_for_a_run_with_failed_and_diverged_trials(rendered):
    from rnn_diag.report.figures import SECTIONS

    # the learning view needs a sweep of a task option × cell, which the small run has not, the
    # remedies a remedy axis, and the fixed-point sections a fixed-point analysis, which it did
    # not record
    skipped = ("learning", "remedies", "fixed_points", "fixed_point_eigenvalues")
    assert [s.key for s in rendered.sections] == [s.key for s in SECTIONS if s.key not in skipped]
    errors = {s.key: s.details for s in rendered.errors}
    assert errors == {}, "a figure raised (a bug in the figure):\n" + "\n".join(errors.values())
    assert any(s.state == "figure" for s in rendered.sections)
    assert plt.get_fignums() == []  # every figure closed after encoding


def test_page_is_self_contained(rendered):
    html = rendered.html
    page = Page(html)
    images = page.all("img")
    assert len(images) == sum(s.state == "figure" for s in rendered.sections)
    for img in images:
        head, data = img["src"].split(",", 1)
        assert head in ("data:image/png;base64", "data:image/svg+xml;base64")
        raw = base64.b64decode(data, validate=True)
        assert raw.startswith(b"\x89PNG") or b"<svg" in raw[:500]
        if b"<svg" in raw[:500]:  # an SVG must not pull anything in either
            assert not re.search(rb'(href|src)="(?!#|data:)', raw)
    # nothing that a browser would fetch: no script, stylesheet link, import or remote URL
    assert not page.all("script") and not page.all("link") and not page.all("iframe")
    assert "@import" not in html and "url(" not in html
    for tag, attrs in page.tags:
        for name in ("src", "href"):
            if name in attrs:
                assert attrs[name].startswith(("data:", "#")), (tag, attrs[name][:80])
    assert "default-src 'none'" in html  # and the CSP forbids it anyway
    assert "@media print" in html and "break-inside: avoid" in html


def test_findings_link_to_anchors_that_exist(rendered):
    page = Page(rendered.html)
    links = [a["href"] for a in page.all("a")]
    assert links and all(h[1:] in page.ids for h in links if h.startswith("#"))
    assert len([a for a in page.all("a") if a.get("class") == "see"]) == len(rendered.findings)
    assert {"findings", "trials", "run"} <= page.ids


def test_failed_and_diverged_trials_are_marked(rendered, fail_message):
    page = Page(rendered.html)
    rows = [a.get("class") for t, a in page.tags if t == "tr" and a.get("class")]
    assert rows.count("failed") == 2 and rows.count("diverged") == 1 and rows.count("ok") == 3
    assert f"RuntimeError: {fail_message}" in rendered.html
    assert "loss became nan" in rendered.html


def test_header_shows_config_and_manifest(rendered, small_run):
    import html as html_lib

    text = html_lib.unescape(rendered.html)
    assert (small_run / "config.yaml").read_text() in text
    run = load_run(small_run)
    for key in ("rnn_diag", "torch", "python", "started", "command"):
        assert f">{key}</dt>" in rendered.html
    assert run.manifest["torch"] in text and "A small sweep for the report tests." in text


def test_hostile_strings_are_escaped(hostile_run, hostile):
    out = render_report(load_run(hostile_run), FAKE)
    html = out.html
    assert "<script" not in html.lower()
    assert "<img src=x" not in html
    escaped = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;"
    # the name (title and heading), description, labels, errors, config and manifest
    assert html.count(escaped) >= 6
    page = Page(html)
    assert len(page.all("img")) == 1  # the one real figure; the hostile <img> is text
    assert page.all("title") and hostile in "".join(page.text)


def test_a_raising_figure_shows_an_error_box_and_the_rest_renders(small_run):
    before = plt.get_fignums()
    out = render_report(load_run(small_run), FAKE)
    states = {s.key: s.state for s in out.sections}
    assert states == {"loss": "figure", "heatmap": "error", "jacobians": "missing"}
    (err,) = out.errors
    assert err.error == "ValueError: no column <val_loss>" and "Traceback" in err.details
    assert "could not be drawn" in out.html and "no column &lt;val_loss&gt;" in out.html
    assert "needs the table nothing_recorded" in out.html
    assert "Look for &lt;b&gt;the chance line&lt;/b&gt;." in out.html
    assert plt.get_fignums() == before


def test_embedding_picks_the_smaller_format_and_closes_the_figure():
    dense = plt.figure(figsize=(4, 3))
    dense.add_subplot().plot(range(50_000), [i % 97 for i in range(50_000)])
    uri = figure_to_data_uri(dense, "auto")
    assert uri.startswith("data:image/png;base64,")  # 50k SVG points are larger than pixels
    assert not plt.fignum_exists(dense.number)
    svg = figure_to_data_uri(Figure(figsize=(2, 1)), "svg")
    assert b"<svg" in base64.b64decode(svg.split(",", 1)[1])
    with pytest.raises(ValueError, match="fmt"):
        figure_to_data_uri(Figure(), "jpeg")


def test_a_run_that_recorded_little_renders_without_figure_errors(tmp_path):
    """No Jacobians, spectra or Lyapunov exponents: those figures say "not recorded"."""
    import yaml

    from rnn_diag.experiments.runner import run_sweep

    config = {
        "name": "bare",
        "task": {"name": "adding", "seq_len": 8, "n_train": 16, "n_val": 8},
        "model": {"hidden_size": 4},
        "train": {"epochs": 2},
        "probes": {"jacobians": "off", "lyapunov": [], "spectra": [], "saturation": False},
    }
    path = tmp_path / "bare.yaml"
    path.write_text(yaml.safe_dump(config))
    run_sweep(path, out=tmp_path / "run", quiet=True)
    out = render_report(load_run(tmp_path / "run"))
    errors = {s.key: s.details for s in out.errors}
    assert errors == {}, "a figure raised (a bug in the figure):\n" + "\n".join(errors.values())
    states = {s.key: s.state for s in out.sections}
    for key in ("spectra", "lyapunov", "jacobians", "predictions"):  # adding: no classes
        assert states.get(key, "missing") == "missing", (key, states)
    assert states["loss"] == states["profile"] == "figure"
    assert out.html.count("Not recorded in this run") == sum(
        s == "missing" for s in states.values())
