"""The Probe: attach to a model's recurrent modules and record ∂L/∂h_t after every backward."""

from __future__ import annotations

import itertools
import warnings
import weakref

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from ..dynamics.denormals import flush_denormals
from ..dynamics.workspace import Workspace
from ..modules.layers import FUSED_TYPES, make_shadows
from ..modules.scans import registered_adapter, scan_layers
from ..scans.base import ScanLayer
from .cell_chain import CellChain, StaleRecord, components
from .discovery import find_recurrent
from .fused import FusedCall, ReplayMismatch, replays_dropout, save_rng_state
from .history import History
from .jacobians import product_log10_norms
from .links import FRESH, SAME, TRANSFORM, VIEW, Handed, classify, classify_fused
from .options import RecordOptions
from .result import LayerResult
from .scan_calls import (
    AdapterCall,
    ScanPointCall,
    analyse_adapter_call,
    analyse_scan_point,
    detached,
    output_tensors,
    tensor_versions,
)
from .series import analyse_fused_calls, concat, mark_last_immediate_undefined

#: Calls of one sequence held for a backward that has not come yet (their detached values
#: only); beyond this the oldest half is let go.
MAX_HELD_CALLS = 100_000


class ProbeWarning(UserWarning):
    """The probe could not record something exactly, or records it with a caveat; the message
    names the module and the reason. Each (module, reason) is warned once per probe."""


def attach(
    model: nn.Module,
    modules=None,
    every: int = 1,
    *,
    saturation: bool = False,
    jacobians: str | None = None,
    jacobian_samples: int | str | None = "auto",
) -> Probe:
    """Attach a :class:`Probe` to the recurrent modules of ``model``.

    Args:
        model: any ``nn.Module``; may itself be an nn.RNN/GRU/LSTM or a cell.
        modules: None to probe every nn.RNN, nn.GRU, nn.LSTM, nn.RNNCell, nn.GRUCell and
            nn.LSTMCell inside ``model``; or names / module objects, which may include custom
            cells (modules called once per step as ``cell(x_t, state) -> state``).
        every: record every ``every``-th backward pass (the 1st, the every+1-th, ...).
        saturation: also record, per gate and timestep, the fraction of saturated units
            (``saturation_*`` metrics in :meth:`Probe.frame`); costs one pass per gate.
        jacobians: None (default), "exact" or "estimate": also record the Jacobian-product
            norms log10 ‖∂s_T/∂s_k‖₂ of each layer's recurrence (:meth:`Probe.jacobian_log10_norms`,
            ``jacobian_*`` metrics in :meth:`Probe.frame`). "exact" forms every product (costly
            for large H); "estimate" is the forward-backward probe, within 10% almost always.
        jacobian_samples: compute the Jacobian-product norms for the first N samples of the
            batch only; None: all of them. Their cost grows linearly with the batch while a few
            samples already give the batch statistics; :meth:`Probe.jacobian_log10_norms` then
            returns ``[T, min(B, N)]``. The default, "auto", is N = 8
            (``rnn_diag.probes.options.AUTO_JACOBIAN_SAMPLES``), which keeps "estimate" under
            0.2× a training step at B = 400, T = 1000 (docs/design.md §22); when it leaves
            samples out the probe says so once, with a :class:`ProbeWarning` naming how many
            of how many. Passing a number (or None) explicitly gives no warning.

    Returns:
        The attached Probe; use it as a context manager to detach automatically.

    Example:
        >>> import torch, rnn_diag as rd
        >>> rnn = torch.nn.RNN(3, 8)
        >>> with rd.attach(rnn) as probe:
        ...     out, h_n = rnn(torch.randn(50, 4, 3))
        ...     out[-1].sum().backward()
        >>> probe.hidden_grads().shape
        torch.Size([50, 4, 8])
    """
    return Probe(
        model, modules=modules, every=every, saturation=saturation, jacobians=jacobians,
        jacobian_samples=jacobian_samples,
    )


