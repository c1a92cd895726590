"""Jacobian-product norms ∂s_target/∂s_k of a recorded layer, wired to the probe.

The maths is :func:`rnn_diag.dynamics.jacobian_products.jacobian_product_log10_norms`; this
module decides which target each sample uses (its own last valid step for PackedSequence
inputs) and checks the user's options.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..dynamics.jacobian_products import jacobian_product_log10_norms

METHODS = ("exact", "estimate")


def check_method(method) -> str | None:
    """Validate ``attach(..., jacobians=...)``."""
    if method is None or method in METHODS:
        return method
    raise ValueError(f"jacobians must be None, 'exact' or 'estimate', got {method!r}")


def product_log10_norms(
    steps, method: str, T: int, lengths: Tensor | None, target: int = -1
) -> Tensor:
    """``log10 ‖∂s_target/∂s_k‖₂`` for every k, ``[T, B]`` float64, in processing order.

    Args:
        steps: the layer's linearisation (any object with ``jacobian(t) -> [B, S, S]``).
        method: "exact" or "estimate".
        T: steps in the (padded) trajectory.
        lengths: ``[B]`` valid steps per sample, or None when all have T.
        target: processing-order step differentiated; -1 means each sample's last valid step.
            Other values need all samples to have the same length.

    NaN for k > target and past each sample's length. A linearisation with a closed form
    (``product_log10_norms``: diagonal scans) uses it, whatever the method: it is exact.
    """
    closed_form = getattr(steps, "product_log10_norms", None)
    if closed_form is not None and lengths is None:
        return closed_form(T, target)
    if lengths is None or bool((lengths == T).all()):
        return jacobian_product_log10_norms(steps, T, target, method)
    if target != -1:
        raise ValueError(
            "an explicit target needs sequences of equal length; with a PackedSequence use "
            "target=-1 (each sample's own last step)"
        )
    out = torch.full((T, lengths.shape[0]), float("nan"), dtype=torch.float64)
    for length in sorted(set(lengths.tolist())):
        rows = (lengths == length).nonzero().flatten()

        def sub_batch(t: int, rows: Tensor = rows) -> Tensor:
            return steps.jacobian(t)[rows]

        part = jacobian_product_log10_norms(sub_batch, length, length - 1, method)
        out[:length, rows.cpu()] = part.cpu()
    return out.to(lengths.device)
