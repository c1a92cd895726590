"""Regenerate the README's figure from a finished weather run.

    rnn-diag run experiments/weather.yaml --jobs 2
    python docs/make_readme_figure.py [reports/weather]

Writes ``docs/images/weather_gradient_profiles.png``: figure 2 of the report (the gradient
profile at the first and last recorded epoch, with the Lyapunov and Pascanu lines).
"""

from __future__ import annotations

import sys
from pathlib import Path

from rnn_diag.report.figures import gradient_profiles
from rnn_diag.report.run_data import load_run

OUT = Path(__file__).resolve().parent / "images" / "weather_gradient_profiles.png"


def main(run_dir: str = "reports/weather") -> None:
    run = load_run(run_dir)
    fig = gradient_profiles(run.trials, run.tables["gradients"], run.tables.get("spectra"),
                            run.tables.get("lyapunov"))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=90, bbox_inches="tight")
    print(OUT)


if __name__ == "__main__":
    main(*sys.argv[1:])
