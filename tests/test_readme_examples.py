"""The README's Python examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _blocks(section: str) -> list[str]:
    start = README.index(section)
    end = README.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", README[start:end], re.S)


def test_attention_decoder_example_records_one_step_per_call():
    code = _blocks("## Models that step their RNN themselves")[0]
    scope = {"torch": torch, "nn": torch.nn, "rd": __import__("rnn_diag")}
    exec(code, scope)  # noqa: S102 - the README's own example
    assert scope["probe"].hidden_grads().shape == (20, 8, 64)
    assert torch.isfinite(scope["probe"].hidden_grad_log10_norms()).all()


def test_quick_example_runs():
    scope: dict = {}
    exec(_blocks("## Example")[0], scope)  # noqa: S102
    assert scope["norms"].shape == (300, 8)