class Probe:
    """Records total and immediate gradients w.r.t. every hidden state of recurrent modules.

    Create it with :func:`attach`. After each recorded backward pass, the full tensors of that
    pass are readable through :meth:`hidden_grads`, :meth:`immediate_grads` and
    :meth:`hidden_grad_log10_norms`; per-timestep batch aggregates of every recorded pass are
    kept in :meth:`frame`. The probe never changes what the model computes.
    ``Probe(model, ..., start=N)`` (the arguments of :func:`attach`, plus ``start``) numbers
    the backward passes from N instead of 0, for a run resumed at step N: the recorded passes
    are those whose number is a multiple of ``every``.

    **Modules run several times in one forward** (a fused module or a cell stepped by the
    user's loop, a module run on chunks) give one time series in call order; a call on L steps
    contributes L steps. The total at each step is what autograd delivered to the state that
    call returned, through every path, whatever the user's code did to the state in between.
    Where the next call received that state itself or a view of it (reshape, (un)squeeze), the
    recursion continues in log space across the calls (norms stay finite far below the dtype's
    range); across any other hand-over (a mask, a slice, ``detach()``) the values are
    autograd's, in the model's dtype, and a norm that underflowed there is -inf. Batches that
    shrink or grow between calls are padded: row i stays row i (as ``h[:b]`` keeps it), rows a
    call did not have are 0 (log10 -inf) and left out of :meth:`frame`'s aggregates.

    The probe never raises inside the user's forward or backward: what it cannot record
    exactly it leaves out with a :class:`ProbeWarning` naming the module and the reason.
    """

    def __init__(
        self,
        model: nn.Module,
        modules=None,
        every: int = 1,
        *,
        saturation: bool = False,
        jacobians: str | None = None,
        jacobian_samples: int | str | None = "auto",
        start: int = 0,
    ):
        if not isinstance(start, int) or isinstance(start, bool) or start < 0:
            raise ValueError(f"start must be an int >= 0, got {start!r}")
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        self._options = RecordOptions(bool(saturation), jacobians, jacobian_samples)
        targets = find_recurrent(model, modules)
        self.modules: list[str] = list(targets)
        self._every = every
        self._names_by_id = {id(m): name for name, m in targets.items()}
        self._shadows = {
            name: make_shadows(m) for name, m in targets.items() if isinstance(m, FUSED_TYPES)
        }
        self._chains: dict[str, CellChain | None] = {}
        # scan modules (docs/design.md §23): their scan layers, in layer order
        self._scan_layers: dict[str, list[nn.Module]] = {}
        self._seq = itertools.count()
        self._backwards = start
        self._in_backward = False
        #: The messages of the ProbeWarnings this probe issued, in order (each once).
        self.warnings: list[str] = []
        # Per module: the calls since the last backward (weakly: they die with their graph),
        # the calls a gradient reached in the current backward, what the latest call returned
        # (to classify how the next call's state relates to it), and a fused call's pre-hook
        # findings until its forward hook runs.
        self._window: dict[str, list[weakref.ref]] = {}
        self._held: dict[str, list] = {}
        self._reached: dict[str, dict[int, FusedCall | CellChain]] = {}
        self._handed: dict[str, Handed | None] = {}
        self._before_call: dict[str, tuple[str, object]] = {}
        self._warned: set[tuple[str, str]] = set()
        self._refused: set[str] = set()  # custom cells whose calls do not have the cell form
        self._recomputed: set[str] = set()  # modules called during this backward
        self._latest: dict[str, dict[tuple[int, int], LayerResult]] = {}
        self._history = History()
        self._workspace = Workspace()
        self._handles = []
        self._attached = True
        try:
            for name, module in targets.items():
                self._install(name, module)
        except BaseException:
            self.detach()
            raise

    # ---------------------------------------------------------------- lifecycle
    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc) -> bool:
        self.detach()
        return False

    def detach(self) -> None:
        """Remove every hook and drop every reference to the model. Recorded gradients stay."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._shadows.clear()
        self._chains.clear()
        self._window.clear()
        self._held.clear()
        self._reached.clear()
        self._handed.clear()
        self._before_call.clear()
        self._workspace.clear()
        self._attached = False

    def __repr__(self) -> str:
        state = "attached" if self._attached else "detached"
        return f"Probe({state}, modules={self.modules}, recorded={self._history.iterations})"

    # ---------------------------------------------------------------- results
    def hidden_grads(
        self, module=None, *, layer: int = 0, direction: int = 0, state: str = "h"
    ) -> Tensor:
        """Total ∂L/∂h_t (or ∂L/∂c_t with ``state="c"``) of the most recent recorded backward.

        Args:
            module: qualified name or module object; None when only one module is probed.
            layer: layer of a multi-layer module. direction: 1 for the reverse direction.
            state: "h", or "c" for LSTM (the total ∂L/∂c_t, including the path through h_t).

        Returns:
            ``[T, B, H]`` in the model's dtype, time-major, in input time order for both
            directions; zero past each sample's length for PackedSequence inputs. Values below
            the dtype's range are 0 here; :meth:`hidden_grad_log10_norms` keeps them. For a
            module run several times in one forward, T counts the steps of all its calls, in
            call order, and B is the largest batch among them (see the class docstring).
        """
        return self._result(module, layer, direction).values("total", state)

    def immediate_grads(
        self, module=None, *, layer: int = 0, direction: int = 0, state: str = "h"
    ) -> Tensor:
        """The direct part g_t of the gradient: what reaches h_t from outside the recurrence
        (for the top layer: the gradient on the module's output at t, plus the gradient on h_n
        at each sample's last step; for lower layers: what the layer above's input projection
        sends back). Same shape and conventions as :meth:`hidden_grads`.

        For a module run several times in one forward, g_t at a call's last step is what
        reached its final state from outside the next call's recurrence. Where the user's code
        transformed the state before handing it on (a mask, a slice), that split is not
        defined: those steps are NaN (never a guess)."""
        return self._result(module, layer, direction).values("immediate", state)

    def hidden_grad_log10_norms(
        self, module=None, *, layer: int = 0, direction: int = 0, state: str = "h"
    ) -> Tensor:
        """``[T, B]`` float64 log10 of the per-sample L2 norm of the total gradient.

        Computed in log space: finite wherever the true gradient is non-zero, however small
        (e.g. -812.4 where float32 and float64 both hold 0); ``-inf`` only for an exactly zero
        gradient, such as past a sample's length.
        """
        return self._result(module, layer, direction).log10_norms("total", state)

    def immediate_grad_log10_norms(
        self, module=None, *, layer: int = 0, direction: int = 0, state: str = "h"
    ) -> Tensor:
        """``[T, B]`` float64 log10 of the per-sample L2 norm of the immediate gradient."""
        return self._result(module, layer, direction).log10_norms("immediate", state)

    def jacobian_log10_norms(
        self, module=None, *, layer: int = 0, direction: int = 0, target: int = -1
    ) -> Tensor:
        """``log10 ‖∂s_target/∂s_k‖₂`` (spectral norm) for every step k, on the trajectory of
        the most recent recorded forward. Needs ``attach(..., jacobians="exact"|"estimate")``.

        The Jacobian is the layer's own recurrence (its input from the layer below held
        fixed); s = h, or the joint (h, c) of size 2H for LSTM.

        Args:
            module, layer, direction: as for :meth:`hidden_grads`.
            target: the differentiated step, in input time; -1 (default) is the last step the
                direction processes: T-1 forward, 0 for the reverse direction, and each
                sample's own last step for PackedSequence inputs (other targets need equal
                lengths). Other targets are recomputed from the recorded trajectory.

        Returns:
            float64 ``[T, N]`` in input time order (N = B, or ``jacobian_samples`` when the
            batch is larger), in decades: 0 at k = target, NaN for the steps the direction
            processes after the target and past each sample's length. For a module run several
            times in one forward the products run over its last call (a run of one-step calls
            counts as one, back to its last transformed hand-over) and are NaN before it: they
            never cross the user's code.
        """
        result = self._result(module, layer, direction)
        if result.jacobian is None:
            raise RuntimeError(
                "Jacobian-product norms were not recorded: attach with jacobians='exact' or "
                "jacobians='estimate'"
            )
        if target == -1:
            return result.in_input_order(result.jacobian)
        T = result.jacobian.shape[0]
        if not -T <= target < T:
            raise ValueError(f"target={target} is outside the {T} steps")
        target %= T
        processing_target = target if direction == 0 else T - 1 - target
        n = result.jacobian.shape[1]
        valid = None if result.valid is None else result.valid[:, :n]
        if result.relinearise is None:
            raise ValueError(
                f"target={target} needs one call's trajectory; module {self._resolve(module)!r} "
                "ran several calls in the recorded forward: use target=-1"
            )
        with torch.no_grad(), flush_denormals():
            steps = result.relinearise()
            norms = product_log10_norms(
                steps, self._options.jacobians, T, _lengths(valid), processing_target
            )
        return result.in_input_order(norms)

    def frame(self):
        """Every recorded backward as a tidy ``pandas.DataFrame``, one row per observation.

        Columns:
            iteration (int): index of the backward pass among all backward passes that reached
                the probed modules (0-based; with ``every=N`` only multiples of N appear).
            module (str), layer (int), direction (int: 0 forward, 1 reverse),
            state (str: "h", or "c" for LSTM), t (int: input time step),
            metric (str), value (float64).
        Metrics (log10 of per-sample L2 norms, aggregated over the samples valid at t):
            total_mean, total_min, total_max: of the total gradient ∂L/∂h_t;
            immediate_mean, immediate_min, immediate_max: of the immediate gradient g_t;
            nonfinite_fraction: fraction of samples whose total gradient is inf or NaN at t;
            underflow_fraction: fraction of samples whose total at t is reported -inf because
                it fell below what the model's dtype could carry from outside the recurrence
                (autograd delivered faint gradients there; see the README).
        With ``attach(..., jacobians=...)``, on state "h" rows: jacobian_mean, jacobian_min,
        jacobian_max, of log10 ‖∂s_last/∂s_t‖₂ (see :meth:`jacobian_log10_norms`).
        With ``attach(..., saturation=True)``, on state "h" rows of PyTorch's cells and
        modules, also the batch mean fraction of
        saturated units, whose nonlinearity has derivative below 0.01: saturation_h (Elman
        RNN; relu units count when inactive), saturation_r/_z/_n (GRU gates),
        saturation_i/_f/_g/_o and saturation_c (LSTM gates and tanh of the cell state).
        """
        return self._history.frame()

    def latest_frame(self):
        """:meth:`frame` restricted to the most recent recorded backward, built from that
        backward's rows only (cheap at every step however long the run; unaffected by
        :meth:`take_frame`). Empty before the first recorded backward."""
        return self._history.latest()

    def take_frame(self):
        """:meth:`frame` of the backward passes recorded since the last ``take_frame()``, which
        the probe then forgets (:meth:`frame` no longer has them). For long runs whose rows
        are stored elsewhere, such as :func:`rnn_diag.record`: the probe's memory stays bounded.
        """
        return self._history.take()

    @property
    def backwards(self) -> int:
        """The backward passes that reached the probed modules so far, recorded or not: the
        ``iteration`` the next one will have in :meth:`frame`."""
        return self._backwards

    def _result(self, module, layer: int, direction: int) -> LayerResult:
        name = self._resolve(module)
        hint = (
            " (a module is recorded when it is called as module(...) with grad enabled and a "
            "backward reaches its outputs; a wrapper that calls module.forward(...) directly, "
            "such as AWD-LSTM's WeightDrop, bypasses the hooks; see any ProbeWarning for "
            "calls that were not recorded)"
        )
        if not self._latest:
            raise RuntimeError(
                "no backward pass has been recorded yet: run forward and loss.backward() with "
                "the probe attached first" + hint
            )
        if name not in self._latest:
            raise RuntimeError(
                f"no recorded backward pass has reached module {name!r} yet" + hint
            )
        layers = self._latest[name]
        if (layer, direction) not in layers:
            raise ValueError(
                f"module {name!r} has no layer={layer}, direction={direction}; "
                f"available (layer, direction): {sorted(layers)}"
            )
        return layers[(layer, direction)]

    def _resolve(self, module) -> str:
        if module is None:
            if len(self.modules) != 1:
                raise ValueError(
                    f"this probe watches {len(self.modules)} modules; pass module= one of "
                    f"{self.modules}"
                )
            return self.modules[0]
        if isinstance(module, nn.Module):
            if id(module) not in self._names_by_id:
                raise ValueError(f"{type(module).__name__} is not probed; probed: {self.modules}")
            return self._names_by_id[id(module)]
        if module not in self.modules:
            raise ValueError(f"no probed module named {module!r}; probed: {self.modules}")
        return module

    # ---------------------------------------------------------------- hooks
    # Hooks never raise into the user's forward or backward: anything unexpected becomes a
    # ProbeWarning naming the module, and that module is not recorded for the pass.
    def _install(self, name: str, module: nn.Module) -> None:
        layers = scan_layers(module)
        if layers is not None:
            self._scan_layers[name] = layers
            for index, layer in enumerate(layers):
                if isinstance(layer, ScanLayer):
                    pre, post = self._scan_point_hooks(name, index)
                    target = layer.scan
                else:
                    pre, post = self._adapter_hooks(name, index, registered_adapter(layer))
                    target = layer
                self._handles.append(target.register_forward_pre_hook(pre, with_kwargs=True))
                self._handles.append(target.register_forward_hook(post, with_kwargs=True))
            return
        if isinstance(module, FUSED_TYPES):
            pre, post = self._fused_hooks(name)
        else:
            self._chains[name] = None
            pre, post = self._cell_hooks(name)
        self._handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        self._handles.append(module.register_forward_hook(post, with_kwargs=True))

    def _recording(self) -> bool:
        return self._attached and torch.is_grad_enabled()

    def _refuse_call(self, name: str, inp) -> bool:
        """Whether this call is one the probe cannot record exactly; warns once why."""
        if _in_backward():
            # torch.utils.checkpoint recomputing the forward: the forward's own calls are the
            # record (non-reentrant checkpoint); if there were none, _end_backward says why.
            self._recomputed.add(name)
            self._schedule_end()
            return True
        data = inp.data if isinstance(inp, PackedSequence) else inp
        if isinstance(data, Tensor) and _autocast(data.device.type):
            self._warn(name, "autocast", "called under torch.autocast: it computed in reduced "
                       "precision, which the probe's float32 recomputation would not match: "
                       "not recorded. Record with autocast off, e.g. on a probing step.")
            return True
        return False

    def _fused_hooks(self, name: str):
        def pre(module, args, kwargs):
            if not self._recording():
                return None
            try:
                inp = args[0] if args else kwargs["input"]
                hx = args[1] if len(args) > 1 else kwargs.get("hx")
                if self._refuse_call(name, inp):
                    return None
                link, via_output = classify_fused(None if hx is None else components(hx),
                                                  self._handed.get(name))
                rng = save_rng_state(inp) if replays_dropout(module) else None
                self._before_call[name] = (link, via_output, rng)
            except Exception as error:  # noqa: BLE001 - never raise into the user's forward
                self._warn(name, "internal", f"the probe could not inspect a call ({error!r})")
            return None

        def post(module, args, kwargs, output):
            before = self._before_call.pop(name, None)
            if before is None or not self._recording():
                return None
            try:
                out, final = output
                data = out.data if isinstance(out, PackedSequence) else out
                if not data.requires_grad:
                    return None
                inp = args[0] if args else kwargs["input"]
                hx = args[1] if len(args) > 1 else kwargs.get("hx")
                link, via_output, rng = before
                finals = final if isinstance(final, tuple) else (final,)
                # Detached views only (values and version counters): the call is held by hooks
                # in the user's graph, and graph tensors here would make a reference cycle
                # through autograd's C++ nodes that Python's collector cannot free.
                call = FusedCall(module, self._shadows[name], _detached(inp), _detached(hx),
                                 _detached(out), rng, seq=next(self._seq), link=link,
                                 via_output=via_output, finals=_detached(finals),
                                 versions=_versions(inp, hx, out, finals))
                self._add_to_window(name, call)
                self._handed[name] = Handed.of(finals, out if _output_is_h(module, call) else None)
                # One plain hook per tensor: a multi-grad hook costs ~50 µs a call, which a
                # loop of 128 one-step calls per update notices.
                for i, tensor in enumerate((data, *finals)):
                    if tensor.requires_grad:
                        tensor.register_hook(self._fused_grad_hook(name, call, i, len(finals)))
            except Exception as error:  # noqa: BLE001
                self._warn(name, "internal", f"the probe could not record a call ({error!r})")
            return None

        return pre, post

    def _fused_grad_hook(self, name: str, call: FusedCall, i: int, n_finals: int):
        """Store the gradient of output ``i`` (0: output, then h_n, c_n) of ``call``."""

        def hook(grad):
            if self._begin_backward():
                grads = list(call.grads or (None,) * (1 + n_finals))
                grads[i] = grad
                call.grads = tuple(grads)
                self._reached.setdefault(name, {})[id(call)] = call

        return hook

    def _cell_hooks(self, name: str):
        def pre(module, args, kwargs):
            if not self._recording():
                return None
            try:
                return self._cell_pre(name, module, args, kwargs)
            except Exception as error:  # noqa: BLE001
                self._chains[name] = None
                self._warn(name, "internal", f"the probe could not inspect a call ({error!r})")
                return None

        def post(module, args, kwargs, output):
            chain = self._chains.get(name)
            if not self._recording() or chain is None or len(chain.inputs) == len(chain.outputs):
                return None
            try:
                return self._cell_post(name, chain, output)
            except Exception as error:  # noqa: BLE001
                self._chains[name] = None
                self._warn(name, "internal", f"the probe could not record a call ({error!r})")
                return None

        return pre, post

    def _cell_pre(self, name: str, module, args, kwargs):
        if name in self._refused or self._refuse_call(name, args[0] if args else
                                                      kwargs.get("input")):
            self._chains[name] = None
            return None
        in_args = len(args) > 1
        state = args[1] if in_args else kwargs.get("hx")
        parts = None if state is None else components(state)
        link = classify(parts, self._handed.get(name))
        chain = self._chains.get(name)
        if chain is not None and link in (SAME, VIEW) and len(chain.inputs) == len(chain.outputs):
            if chain.aliased:  # the recurrence reads the raw output, the user the alias
                raw = chain.raw
                if link == VIEW:
                    raw = tuple(r.view(p.shape) for r, p in zip(raw, parts, strict=True))
                state = raw if chain.tuple_state else raw[0]
                if in_args:
                    args = (args[0], state, *args[2:])
                else:
                    kwargs = {**kwargs, "hx": state}
        else:
            chain = CellChain(module, state, next(self._seq), link)
            self._chains[name] = chain
            self._add_to_window(name, chain)
        x = args[0] if args else kwargs["input"]
        if chain.aliased:  # a custom cell is re-run by the analysis: replay its random draws
            chain.rng.append(save_rng_state(x))
        chain.inputs.append(x)
        return args, kwargs

    def _cell_post(self, name: str, chain: CellChain, output):
        parts = components(output)
        if not _state_like(parts, chain.initial):
            self._chains[name] = None
            self._refused.add(name)
            self._warn(name, "contract", f"returned {_describe(output)} for a state of "
                       f"{_describe(chain.initial)}: rnn_diag follows a cell called as "
                       "cell(x_t, state) -> new state, the state second and the new state (a "
                       "tensor, or a tuple of tensors shaped like the state) returned alone. "
                       "Not recorded; wrap the cell in a module of that form and probe that.")
            return None
        chain.tuple_state = isinstance(output, (tuple, list))
        x = chain.inputs.pop()
        chain.record(x, parts)
        watched = tuple(p.view_as(p) for p in parts) if chain.aliased else parts
        if parts[0].requires_grad:
            step = len(chain.outputs) - 1
            for i, tensor in enumerate(watched):
                tensor.register_hook(self._cell_grad_hook(name, chain, step, i, len(parts)))
        self._handed[name] = Handed.of(watched)
        if not chain.aliased:
            return None
        return watched if chain.tuple_state else watched[0]

    def _cell_grad_hook(self, name: str, chain: CellChain, step: int, i: int, n: int):
        def hook(grad):
            if self._begin_backward():
                chain.grads.setdefault(step, [None] * n)[i] = grad
                chain.grads_seen = True
                self._reached.setdefault(name, {})[id(chain)] = chain
            return None

        return hook

    def _scan_call_allowed(self, name: str) -> bool:
        """Whether a scan call now is one to record: grad on, attached, and not a recomputation
        inside backward (non-reentrant checkpointing: the forward's own call is the record)."""
        if not self._recording():
            return False
        if _in_backward():
            self._recomputed.add(name)
            self._schedule_end()
            return False
        return True

    def _scan_point_hooks(self, name: str, layer: int):
        """Hooks on a ScanLayer's ``self.scan(a, b, h0)``: keep a_t, and the gradient that
        reaches the returned states (the immediate gradient, docs/design.md §23)."""

        def pre(module, args, kwargs):
            return None

        def post(module, args, kwargs, states):
            if not self._scan_call_allowed(name):
                return None
            try:
                decay = args[0] if args else kwargs["a"]
                if not (isinstance(states, Tensor) and states.requires_grad):
                    return None
                call = ScanPointCall(layer, next(self._seq), decay.detach(), states.detach(),
                                     (decay._version, states._version))

                def hook(grad, call=call):
                    if self._begin_backward():
                        call.grad = grad
                        self._reached.setdefault(name, {})[id(call)] = call

                states.register_hook(hook)
            except Exception as error:  # noqa: BLE001 - never raise into the user's forward
                self._warn(name, "internal", f"the probe could not record a call ({error!r})")
            return None

        return pre, post

    def _adapter_hooks(self, name: str, layer: int, adapter):
        """Hooks on a layer registered with ``register_scan``: keep its arguments and the
        random state it started from; receive the gradients reaching its outputs."""
        pending: list = []

        def pre(module, args, kwargs):
            pending.clear()
            if not self._scan_call_allowed(name):
                return None
            try:
                x = next((t for t in (*args, *kwargs.values()) if isinstance(t, Tensor)), None)
                pending.append(None if x is None else save_rng_state(x))
            except Exception as error:  # noqa: BLE001
                self._warn(name, "internal", f"the probe could not inspect a call ({error!r})")
            return None

        def post(module, args, kwargs, output):
            if not pending:
                return None
            rng = pending.pop()
            try:
                outputs = output_tensors(output)
                if not any(t.requires_grad for t in outputs):
                    return None
                args_, kwargs_, outs = detached(args), detached(kwargs), detached(outputs)
                call = AdapterCall(layer, next(self._seq), module, adapter, args_, kwargs_,
                                   outs, tensor_versions(args_, kwargs_, outs), rng,
                                   [None] * len(outputs))
                for i, tensor in enumerate(outputs):
                    if tensor.requires_grad:
                        tensor.register_hook(self._adapter_grad_hook(name, call, i))
            except Exception as error:  # noqa: BLE001
                self._warn(name, "internal", f"the probe could not record a call ({error!r})")
            return None

        return pre, post

    def _adapter_grad_hook(self, name: str, call: AdapterCall, i: int):
        def hook(grad):
            if self._begin_backward():
                call.grads[i] = grad
                self._reached.setdefault(name, {})[id(call)] = call

        return hook

    def _analyse_scans(self, name: str, entries: dict) -> dict[tuple[int, int], LayerResult]:
        """Every recorded call of a scan module's layers in this backward: one series per
        layer, its calls end to end in call order."""
        calls = sorted(entries.values(), key=lambda c: c.seq)
        by_layer: dict[int, list] = {}
        for call in calls:
            by_layer.setdefault(call.layer, []).append(call)
        if any(len(v) > 1 for v in by_layer.values()):
            self._warn(name, "scan-calls", "a scan layer ran several times in one forward; its "
                       "calls are laid end to end in call order, each call's recursion starting "
                       "at its own last step (gradients one call's outputs received from the "
                       "next call count as immediate there)")
        results = {}
        for layer, layer_calls in sorted(by_layer.items()):
            parts = []
            for call in layer_calls:
                if isinstance(call, ScanPointCall):
                    parts.append(analyse_scan_point(call, self._options))
                else:
                    parts.append(analyse_adapter_call(call, self._options, name))
            result = concat(parts)
            result.settle_underflow()
            results[(layer, 0)] = result
        return results

    def _add_to_window(self, name: str, entry) -> None:
        """Remember a call until the end of the next backward. The calls of the current
        sequence are held strongly, so that steps no gradient reaches (before a ``detach()``)
        are still in the series; earlier sequences only weakly, so a forward that is never
        backpropagated (validation with grad on) is freed with its graph."""
        window = self._window.setdefault(name, [])
        if len(window) >= 64 and len(window) % 64 == 0:
            window[:] = [ref for ref in window if ref() is not None]
        window.append(weakref.ref(entry))
        held = self._held.setdefault(name, [])
        if entry.link == FRESH:
            held.clear()
        elif len(held) >= MAX_HELD_CALLS:  # a never-ending sequence without backward
            del held[: MAX_HELD_CALLS // 2]
        held.append(entry)

    def _warn(self, name: str, reason: str, message: str) -> None:
        if (name, reason) in self._warned:
            return
        self._warned.add((name, reason))
        text = f"rnn_diag: module {name or '<root>'!r}: {message}"
        self.warnings.append(text)
        warnings.warn(text, ProbeWarning, stacklevel=3)

    def _warn_subsampled(self, name: str, results: dict[tuple[int, int], LayerResult]) -> None:
        """Once per probe: say that the default ``jacobian_samples="auto"`` left samples out."""
        if not self._options.auto_samples or ("", "jacobian_samples") in self._warned:
            return
        for result in results.values():
            if result.jacobian is None:
                continue
            n, batch = result.jacobian.shape[1], result.total["h"].log_norm.shape[1]
            if n < batch:
                self._warned.add(("", "jacobian_samples"))
                warnings.warn(
                    f"rnn_diag: module {name or '<root>'!r}: Jacobian-product norms are "
                    f"computed on the first {n} of {batch} samples (the default, "
                    f"jacobian_samples='auto', keeps their cost small); pass "
                    f"attach(..., jacobian_samples=N) for another number, or "
                    f"jacobian_samples=None for all {batch}", ProbeWarning, stacklevel=3)
                return

    # ---------------------------------------------------------------- backward bookkeeping
    def _begin_backward(self) -> bool:
        """Called from every gradient hook; the first call of a backward pass schedules the
        analysis for the end of that pass. Returns whether this pass is recorded."""
        if not self._attached:
            return False
        self._schedule_end()
        return self._backwards % self._every == 0

    def _schedule_end(self) -> None:
        """Run :meth:`_end_backward` once the current backward pass has finished."""
        if not self._in_backward:
            self._in_backward = True
            torch.autograd.Variable._execution_engine.queue_callback(self._end_backward)

    def _end_backward(self) -> None:
        iteration = self._backwards
        self._backwards += 1
        self._in_backward = False
        reached, self._reached = self._reached, {}
        windows, self._window = self._window, {}
        held, self._held = self._held, {}  # keeps this sequence's calls alive until analysed
        recomputed, self._recomputed = self._recomputed, set()
        for name in recomputed - set(reached):
            self._warn(name, "reentrant", "it ran only during the backward pass (a reentrant "
                       "torch.utils.checkpoint runs the forward without grad, then recomputes "
                       "it inside backward), where its calls cannot be joined into the "
                       "forward's series: not recorded. Use checkpoint(..., "
                       "use_reentrant=False), which the probe follows exactly.")
        for name, entries in reached.items():
            if name in self._scan_layers:
                self._end_scans(iteration, name, entries)
                continue
            if name in self._refused:
                continue
            window = [e for e in (ref() for ref in windows.get(name, [])) if e is not None]
            series = _series_entries(window, entries)
            try:
                with torch.no_grad(), flush_denormals():
                    results = self._analyse_series(name, series)
            except (ReplayMismatch, StaleRecord) as error:
                self._warn(name, type(error).__name__, f"not recorded: {error}")
                continue
            except Exception as error:  # noqa: BLE001 - never raise into the user's backward
                self._warn(name, "internal", f"not recorded: the analysis failed ({error!r})")
                continue
            finally:
                for entry in series:
                    if isinstance(entry, CellChain):
                        entry.grads.clear()
                        entry.grads_seen = False
                    else:
                        entry.grads = None
            self._store(iteration, name, results)
        del held

    def _end_scans(self, iteration: int, name: str, entries: dict) -> None:
        try:
            with torch.no_grad(), flush_denormals():
                results = self._analyse_scans(name, entries)
        except StaleRecord as error:
            self._warn(name, "StaleRecord", f"not recorded: {error}")
            return
        except Exception as error:  # noqa: BLE001 - never raise into the user's backward
            self._warn(name, "internal", f"not recorded: the analysis failed ({error!r})")
            return
        finally:
            for call in entries.values():  # the gradients are this backward's only
                if isinstance(call, ScanPointCall):
                    call.grad = None
                else:
                    call.grads = [None] * len(call.grads)
        self._store(iteration, name, results)

    def _analyse_series(self, name: str, series: list) -> dict[tuple[int, int], LayerResult]:
        """One time series, in call order, from the calls of one module in this backward."""
        links = [entry.link for entry in series[1:]] + [None]
        if TRANSFORM in links:
            self._warn(name, "transform", "the state handed from one call to the next is "
                       "transformed (not the returned tensor or a view of it, e.g. a mask or a "
                       "slice): across those links the series holds autograd's values in the "
                       "model's dtype (a norm below its range reads as -inf), and the immediate "
                       "gradient of the step before each such link is NaN (undefined)")
        if any(link == FRESH for link in links[:-1]):
            self._warn(name, "fresh", "it ran several separate sequences (calls whose state "
                       "does not come from the previous call) in one backward; they are laid "
                       "end to end in call order in one series")
        bidirectional = getattr(getattr(series[0], "module", None), "bidirectional", False)
        if bidirectional and any(link in (SAME, VIEW) for link in links[:-1]):
            self._warn(name, "bidirectional", "a bidirectional module hands its state from one "
                       "call to the next, but its reverse direction runs against call order, "
                       "so the calls are not joined: the series holds autograd's values at "
                       "each call's ends, and the immediate gradient there is NaN")
        if isinstance(series[0], CellChain):
            parts = []
            for i, chain in enumerate(series):
                result = chain.analyse(self._options)
                if i + 1 < len(series) and series[i + 1].link == TRANSFORM:
                    mark_last_immediate_undefined(result)  # its gradient went on, transformed
                parts.append({(0, 0): result})
        else:
            for call in series:
                if _versions(call.input, call.hx, call.output, call.finals) != call.versions:
                    raise StaleRecord(
                        "an input, initial state or output was modified in place after the "
                        "call, so its recorded values are lost; use out-of-place operations"
                    )
            parts = analyse_fused_calls(series, self._options, self._workspace)
        if len(parts) == 1:
            results = parts[0]
        else:
            results = {key: concat([part[key] for part in parts]) for key in parts[0]}
        for result in results.values():
            result.settle_underflow()
        return results

    def _store(self, iteration: int, name: str, results: dict[tuple[int, int], LayerResult]):
        self._latest[name] = results
        self._warn_subsampled(name, results)
        for (layer, direction), result in sorted(results.items()):
            self._history.add(iteration, name, layer, direction, result.summary())


def _series_entries(window: list, reached: dict) -> list:
    """The calls that form this backward's series, in call order: every call a gradient
    reached, plus the calls of the same sequences that none reached (they get zeros). A run of
    calls linked by anything but a fresh state is one sequence; sequences that no gradient
    reached at all (another forward's) are left out."""
    entries = {id(e): e for e in window}
    entries.update(reached)
    ordered = sorted(entries.values(), key=lambda e: e.seq)
    keep, run, run_reached = [], [], False
    for entry in ordered:
        if entry.link == FRESH and run:
            if run_reached:
                keep.extend(run)
            run, run_reached = [], False
        run.append(entry)
        run_reached = run_reached or id(entry) in reached
    if run_reached:
        keep.extend(run)
    return keep


def _output_is_h(module: nn.Module, call: FusedCall) -> bool:
    """Whether the call's ``output`` holds exactly h_n's values, so that user code may hand it
    on as the next state: one step, one layer, one direction, no packing, no dropout."""
    return (module.num_layers == 1 and not module.bidirectional and call.rng is None
            and isinstance(call.output, Tensor) and call.time_major(call.output)[0].shape[0] == 1)


def _state_like(parts: tuple, state: tuple | None) -> bool:
    """Whether a cell's output has the form of a state (tensors only), shaped like the state
    it received (when it received one)."""
    if not parts or not all(isinstance(p, Tensor) for p in parts):
        return False
    if state is None:
        return True
    return len(parts) == len(state) and all(
        p.shape == s.shape for p, s in zip(parts, state, strict=True)
    )


def _describe(x) -> str:
    if x is None:
        return "no state"
    if isinstance(x, Tensor):
        return f"a tensor {list(x.shape)}"
    if isinstance(x, (tuple, list)):
        if len(x) == 1:
            return _describe(x[0])
        return "(" + ", ".join(_describe(v) for v in x) + ")"
    return type(x).__name__


def _in_backward() -> bool:
    """Whether an autograd backward pass is running on this thread."""
    current = getattr(torch._C, "_current_graph_task_id", None)
    return current is not None and current() != -1


def _autocast(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: one query per device type
        if device_type == "cpu":
            return torch.is_autocast_cpu_enabled()
        return device_type == "cuda" and torch.is_autocast_enabled()


def _detached(x):
    """``x`` (a tensor, a PackedSequence, a tuple of tensors or None) without its graph."""
    if x is None:
        return None
    if isinstance(x, PackedSequence):
        return PackedSequence(x.data.detach(), x.batch_sizes, x.sorted_indices,
                              x.unsorted_indices)
    if isinstance(x, (tuple, list)):
        return tuple(_detached(t) for t in x)
    return x.detach()


def _versions(*tensors) -> tuple[int, ...]:
    flat = []
    for t in tensors:
        if isinstance(t, PackedSequence):
            t = t.data
        if isinstance(t, (tuple, list)):
            flat.extend(x._version for x in t if isinstance(x, Tensor))
        elif isinstance(t, Tensor):
            flat.append(t._version)
    return tuple(flat)


def _lengths(valid: Tensor | None) -> Tensor | None:
    return None if valid is None else valid.sum(0)

