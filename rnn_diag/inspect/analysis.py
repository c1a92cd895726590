"""The numbers of ``rnn-diag inspect``: per gate the weight spectra, per layer (and direction)
the Lyapunov exponents and the Jacobian-product decay along a Gaussian-driven trajectory.

What drives each layer (docs/inspect.md): one input sequence per module,

    x_t = input_scale · ξ_t,  ξ_t ~ N(0, I) i.i.d.,  t = 0 … T−1,  T = warmup + steps + 1,

drawn in float64 from ``torch.Generator().manual_seed(seed)`` (:func:`driving_input`) and cast
to the module's dtype. Every module starts from the zero state; layer 0 reads x; layer l > 0
reads the output of layers 0 … l−1 (both directions concatenated) run on the same x, with no
inter-layer dropout — as :func:`rnn_diag.modules.dynamics.module_linearisation` does. The
quantities of a layer are those of its own recurrence s_t = f(s_{t-1}, input_t) (s = h, or
(h, c) for an LSTM: S = H, 2H, or P + H with a projection):

* ``lyapunov``: the ``k`` leading Lyapunov exponents, nats per step, from
  :func:`rnn_diag.lyapunov_spectrum` over the T steps with the first ``warmup`` not counted;
* ``profile``: log10 ‖∂s_{T-1}/∂s_{T-1-d}‖₂ for d = 0 … steps (decades; index d = distance),
  from :func:`rnn_diag.dynamics.jacobian_products.jacobian_product_log10_norms`
  ("exact" for S ≤ :data:`EXACT_MAX_STATE`, else the forward–backward "estimate");
* ``decay_per_step``, ``horizon``, ``verdict``: :func:`rnn_diag.gradient_summary` of that
  profile — fitted slope (decades per step, negative = vanishing), the farthest distance still
  within 3 decades of the strongest norm (steps), and its verdict.

Spectra come from :func:`rnn_diag.recurrent_spectra` (float64): per gate block of
``weight_hh`` (``W_hr @ W_hh[g]`` with a projection), the spectral radius ρ = max |eigenvalue|
and σ_max = the largest singular value.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field

from .verdict import EDGE_NATS, verdict_sentence

__all__ = [
    "EXACT_MAX_STATE",
    "GateSpectrum",
    "InspectResult",
    "InspectSettings",
    "LayerResult",
    "ModuleResult",
    "analyse_module",
    "driving_input",
]

#: Up to this state size the Jacobian products are exact (O(T·S³)); above, estimated.
EXACT_MAX_STATE = 64
#: Version of the JSON layout (:meth:`InspectResult.to_dict`); bumped when a key changes.
SCHEMA = "rnn_diag.inspect/1"


@dataclass(frozen=True)
class InspectSettings:
    """How the layers are driven and measured (the command's options)."""

    steps: int = 1000
    warmup: int = 100
    input_scale: float = 1.0
    seed: int = 0
    nonlinearity: str = "tanh"
    lyapunov_k: int = 3

    @property
    def total_steps(self) -> int:
        """T = warmup + steps + 1: the trajectory's length."""
        return self.warmup + self.steps + 1


@dataclass
class GateSpectrum:
    """One gate block of ``weight_hh`` of one layer and direction (dimensionless)."""

    gate: str
    spectral_radius: float
    sigma_max: float


@dataclass
class LayerResult:
    """One layer and direction of a module (units in the module docstring)."""

    layer: int
    direction: int
    driven_by: str
    state_size: int
    gates: list[GateSpectrum]
    lyapunov: list[float] = field(default_factory=list)
    method: str = "exact"
    decay_per_step: float = math.nan
    horizon: int = -1
    log10_at_steps: float = math.nan
    verdict: str = "undetermined"
    edge_of_chaos: bool = False
    sentence: str = ""
    profile: list[float] = field(default_factory=list, repr=False)

    @property
    def label(self) -> str:
        """``"layer 0"``, or ``"layer 1 reverse"`` for a second direction."""
        return f"layer {self.layer}" + (" reverse" if self.direction else "")


@dataclass
class ModuleResult:
    """One recurrent module found in the checkpoint."""

    name: str
    type_name: str
    signature: str
    kind: str
    input_size: int
    hidden_size: int
    proj_size: int
    num_layers: int
    bidirectional: bool
    bias: bool
    dtype: str
    nonlinearity: str | None
    nonlinearity_assumed: bool
    layers: list[LayerResult]
    spectra: object = field(default=None, repr=False)  # recurrent_spectra rows (not in JSON)


@dataclass
class InspectResult:
    """Everything ``rnn-diag inspect`` found, as text/HTML/JSON render it."""

    checkpoint: str
    container: str
    lightning: bool
    settings: InspectSettings
    modules: list[ModuleResult]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The JSON form (keys documented in docs/inspect.md). Non-finite floats become None
        (NaN: undefined; ±inf: an exact zero or an overflow, told apart by ``verdict``).

        Example:
            >>> r = InspectResult("m.pt", "", False, InspectSettings(), [])
            >>> sorted(r.to_dict())  # doctest: +NORMALIZE_WHITESPACE
            ['checkpoint', 'container', 'lightning', 'modules', 'notes', 'rnn_diag_version',
             'schema', 'settings', 'skipped']
        """
        from .. import __version__

        modules = []
        for m in self.modules:
            d = {k: v for k, v in asdict(m).items() if k not in ("spectra", "layers")}
            d["layers"] = [asdict(layer) for layer in m.layers]
            modules.append(d)
        return _finite({
            "schema": SCHEMA,
            "rnn_diag_version": __version__,
            "checkpoint": self.checkpoint,
            "container": self.container,
            "lightning": self.lightning,
            "settings": asdict(self.settings),
            "modules": modules,
            "skipped": [{"prefix": p, "reason": r} for p, r in self.skipped],
            "notes": list(self.notes),
        })


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def driving_input(input_size: int, T: int, scale: float, seed: int, dtype=None):
    """The Gaussian input sequence ``[T, input_size]``: ``scale · N(0, 1)`` drawn in float64
    from ``torch.Generator().manual_seed(seed)``, then cast to ``dtype`` (default float32).

    Example:
        >>> driving_input(2, 3, 0.5, seed=0).shape
        torch.Size([3, 2])
    """
    import torch

    g = torch.Generator().manual_seed(int(seed))
    x = torch.randn(T, input_size, generator=g, dtype=torch.float64) * float(scale)
    return x.to(dtype or torch.float32)


def _gate_spectra(spectra, layer: int, direction: int) -> list[GateSpectrum]:
    rows = spectra[(spectra["layer"] == layer) & (spectra["direction"] == direction)
                   & (spectra["index"] == 0)]
    return [GateSpectrum(str(r.gate), float(r.modulus), float(r.singular_value))
            for r in rows.itertuples()]


def _driven_by(layer: int, settings: InspectSettings, bidirectional: bool) -> str:
    noise = f"x_t ~ N(0, {settings.input_scale:g}²·I) i.i.d. (seed {settings.seed})"
    if layer == 0:
        return noise
    below = "layer 0" if layer == 1 else f"layers 0-{layer - 1}"
    both = " (both directions)" if bidirectional else ""
    return f"the output of {below}{both} driven by {noise}"


def _layer(module, layer: int, direction: int, x, settings: InspectSettings, fused: bool,
           gates: list[GateSpectrum], driven_by: str) -> LayerResult:
    import torch

    from ..dynamics.jacobian_products import jacobian_product_log10_norms
    from ..dynamics.summary import gradient_summary
    from ..modules.dynamics import lyapunov_spectrum, module_linearisation

    where = dict(layer=layer, direction=direction) if fused else {}
    steps_obj, h = module_linearisation(module, x, **where)
    S = int(steps_obj.state_size)
    res = LayerResult(layer, direction, driven_by, S, gates)
    if not bool(torch.isfinite(h).all()):
        res.verdict = "diverged"
        res.lyapunov = [math.nan] * min(settings.lyapunov_k, S)
        res.sentence = verdict_sentence("diverged", settings.steps, math.nan, -1, math.nan,
                                        math.nan, False)
        return res
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NaN is reported as NaN
        lyap = lyapunov_spectrum(module, inputs=x, k=min(settings.lyapunov_k, S),
                                 warmup=settings.warmup, **where)
        res.method = "exact" if S <= EXACT_MAX_STATE else "estimate"
        T = x.shape[0]
        norms = jacobian_product_log10_norms(steps_obj, T, target=-1, method=res.method)
    res.lyapunov = [float(v) for v in lyap]
    # index d = distance d back from the last step
    profile = norms[T - settings.steps - 1:, 0].flip(0).numpy()
    res.profile = [float(v) for v in profile]
    summary = gradient_summary(profile[::-1])  # input order, anchor = the last step
    res.decay_per_step = float(summary["decay_per_step"])
    res.horizon = int(summary["horizon"])
    res.log10_at_steps = float(profile[settings.steps])
    res.verdict = summary["verdict"]
    top = res.lyapunov[0] if res.lyapunov else math.nan
    res.edge_of_chaos = bool(math.isfinite(top) and abs(top) <= EDGE_NATS)
    res.sentence = verdict_sentence(res.verdict, settings.steps, res.log10_at_steps,
                                    res.horizon, res.decay_per_step, top, res.edge_of_chaos)
    return res


def analyse_module(name: str, module, settings: InspectSettings, *,
                   nonlinearity_assumed: bool = False) -> ModuleResult:
    """All numbers of one rebuilt ``nn.RNN``/``GRU``/``LSTM`` or cell.

    Args:
        name: the module's prefix in the checkpoint.
        module: the rebuilt module (:func:`rnn_diag.inspect.weights.rebuild`).
        settings: steps, warmup, input scale, seed, number of exponents.
        nonlinearity_assumed: the module is an ``nn.RNN``/``RNNCell`` whose tanh/relu was not
            read from the checkpoint but taken from ``settings.nonlinearity``.
    """
    import torch
    from torch import nn

    from ..modules.dynamics import recurrent_spectra
    from .weights import signature_of

    fused = isinstance(module, (nn.RNN, nn.GRU, nn.LSTM))
    spectra = recurrent_spectra(module)
    dtype = next(module.parameters()).dtype
    x = driving_input(module.input_size, settings.total_steps, settings.input_scale,
                      settings.seed, dtype)
    kind = {"RNN": "rnn", "GRU": "gru", "LSTM": "lstm"}[type(module).__name__.removesuffix("Cell")]
    L = module.num_layers if fused else 1
    D = 2 if fused and module.bidirectional else 1
    layers = []
    with torch.no_grad(), warnings.catch_warnings():
        # PyTorch's note that oneDNN lacks projections is not the user's concern here
        warnings.filterwarnings("ignore", message="LSTM with projections")
        for layer in range(L):
            for direction in range(D):
                layers.append(_layer(
                    module, layer, direction, x, settings, fused,
                    _gate_spectra(spectra, layer, direction),
                    _driven_by(layer, settings, D == 2),
                ))
    return ModuleResult(
        name=name,
        type_name=type(module).__name__,
        signature=signature_of(module),
        kind=kind,
        input_size=int(module.input_size),
        hidden_size=int(module.hidden_size),
        proj_size=int(getattr(module, "proj_size", 0)),
        num_layers=L,
        bidirectional=D == 2,
        bias=bool(module.bias),
        dtype=str(dtype).removeprefix("torch."),
        nonlinearity=getattr(module, "nonlinearity", None),
        nonlinearity_assumed=nonlinearity_assumed,
        layers=layers,
        spectra=spectra,
    )
