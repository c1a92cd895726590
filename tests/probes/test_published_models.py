"""rnn_diag on recurrent code written the way published projects write it.

Each model in tests/probes/published_models.py copies a well-known source (the PyTorch seq2seq
tutorial, CleanRL's PPO-LSTM, sgrvinod's Show-Attend-and-Tell, the PyTorch word language model,
a packed BiLSTM tagger, PyTorch's time-sequence-prediction example). They call recurrent modules
in loops, hand the state on unchanged, masked, sliced or detached, use dropout in training mode
and optimizers that call the model several times per step. The contract tested here:

* every probed module gives ONE time series per forward, in call order (a fused call on L steps
  contributes L steps); ``hidden_grads`` is ``[T_total, B_max, H]``, rows padded with zeros
  where a call had a smaller batch (row i stays row i), log10 norms ``-inf`` there;
* the total gradient at each step is what plain autograd delivers to the state that call
  returned, through every path; for LSTM ``state="c"`` it includes the path through
  h_t = o_t tanh(c_t);
* log10 norms stay finite far below float range where the state is handed on as is (or as a
  view); elsewhere they are autograd's values (``-inf`` where those underflow, never a false
  finite number);
* ``immediate_grads`` is either NaN (split undefined) or right, and equals the total at the
  last step;
* parameter gradients, and the user's RNG stream, are bitwise those of the unprobed model.

Truths (none uses rnn_diag; each is checked on its own by a ``test_truth_*`` test, which passes
whatever the state of the probe):

* ``Retainer``: ``retain_grad()`` on every tensor a probed module returns, in an unprobed copy
  run on the same inputs and RNG state. For a cell this is the total gradient of h_t (and, for
  ``nn.LSTMCell`` on CPU, of c_t including the h path: checked against the reference unroll).
  For a fused module called on one step, h_t is both ``output`` and ``h_n``, so its total is
  ``output.grad + h_n.grad``.
* ``ExplicitLSTM``: the unprobed model with its ``nn.LSTM`` replaced by a float64 stand-in that
  unrolls the documented equations and retains every h_t and c_t (total c_t including the h
  path, which a fused module's ``c_n.grad`` does not show). Its inter-layer dropout draws the
  same random numbers as ``nn.LSTM`` (checked).
* ``reference.unroll_fused`` (tests/probes/reference.py) for the packed bidirectional tagger.
* A float64 log-space adjoint written here for the long-sequence dynamic-range tests.

All models are float64 (tolerance 1e-9 relative to the batch's largest truth norm at each t),
except the dynamic-range tests, which also run float32.
"""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from published_models import (
    Agent,
    BiLSTMTagger,
    DecoderWithAttention,
    ExplicitLSTM,
    Retainer,
    RNNModel,
    Sequence,
    Translator,
    caption_loss,
    cell_truth,
    fused_per_step_truth,
    get_batch,
    grad_or_zeros,
    lm_train_batch,
    ppo_loss,
    ppo_minibatch,
    ppo_rollout,
    repackage_hidden,
    sine_data,
)
from reference import unroll_cell_loop, unroll_fused
from torch import Tensor, nn

import rnn_diag as rd

F64 = torch.float64
RTOL = 1e-9  # float64 models: relative to the largest truth norm over the batch at t
LOG_TOL = 1e-9  # float64 models: decades
TRUTH_TOL = dict(rtol=1e-10, atol=1e-12)  # a truth stand-in vs the real float64 model


# ======================================== comparison helpers


def assert_series(got: Tensor, want: Tensor, what: str, rtol: float = RTOL, present=None):
    """got (probe) vs want (float64 truth), both [T, B, H]: at each t, every sample's error norm
    is at most rtol x the largest truth norm over the batch at t (or, where the truth is zero for
    the whole batch at t, x the largest truth norm overall). ``present`` [T, B] (bool): rows a
    call did not have must be exactly zero in ``got``."""
    assert tuple(got.shape) == tuple(want.shape), (
        f"{what}: shape {tuple(got.shape)}, want {tuple(want.shape)}"
    )
    got64 = got.detach().double()
    assert torch.isfinite(got64).all(), f"{what}: non-finite values at t=" + str(
        (~torch.isfinite(got64)).any(-1).any(-1).nonzero().flatten().tolist()
    )
    if present is not None:
        pad = got64[~present]
        assert (pad == 0).all(), f"{what}: rows missing from a call must be 0"
    err = (got64 - want).norm(dim=-1)
    norms = want.norm(dim=-1)
    scale = norms.amax(dim=1, keepdim=True)
    scale = torch.where(scale > 0, scale, norms.max()).clamp(min=1e-300)
    rel = err / scale
    if rel.max() > rtol:
        t, b = divmod(int(rel.argmax()), rel.shape[1])
        pytest.fail(
            f"{what}: relative error {float(rel.max()):.3g} > {rtol:g} at t={t}, b={b}: "
            f"|got|={float(got64[t, b].norm()):.6g}, |want|={float(norms[t, b]):.6g}; "
            f"per-t max rel err: {[f'{v:.1e}' for v in rel.amax(1).tolist()]}"
        )


def assert_log_norms(got: Tensor, want: Tensor, what: str, tol: float = LOG_TOL):
    """got: probe log10 norms [T, B] float64; want: float64 truth vectors [T, B, H] (small T, so
    their norms are representable). -inf exactly where the truth is exactly zero (including rows
    a call did not have), otherwise within ``tol`` decades."""
    assert got.dtype == F64, f"{what}: dtype {got.dtype}, want float64"
    assert tuple(got.shape) == tuple(want.shape[:2]), (
        f"{what}: shape {tuple(got.shape)}, want {tuple(want.shape[:2])}"
    )
    norms = want.norm(dim=-1)
    zero = norms == 0
    bad_inf = zero & ~torch.isneginf(got)
    assert not bad_inf.any(), (
        f"{what}: truth exactly 0 but log10 norm {got[bad_inf][:5].tolist()} at (t, b) "
        f"{bad_inf.nonzero()[:5].tolist()}"
    )
    ok = ~zero
    diff = (got[ok] - norms[ok].log10()).abs().nan_to_num(math.inf)
    if diff.numel() and diff.max() > tol:
        pytest.fail(
            f"{what}: max |log10 error| {float(diff.max()):.3g} decades > {tol:g}; "
            f"got {got.tolist()}, want {norms.log10().tolist()}"
        )


def assert_immediate_sound(got: Tensor, want: Tensor, total: Tensor, what: str, rtol=RTOL):
    """``immediate_grads`` [T, B, H] vs the truth g_t: at each step either NaN (the split is
    undefined there) or equal to the truth within rtol x the total gradient's batch scale at t
    (g_t may be recovered by subtraction). At the last step it must be finite and equal the
    total gradient."""
    assert tuple(got.shape) == tuple(want.shape), f"{what}: shape {tuple(got.shape)}"
    got64 = got.detach().double()
    nan_t = torch.isnan(got64).any(-1)  # [T, B]
    assert not nan_t[-1].any(), f"{what}: NaN at the last step"
    torch.testing.assert_close(want[-1], total[-1], rtol=1e-12, atol=0)  # the truth itself
    scale = total.norm(dim=-1).amax(dim=1).clamp(min=1e-300)  # [T]
    err = (got64 - want).norm(dim=-1) / scale[:, None]
    err = torch.where(nan_t, torch.zeros_like(err), err)
    if err.max() > rtol:
        t, b = divmod(int(err.argmax()), err.shape[1])
        pytest.fail(
            f"{what}: a confident wrong immediate gradient: relative error "
            f"{float(err.max()):.3g} at t={t}, b={b}; per-t: {err.amax(1).tolist()}"
        )


def assert_same_param_grads(probed: nn.Module, plain: nn.Module, what: str = ""):
    """Bitwise equal ``.grad`` of every parameter (None where None)."""
    for (name, p), (_, q) in zip(probed.named_parameters(), plain.named_parameters()):
        assert (p.grad is None) == (q.grad is None), f"{what}{name}: grad None mismatch"
        if p.grad is not None and not torch.equal(p.grad, q.grad):
            d = (p.grad - q.grad).abs().max()
            pytest.fail(f"{what}{name}: grads differ with the probe (max |diff| {float(d):.3g})")


def assert_same_params(probed: nn.Module, plain: nn.Module, what: str = ""):
    for (name, p), (_, q) in zip(probed.named_parameters(), plain.named_parameters()):
        if not torch.equal(p, q):
            d = (p - q).abs().max()
            pytest.fail(f"{what}{name}: parameters differ with the probe (max {float(d):.3g})")


def log10_norms(x: Tensor) -> np.ndarray:
    """[T, B, H] -> [T, B] float64 log10 L2 norms, scaled first so tiny values cannot underflow
    in the squares; -inf for a zero vector."""
    x = x.detach().double().numpy()
    m = np.abs(x).max(axis=-1)
    safe = np.where(m > 0, m, 1.0)
    with np.errstate(divide="ignore"):
        return np.log10(m) + np.log10(np.linalg.norm(x / safe[..., None], axis=-1))


def frame_series(probe, module: str, metric: str, state: str = "h", layer: int = 0):
    """Values of one metric of the latest recorded backward over t; checks t = 0..T-1."""
    df = probe.frame()
    rows = df[
        (df.iteration == df.iteration.max())
        & (df.module == module)
        & (df.metric == metric)
        & (df.state == state)
        & (df.layer == layer)
        & (df.direction == 0)
    ].sort_values("t")
    np.testing.assert_array_equal(rows["t"].to_numpy(), np.arange(len(rows)))
    return rows["value"].to_numpy()


def check_frame_over_present_rows(probe, module: str, truth: Tensor, present: Tensor):
    """frame(): t = 0..T_total-1, and total_mean/min/max aggregate only the rows present at t."""
    logs = log10_norms(truth)
    for stat, fn in (("mean", np.mean), ("min", np.min), ("max", np.max)):
        want = np.array([fn(logs[t][present[t].numpy()]) for t in range(logs.shape[0])])
        got = frame_series(probe, module, f"total_{stat}")
        assert got.shape == want.shape, f"frame total_{stat}: {got.shape} steps, want {want.shape}"
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9, err_msg=f"total_{stat}")


# ======================================== 1. seq2seq decoder

S2S = dict(in_vocab=20, out_vocab=15, hidden_size=16, max_length=10)
S2S_B, S2S_SRC = 4, 7


def _s2s_setup():
    torch.manual_seed(0)
    model = Translator(**S2S).double().train()
    gen = torch.Generator().manual_seed(1)
    src = torch.randint(1, S2S["in_vocab"], (S2S_B, S2S_SRC), generator=gen)
    tgt = torch.randint(1, S2S["out_vocab"], (S2S_B, S2S["max_length"]), generator=gen)
    return model, src, tgt


def _record_encoder_input(model):
    def hook(module, args):
        model._enc_in = args[0].detach()

    model.encoder.gru.register_forward_pre_hook(hook)


def _s2s_truth_run(model, src, tgt):
    """Unprobed copy, same RNG stream (dropout 0.1): retained returns of both GRUs and of the
    attention's query (the decoder state's use outside the recurrence). Returns (copy, loss,
    decoder total [T, B, H], decoder immediate g_t, encoder reference, encoder output)."""
    truth = copy.deepcopy(model)
    _record_encoder_input(truth)
    dec, enc = Retainer(truth.decoder.gru), Retainer(truth.encoder.gru)
    queries = []

    def keep_query(module, args):
        args[0].retain_grad()
        queries.append(args[0])

    truth.decoder.attention.register_forward_pre_hook(keep_query)
    torch.manual_seed(2)
    loss = truth(src, tgt)
    loss.backward()
    total = fused_per_step_truth(dec, batch_first=True)
    # g_t: the output at t plus the attention query built from h_t at step t+1 (h_T unused)
    outs = torch.stack([grad_or_zeros(c[0]).detach()[:, 0] for c in dec.calls])
    q_next = torch.stack([grad_or_zeros(q).detach()[:, 0] for q in queries[1:]])
    imm = outs.clone()
    imm[:-1] += q_next
    imm[-1] += grad_or_zeros(dec.calls[-1][1]).detach()[0]
    # encoder: the reference unroll on the encoder GRU's own input, with a surrogate loss
    # <output, dL/doutput> + <h_n, dL/dh_n> that has the same gradient w.r.t. its states
    enc_out, enc_hn = enc.calls[0]
    ref = unroll_fused(truth.encoder.gru, truth._enc_in)
    surrogate = (ref.output * grad_or_zeros(enc_out).detach().transpose(0, 1)).sum() + (
        ref.h_n * grad_or_zeros(enc_hn).detach()
    ).sum()
    surrogate.backward()
    return truth, loss, total, imm, ref, enc_out


def test_truth_seq2seq():
    """Truth side of the seq2seq test: the decoder's per-call truth has one step per decoder
    step; the split total = immediate + J^T total_{t+1} holds with the GRU's own vjp; the encoder
    reference reproduces the encoder GRU's output."""
    model, src, tgt = _s2s_setup()
    truth, loss, total, imm, ref, enc_out = _s2s_truth_run(model, src, tgt)
    T, H = S2S["max_length"], S2S["hidden_size"]
    assert total.shape == (T, S2S_B, H) and imm.shape == total.shape
    assert (total.norm(dim=-1) > 0).all()
    torch.testing.assert_close(ref.output, enc_out.detach().transpose(0, 1), **TRUTH_TOL)
    # recurrence part by the GRU's vjp: total_t - imm_t = J_{t+1}^T total_{t+1}
    gru = truth.decoder.gru
    inputs = []  # each call's (input, hx), recorded in a second pass with the same RNG
    gru.register_forward_pre_hook(lambda m, a: inputs.append((a[0].detach(), a[1].detach())))
    torch.manual_seed(2)
    truth(src, tgt)
    for t in range(T - 1):
        x_next, h_t = inputs[t + 1]
        h_t = h_t.clone().requires_grad_()
        (vjp,) = torch.autograd.grad(gru(x_next, h_t)[1], h_t, total[t + 1].unsqueeze(0))
        torch.testing.assert_close(imm[t] + vjp[0], total[t], **TRUTH_TOL)


def test_seq2seq_attention_decoder_gru_called_per_step():
    """PyTorch seq2seq tutorial: AttnDecoderRNN calls ``nn.GRU(batch_first=True)`` once per
    decoder step (Bahdanau attention on the previous hidden state, teacher forcing, dropout 0.1
    in train mode), handing the returned hidden state to the next call unchanged.

    Truth: in an unprobed copy with the same RNG, ``retain_grad()`` on each call's output and
    h_n (their sum is the total for the step); g_t = output.grad + the grad of the next step's
    attention query. Encoder GRU: reference unroll with a surrogate loss from the real model's
    dL/d(encoder output, h_n). Loss and parameter gradients must be bitwise unchanged."""
    model, src, tgt = _s2s_setup()
    plain = copy.deepcopy(model)
    _, loss_t, total, imm, ref, _ = _s2s_truth_run(model, src, tgt)

    torch.manual_seed(2)
    plain(src, tgt).backward()
    with rd.attach(model) as probe:
        torch.manual_seed(2)
        loss = model(src, tgt)
        loss.backward()
    assert sorted(probe.modules) == ["decoder.gru", "encoder.gru"]
    assert torch.equal(loss, loss_t)
    assert_same_param_grads(model, plain)

    T, H = S2S["max_length"], S2S["hidden_size"]
    got = probe.hidden_grads("decoder.gru")
    assert got.shape == (T, S2S_B, H), f"one step per decoder call: {tuple(got.shape)}"
    assert_series(got, total, "decoder.gru hidden_grads")
    assert_log_norms(probe.hidden_grad_log10_norms("decoder.gru"), total, "decoder.gru log10")
    assert_immediate_sound(probe.immediate_grads("decoder.gru"), imm, total, "decoder.gru imm")
    np.testing.assert_array_equal(
        sorted(set(probe.frame().query("module == 'decoder.gru'").t)), np.arange(T)
    )
    enc_truth = ref.traces[(0, 0)].hidden_grads("h")
    assert_series(probe.hidden_grads("encoder.gru"), enc_truth, "encoder.gru hidden_grads")


# ======================================== 2. CleanRL PPO-LSTM

PPO = dict(num_steps=16, num_envs=8, obs_size=10, n_actions=3)
PPO_MB_ENVS = torch.tensor([5, 2, 7, 0])  # one of CleanRL's env-wise minibatches


def _ppo_setup():
    torch.manual_seed(0)
    agent = Agent(PPO["obs_size"], PPO["n_actions"]).double()
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(4)  # action sampling
    args = (PPO["num_steps"], PPO["num_envs"], PPO["obs_size"], gen)
    _, state = ppo_rollout(agent, *args)  # a first rollout: a non-zero initial LSTM state
    mb, _ = ppo_rollout(agent, *args, next_lstm_state=state)
    mb = ppo_minibatch(mb, PPO["num_envs"], PPO_MB_ENVS)
    dones = mb["dones"].reshape(PPO["num_steps"], -1)
    assert dones[1:].any() and (dones[1:] == 0).all(1).any(), "premise: some resets, not all"
    return agent, mb


def _ppo_truth(agent, mb):
    """Total dL/dh_t, dL/dc_t of every ``self.lstm`` call: the unprobed agent with its LSTM
    replaced by ExplicitLSTM; also output.grad + h_n.grad from retained returns of the real
    nn.LSTM (h only), and each call's output.grad (g_t: its only use outside the recurrence)."""
    explicit = copy.deepcopy(agent)
    explicit.lstm = ExplicitLSTM(agent.lstm)
    loss_e = ppo_loss(explicit, mb)
    loss_e.backward()
    real = copy.deepcopy(agent)
    ret = Retainer(real.lstm)
    loss_r = ppo_loss(real, mb)
    loss_r.backward()
    out_grads = torch.stack([grad_or_zeros(c[0]).detach()[0] for c in ret.calls])
    return explicit, loss_e, real, loss_r, ret, out_grads


def test_truth_ppo():
    """Truth side of the PPO test: the explicit stand-in reproduces the real model's loss and
    non-LSTM parameter gradients; its h totals equal output.grad + h_n.grad of the real
    nn.LSTM's retained returns; masked steps cut the path as expected."""
    agent, mb = _ppo_setup()
    explicit, loss_e, real, loss_r, ret, _ = _ppo_truth(agent, mb)
    torch.testing.assert_close(loss_e, loss_r, **TRUTH_TOL)
    for name in ("network.0.weight", "actor.weight", "critic.weight"):
        torch.testing.assert_close(
            explicit.get_parameter(name).grad, real.get_parameter(name).grad, **TRUTH_TOL
        )
    T, B, H = PPO["num_steps"], len(PPO_MB_ENVS), agent.lstm.hidden_size
    h_truth = explicit.lstm.truth(state="h")
    assert h_truth.shape == (T, B, H)
    torch.testing.assert_close(h_truth, fused_per_step_truth(ret, batch_first=False), **TRUTH_TOL)
    c_truth = explicit.lstm.truth(state="c")
    # c total includes the h path: it differs from the fused c_n.grad wherever h is used
    c_n_grads = torch.stack([grad_or_zeros(c[2]).detach()[0] for c in ret.calls])
    assert (c_truth - c_n_grads).abs().max() > 1e-6
    # a reset before step t+1 leaves h_t, c_t only their direct gradient
    dones = mb["dones"].reshape(T, B)
    t, b = (dones[1:] == 1).nonzero()[0].tolist()
    out_grads = torch.stack([grad_or_zeros(c[0]).detach()[0] for c in ret.calls])
    torch.testing.assert_close(h_truth[t, b], out_grads[t, b], **TRUTH_TOL)
    assert (c_truth[t, b] - c_n_grads[t, b]).abs().max() > 0  # c_T's h path is still there


def test_ppo_lstm_with_done_masks():
    """CleanRL ppo_atari_lstm: ``get_states`` runs ``nn.LSTM`` once per environment step and
    multiplies the state by ``(1.0 - done)`` before each call; PPO replays the rollout with
    gradient on an env-wise minibatch (clipped surrogate + value loss + entropy).

    Truth: ExplicitLSTM stand-in (totals of h and c, c including the h path); g_t =
    output.grad of each real call. The probe gives one [num_steps, B, H] series; parameter
    gradients are bitwise those of the unprobed agent."""
    agent, mb = _ppo_setup()
    explicit, _, plain, loss_r, _, out_grads = _ppo_truth(agent, mb)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a "cannot join the calls" warning is tested below
        with rd.attach(agent) as probe:
            loss = ppo_loss(agent, mb)
            loss.backward()
    assert torch.equal(loss, loss_r)
    assert_same_param_grads(agent, plain)
    T, B, H = PPO["num_steps"], len(PPO_MB_ENVS), agent.lstm.hidden_size
    for state in ("h", "c"):
        truth = explicit.lstm.truth(state=state)
        got = probe.hidden_grads("lstm", state=state)
        assert got.shape == (T, B, H), f"state {state}: {tuple(got.shape)}"
        assert_series(got, truth, f"lstm hidden_grads state={state}")
        log = probe.hidden_grad_log10_norms("lstm", state=state)
        assert_log_norms(log, truth, f"lstm log10 state={state}")
    h_truth = explicit.lstm.truth(state="h")
    assert_immediate_sound(probe.immediate_grads("lstm"), out_grads, h_truth, "lstm immediate")


def test_ppo_mask_warns_once_naming_the_module():
    """The same PPO replay: the masked state ``(1 - d) * h_n`` is not the tensor the previous
    call returned, so the probe cannot chain the calls in log space. It must say so with a
    UserWarning naming the module ("lstm"), once per forward/backward (not once per call), and
    must not raise."""
    agent, mb = _ppo_setup()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with rd.attach(agent):
            ppo_loss(agent, mb).backward()
    mine = [w for w in caught if issubclass(w.category, UserWarning) and "lstm" in str(w.message)]
    assert len(mine) >= 1, f"no UserWarning naming 'lstm'; got {[str(w.message) for w in caught]}"
    assert len(mine) == 1, f"warned {len(mine)} times: {[str(w.message) for w in mine]}"


# ======================================== 3. Show, Attend and Tell

CAP = dict(attention_dim=10, embed_dim=8, decoder_dim=16, vocab_size=20, encoder_dim=12)
CAP_LENGTHS = [8, 13, 5, 13, 10]  # caption lengths incl. <start>; decode lengths are one less


def _caption_setup():
    torch.manual_seed(0)
    decoder = DecoderWithAttention(**CAP).double().train()  # dropout 0.5 before fc
    gen = torch.Generator().manual_seed(5)
    B = len(CAP_LENGTHS)
    imgs = torch.randn(B, 3, 3, CAP["encoder_dim"], generator=gen, dtype=F64)  # encoder output
    caps = torch.randint(1, CAP["vocab_size"], (B, max(CAP_LENGTHS)), generator=gen)
    caplens = torch.tensor(CAP_LENGTHS).unsqueeze(1)
    return decoder, imgs, caps, caplens


def _caption_truth(decoder, imgs, caps, caplens):
    truth = copy.deepcopy(decoder)
    ret = Retainer(truth.decode_step)
    torch.manual_seed(6)
    loss, decode_lengths = caption_loss(truth, imgs, caps, caplens)
    loss.backward()
    B = len(CAP_LENGTHS)
    T = max(decode_lengths)
    present = torch.tensor([[n > t for n in decode_lengths] for t in range(T)])
    return loss, cell_truth(ret, 0, B), cell_truth(ret, 1, B), present, ret


def test_truth_caption_decoder():
    """Truth side: one call per decode step, batch sizes shrinking with the sorted decode
    lengths; every present row has a non-zero gradient."""
    decoder, imgs, caps, caplens = _caption_setup()
    _, h, c, present, ret = _caption_truth(decoder, imgs, caps, caplens)
    sizes = [call[0].shape[0] for call in ret.calls]
    assert sizes == [5] * 4 + [4] * 3 + [3] * 2 + [2] * 3
    assert h.shape == c.shape == (12, 5, CAP["decoder_dim"])
    assert (h.norm(dim=-1)[present] > 0).all() and (h.norm(dim=-1)[~present] == 0).all()
    assert (c.norm(dim=-1)[present] > 0).all()


def test_caption_decoder_lstmcell_with_shrinking_batch():
    """sgrvinod's Show, Attend and Tell decoder: captions sorted by length, then
    ``h, c = self.decode_step(x[:batch_size_t], (h[:batch_size_t], c[:batch_size_t]))`` with a
    batch that shrinks as captions end; dropout 0.5 in train mode; loss on the packed scores
    plus the doubly stochastic attention term.

    Truth: ``retain_grad()`` on each call's returned h and c in an unprobed copy with the same
    RNG (nn.LSTMCell on CPU computes h from c, so c.grad includes the h path), padded to the
    full batch. Rows a call did not have: 0 and -inf; frame() aggregates present rows only."""
    decoder, imgs, caps, caplens = _caption_setup()
    plain = copy.deepcopy(decoder)
    loss_t, h_truth, c_truth, present, _ = _caption_truth(decoder, imgs, caps, caplens)
    torch.manual_seed(6)
    caption_loss(plain, imgs, caps, caplens)[0].backward()
    with rd.attach(decoder) as probe:
        torch.manual_seed(6)
        loss, _ = caption_loss(decoder, imgs, caps, caplens)
        loss.backward()
    assert probe.modules == ["decode_step"]
    assert torch.equal(loss, loss_t)
    assert_same_param_grads(decoder, plain)
    for state, truth in (("h", h_truth), ("c", c_truth)):
        got = probe.hidden_grads("decode_step", state=state)
        assert_series(got, truth, f"decode_step state={state}", present=present)
        log = probe.hidden_grad_log10_norms("decode_step", state=state)
        assert_log_norms(log, truth, f"decode_step log10 state={state}")
    check_frame_over_present_rows(probe, "decode_step", h_truth, present)


# ======================================== 4. word language model

LM = dict(ntoken=50, ninp=16, nhid=16, nlayers=2, dropout=0.2)
LM_BPTT, LM_BATCH = 35, 20


def _lm_setup():
    torch.manual_seed(0)
    model = (
        RNNModel(
            "LSTM",
            LM["ntoken"],
            LM["ninp"],
            LM["nhid"],
            LM["nlayers"],
            dropout=LM["dropout"],
            tie_weights=True,
        )
        .double()
        .train()
    )
    gen = torch.Generator().manual_seed(7)
    data = torch.randint(0, LM["ntoken"], (2 * LM_BPTT + 1, LM_BATCH), generator=gen)
    return model, data


def _lm_truth(model, hidden, x, y, rng):
    """The model in its current state with its nn.LSTM replaced by ExplicitLSTM, run from the
    same RNG state (same dropout masks): NLL loss, backward; returns (stand-in, loss, log-probs)."""
    truth = copy.deepcopy(model)
    truth.rnn = ExplicitLSTM(model.rnn)
    torch.set_rng_state(rng)
    output, _ = truth(x, repackage_hidden(hidden))
    loss = nn.NLLLoss()(output, y)
    loss.backward()
    return truth.rnn, loss, output


def test_truth_lstm_dropout_masks():
    """nn.LSTM(num_layers=2, dropout=0.2) in train mode on CPU: (a) single-layer nn.LSTMs with
    F.dropout between them reproduce it bitwise from the same RNG state, and leave the RNG in the
    same state; (b) ExplicitLSTM (same F.dropout) matches it to float64 rounding, so its masks are
    the module's."""
    torch.manual_seed(0)
    lstm = nn.LSTM(6, 8, 2, dropout=0.2).double().train()
    x = torch.randn(12, 5, 6, dtype=F64)
    hx = (torch.randn(2, 5, 8, dtype=F64), torch.randn(2, 5, 8, dtype=F64))
    torch.manual_seed(11)
    out, (h_n, c_n) = lstm(x, hx)
    after = torch.rand(5)

    layers = [nn.LSTM(6, 8).double(), nn.LSTM(8, 8).double()]
    with torch.no_grad():
        for k, layer in enumerate(layers):
            for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(layer, n + "_l0").copy_(getattr(lstm, f"{n}_l{k}"))
    torch.manual_seed(11)
    o0, (h0, c0) = layers[0](x, (hx[0][:1], hx[1][:1]))
    o1, (h1, c1) = layers[1](F.dropout(o0, 0.2, True), (hx[0][1:], hx[1][1:]))
    assert torch.equal(o1, out) and torch.equal(torch.cat([h0, h1]), h_n)
    assert torch.equal(torch.cat([c0, c1]), c_n)
    assert torch.equal(torch.rand(5), after)

    explicit = ExplicitLSTM(lstm)
    torch.manual_seed(11)
    out_e, (h_e, c_e) = explicit(x, hx)
    torch.testing.assert_close(out_e, out, **TRUTH_TOL)
    torch.testing.assert_close(h_e, h_n, **TRUTH_TOL)
    torch.testing.assert_close(c_e, c_n, **TRUTH_TOL)
    assert torch.equal(torch.rand(5), after)
    # without dropout the outputs would differ: the masks are really in play
    explicit.eval()
    torch.manual_seed(11)
    assert (explicit(x, hx)[0] - out).abs().max() > 1e-3


def test_truth_word_language_model():
    """Truth side of the LM test: over two [35, 20] batches with repackage_hidden in between,
    the ExplicitLSTM model reproduces the real model's log-probabilities and loss from the same
    RNG state, and both layers' totals are non-zero at every step."""
    model, data = _lm_setup()
    torch.manual_seed(1)
    hidden = model.init_hidden(LM_BATCH)
    for i in range(0, data.size(0) - 1, LM_BPTT):
        x, y = get_batch(data, i, LM_BPTT)
        rng = torch.get_rng_state()
        explicit, loss_t, out_t = _lm_truth(model, hidden, x, y, rng)
        torch.set_rng_state(rng)
        with torch.no_grad():
            out_r, _ = model(x, repackage_hidden(hidden))
        torch.testing.assert_close(out_t, out_r, **TRUTH_TOL)
        for layer in (0, 1):
            for state in ("h", "c"):
                g = explicit.truth(layer, 0, state)
                assert g.shape == (LM_BPTT, LM_BATCH, LM["nhid"])
                assert (g.norm(dim=-1) > 0).all()
        torch.set_rng_state(rng)
        loss, hidden = lm_train_batch(model, hidden, x, y)
        torch.testing.assert_close(loss, loss_t, **TRUTH_TOL)


def test_word_language_model_two_layer_dropout_lstm():
    """PyTorch examples word_language_model: RNNModel('LSTM', nlayers=2, dropout=0.2, tied
    weights) in train mode (nn.Dropout on embeddings and outputs, and the LSTM's own inter-layer
    dropout), trained over two [35, 20] batches with the hidden state carried between them
    through repackage_hidden (detach), gradient clipping and manual SGD.

    Truth, for each batch: ExplicitLSTM in a copy of the unprobed model at the same point, run
    from the same RNG state (its dropout masks are the module's, test_truth_lstm_dropout_masks).
    Checked: layer 0 and layer 1 totals of h and c, the loss, parameter gradients and updated
    parameters bitwise, and the RNG stream (``torch.rand(5)`` after each step) unchanged."""
    model, data = _lm_setup()
    plain = copy.deepcopy(model)
    torch.manual_seed(1)
    rng = torch.get_rng_state()
    hidden_p = model.init_hidden(LM_BATCH)
    hidden_q = plain.init_hidden(LM_BATCH)
    probe = rd.attach(model)
    try:
        for batch, i in enumerate(range(0, data.size(0) - 1, LM_BPTT)):
            x, y = get_batch(data, i, LM_BPTT)
            explicit, _, _ = _lm_truth(plain, hidden_q, x, y, rng)
            torch.set_rng_state(rng)
            loss_q, hidden_q = lm_train_batch(plain, hidden_q, x, y)
            rng_next = torch.get_rng_state()  # the stream the next batch continues from
            rand_q = torch.rand(5)
            torch.set_rng_state(rng)
            loss_p, hidden_p = lm_train_batch(model, hidden_p, x, y)
            rand_p = torch.rand(5)
            assert torch.equal(rand_p, rand_q), f"batch {batch}: the probe moved the RNG stream"
            assert torch.equal(loss_p, loss_q), f"batch {batch}: loss changed"
            assert_same_param_grads(model, plain, f"batch {batch}: ")
            assert_same_params(model, plain, f"batch {batch}: ")
            for layer in (0, 1):
                for state in ("h", "c"):
                    where = f"batch {batch} layer {layer} state {state}"
                    truth = explicit.truth(layer, 0, state)
                    got = probe.hidden_grads("rnn", layer=layer, state=state)
                    assert_series(got, truth, f"hidden_grads {where}")
                    log = probe.hidden_grad_log10_norms("rnn", layer=layer, state=state)
                    assert_log_norms(log, truth, f"log10 {where}")
            rng = rng_next
    finally:
        probe.detach()


def test_lstm_interlayer_dropout_keeps_rng_stream():
    """The RNG stream after one probed training step of the LM equals the stream after the
    same step unprobed, from the same seed: ``torch.rand(5)`` drawn afterwards is bitwise equal
    (the probe must not draw random numbers, e.g. to replay the dropout masks)."""
    model, data = _lm_setup()
    plain = copy.deepcopy(model)
    x, y = get_batch(data, 0, LM_BPTT)
    torch.manual_seed(9)
    lm_train_batch(plain, plain.init_hidden(LM_BATCH), x, y)
    want = torch.rand(5)
    with rd.attach(model):
        torch.manual_seed(9)
        lm_train_batch(model, model.init_hidden(LM_BATCH), x, y)
        got = torch.rand(5)
    assert torch.equal(got, want)


# ======================================== 5. packed BiLSTM tagger

TAG = dict(vocab_size=30, tagset_size=5, embedding_dim=8, hidden_dim=12)
TAG_LENGTHS = [6, 9, 3, 9, 1]


def _tagger_setup():
    torch.manual_seed(0)
    model = BiLSTMTagger(**TAG).double().train()
    gen = torch.Generator().manual_seed(8)
    B, T = len(TAG_LENGTHS), max(TAG_LENGTHS)
    lengths = torch.tensor(TAG_LENGTHS)
    valid = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)  # [B, T]
    sentences = torch.randint(1, TAG["vocab_size"], (B, T), generator=gen) * valid
    tags = torch.randint(0, TAG["tagset_size"], (B, T), generator=gen)
    tags = torch.where(valid, tags, torch.full_like(tags, -100))
    return model, sentences, lengths, tags


def _tagger_loss(scores, tags):
    scores = scores.reshape(-1, scores.size(-1))
    return nn.CrossEntropyLoss(ignore_index=-100)(scores, tags.view(-1))


def _tagger_truth(model, sentences, lengths, tags):
    """reference.unroll_fused on the PackedSequence the LSTM received, followed by the model's own
    head and loss in float64."""
    packed = []
    handle = model.lstm.register_forward_pre_hook(lambda m, a: packed.append(a[0]))
    with torch.no_grad():
        model(sentences, lengths)
    handle.remove()
    ref = unroll_fused(model.lstm, packed[0])
    scores = model.hidden2tag(ref.output.transpose(0, 1))
    loss = _tagger_loss(scores, tags)
    loss.backward()
    model.zero_grad()
    return ref, loss


def test_truth_tagger():
    """Truth side: the reference reproduces the real tagger's loss from the same weights."""
    model, sentences, lengths, tags = _tagger_setup()
    ref, loss_ref = _tagger_truth(model, sentences, lengths, tags)
    loss = _tagger_loss(model(sentences, lengths), tags)
    torch.testing.assert_close(loss_ref, loss, **TRUTH_TOL)
    assert ref.traces[(0, 1)].hidden_grads("c").norm(dim=-1)[0].gt(0).all()


def test_packed_bilstm_tagger():
    """A BiLSTM tagger: ``pack_padded_sequence(embeds, lengths, batch_first=True,
    enforce_sorted=False)`` into ``nn.LSTM(batch_first=True, bidirectional=True)``, padded back
    for a token-level cross-entropy with ignore_index.

    Truth: tests/probes/reference.py ``unroll_fused`` (each sample unrolled on its own, in the
    user's batch order) on the PackedSequence the module received. Both directions, h and c,
    totals and immediates; zero / -inf past each sentence's length."""
    model, sentences, lengths, tags = _tagger_setup()
    plain = copy.deepcopy(model)
    ref, _ = _tagger_truth(plain, sentences, lengths, tags)
    _tagger_loss(plain(sentences, lengths), tags).backward()
    with rd.attach(model) as probe:
        _tagger_loss(model(sentences, lengths), tags).backward()
    assert_same_param_grads(model, plain)
    T = max(TAG_LENGTHS)
    present = torch.arange(T).unsqueeze(1) < torch.tensor(TAG_LENGTHS).unsqueeze(0)  # [T, B]
    for d in (0, 1):
        trace = ref.traces[(0, d)]
        for state in ("h", "c"):
            where = f"direction {d} state {state}"
            kw = dict(direction=d, state=state)
            want = trace.hidden_grads(state)
            assert_series(probe.hidden_grads("lstm", **kw), want, where, present=present)
            assert_log_norms(probe.hidden_grad_log10_norms("lstm", **kw), want, f"log10 {where}")
        assert_series(
            probe.immediate_grads("lstm", direction=d),
            trace.immediate_grads("h"),
            f"immediate direction {d}",
            present=present,
        )


# ======================================== 6. time sequence prediction

SEQ_H, SEQ_FUTURE = 16, 4


def _sequence_setup():
    torch.manual_seed(0)
    seq = Sequence(hidden=SEQ_H).double()
    input, target = sine_data(T=20, L=31 + SEQ_FUTURE, N=5)
    input = input[:, :30]  # 30 observed steps, then SEQ_FUTURE steps fed by the model's output
    return seq, input, target


def _sequence_closure(seq, optimizer, input, target):
    def closure():
        optimizer.zero_grad()
        out = seq(input, future=SEQ_FUTURE)
        loss = nn.MSELoss()(out, target)
        loss.backward()
        return loss

    return closure


def test_truth_sequence():
    """Truth side: both cells are called 30 + 4 times; retained h and c grads are non-zero."""
    seq, input, target = _sequence_setup()
    truth = copy.deepcopy(seq)
    r1, r2 = Retainer(truth.lstm1), Retainer(truth.lstm2)
    nn.MSELoss()(truth(input, future=SEQ_FUTURE), target).backward()
    for ret in (r1, r2):
        for i in (0, 1):
            g = cell_truth(ret, i)
            assert g.shape == (30 + SEQ_FUTURE, input.shape[0], SEQ_H)
            assert (g.norm(dim=-1) > 0).all()


def test_time_sequence_prediction_two_cells_lbfgs():
    """PyTorch examples time_sequence_prediction: two ``nn.LSTMCell`` in a loop over
    ``input.split(1, dim=1)`` (the second fed by the first's h), then "future" steps fed by the
    model's own output, trained with ``optim.LBFGS`` and ``optimizer.step(closure)``.

    Truth: retained h and c of every call of each cell in an unprobed copy (one closure call).
    Then two LBFGS steps (many closure calls each) with and without the probe must leave bitwise
    equal parameters."""
    seq, input, target = _sequence_setup()
    truth = copy.deepcopy(seq)
    r1, r2 = Retainer(truth.lstm1), Retainer(truth.lstm2)
    loss_t = nn.MSELoss()(truth(input, future=SEQ_FUTURE), target)
    loss_t.backward()

    plain = copy.deepcopy(seq)
    opt_q = torch.optim.LBFGS(plain.parameters(), lr=0.8)
    opt_p = torch.optim.LBFGS(seq.parameters(), lr=0.8)
    T = 30 + SEQ_FUTURE
    with rd.attach(seq) as probe:
        loss = _sequence_closure(seq, opt_p, input, target)()  # one closure call
        assert torch.equal(loss, loss_t)
        assert sorted(probe.modules) == ["lstm1", "lstm2"]
        for name, ret in (("lstm1", r1), ("lstm2", r2)):
            for i, state in enumerate("hc"):
                truth_g = cell_truth(ret, i)
                got = probe.hidden_grads(name, state=state)
                assert got.shape == (T, input.shape[0], SEQ_H), f"{name}: {tuple(got.shape)}"
                assert_series(got, truth_g, f"{name} state={state}")
                log = probe.hidden_grad_log10_norms(name, state=state)
                assert_log_norms(log, truth_g, f"{name} log10 state={state}")
        for _ in range(2):
            loss_p = opt_p.step(_sequence_closure(seq, opt_p, input, target))
            loss_q = opt_q.step(_sequence_closure(plain, opt_q, input, target))
            assert torch.equal(loss_p, loss_q)
    assert_same_params(seq, plain)


# ======================================== custom LSTMCell


class PointwiseLSTM(torch.autograd.Function):
    """The pointwise part of an LSTM step as ONE autograd node with a hand-written backward, as
    CUDA's ``_thnn_fused_lstm_cell``: (gates, c_prev) -> (h, c)."""

    @staticmethod
    def forward(ctx, gates, cx):
        i, f, g, o = gates.chunk(4, 1)
        i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
        cy = f * cx + i * g
        tc = cy.tanh()
        ctx.save_for_backward(i, f, g, o, cx, tc)
        return o * tc, cy

    @staticmethod
    def backward(ctx, ghy, gcy):
        i, f, g, o, cx, tc = ctx.saved_tensors
        gc = gcy + ghy * o * (1 - tc * tc)
        gates = torch.cat(
            [
                gc * g * i * (1 - i),
                gc * cx * f * (1 - f),
                gc * i * (1 - g * g),
                ghy * tc * o * (1 - o),
            ],
            1,
        )
        return gates, gc * f


class FunctionLSTMCell(nn.LSTMCell):
    """An nn.LSTMCell whose h and c come out of one autograd.Function node."""

    def forward(self, input, hx=None):
        h, c = hx
        gates = F.linear(input, self.weight_ih, self.bias_ih) + F.linear(
            h, self.weight_hh, self.bias_hh
        )
        return PointwiseLSTM.apply(gates, c)


class UnbindLSTMCell(nn.LSTMCell):
    """An nn.LSTMCell whose h and c come out of one ``unbind`` node."""

    def forward(self, input, hx=None):
        h, c = super().forward(input, hx)
        return torch.stack([h, c]).unbind(0)


def _custom_cell_run(cls, T=10, B=3, I=4, H=8):
    """User loop ``h, c = cell(x[t], (h, c))``, loss on a head of every h plus a term on the final
    c; returns (cell, loss, retainer)."""
    torch.manual_seed(0)
    cell = cls(I, H).double()
    head = nn.Linear(H, 2).double()
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(T, B, I, generator=gen, dtype=F64)
    h = c = torch.zeros(B, H, dtype=F64)
    return cell, head, x, h, c


def _custom_cell_forward(cell, head, x, h, c):
    hs = []
    for t in range(x.shape[0]):
        h, c = cell(x[t], (h, c))
        hs.append(h)
    return head(torch.stack(hs)).tanh().sum() + (c**2).sum()


def test_truth_custom_cells():
    """Truth side: PointwiseLSTM passes gradcheck; both custom cells compute what nn.LSTMCell
    computes; their returned c's grad lacks the h path (so the probe cannot read the total off
    it), while the ordinary nn.LSTMCell's retained c grad equals reference.unroll_cell_loop's
    total (c including the h path)."""
    gates = torch.randn(3, 8, dtype=F64, requires_grad=True)
    cx = torch.randn(3, 2, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(PointwiseLSTM.apply, (gates, cx))

    cell, head, x, h, c = _custom_cell_run(nn.LSTMCell)
    ret = Retainer(cell)
    _custom_cell_forward(cell, head, x, h, c).backward()
    c_truth = cell_truth(ret, 1)
    ref = unroll_cell_loop(cell, x)
    ref_loss = head(ref.output).tanh().sum() + (ref.c_n[0] ** 2).sum()
    ref_loss.backward()
    torch.testing.assert_close(c_truth, ref.traces[(0, 0)].hidden_grads("c"), **TRUTH_TOL)
    torch.testing.assert_close(
        cell_truth(ret, 0), ref.traces[(0, 0)].hidden_grads("h"), **TRUTH_TOL
    )
    for cls in (FunctionLSTMCell, UnbindLSTMCell):
        custom, head2, x2, h2, c2 = _custom_cell_run(cls)
        ret2 = Retainer(custom)
        loss = _custom_cell_forward(custom, head2, x2, h2, c2)
        loss.backward()
        torch.testing.assert_close(cell_truth(ret2, 0), cell_truth(ret, 0), **TRUTH_TOL)
        returned_c = cell_truth(ret2, 1)
        assert (returned_c[:-1] - c_truth[:-1]).abs().max() > 1e-3, cls.__name__


@pytest.mark.parametrize("cls", [FunctionLSTMCell, UnbindLSTMCell], ids=lambda c: c.__name__)
def test_lstmcell_subclass_with_single_node_outputs(cls):
    """An nn.LSTMCell subclass whose h and c come out of ONE autograd node (as nn.LSTMCell does on
    CUDA). The probe finds it as an LSTMCell; ``state="c"`` totals must include the path through
    h_t although no returned tensor's grad shows it. Truth: an ordinary nn.LSTMCell loop with the
    same weights and ``retain_grad()`` on its returned c (checked in test_truth_custom_cells)."""
    cell, head, x, h, c = _custom_cell_run(nn.LSTMCell)
    ret = Retainer(cell)
    _custom_cell_forward(cell, head, x, h, c).backward()

    custom, head2, x2, h2, c2 = _custom_cell_run(cls)
    plain = copy.deepcopy(custom)
    _custom_cell_forward(plain, head2, x2, h2, c2).backward()
    head_grad = head2.weight.grad.clone() if head2.weight.grad is not None else None
    head2.zero_grad()
    with rd.attach(custom) as probe:
        _custom_cell_forward(custom, head2, x2, h2, c2).backward()
    assert torch.equal(head2.weight.grad, head_grad)
    assert_same_param_grads(custom, plain)
    for i, state in enumerate("hc"):
        truth = cell_truth(ret, i)
        got = probe.hidden_grads(state=state)
        assert_series(got, truth, f"{cls.__name__} state={state}")
        assert_log_norms(probe.hidden_grad_log10_norms(state=state), truth, f"log10 {state}")


# ======================================== loops: general contract


def test_fused_lstm_called_on_chunks_of_different_lengths():
    """A fused nn.LSTM called on chunks of 3, 1, 5 and 2 steps in one forward (streaming code),
    the state handed on unchanged: ONE series of 11 steps in call order, each call contributing
    its own number of steps. Truth: ExplicitLSTM stand-in in an unprobed copy."""
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 8).double()
    head = nn.Linear(8, 1).double()
    x = torch.randn(11, 2, 3, dtype=F64)

    def forward(module):
        state, outs = None, []
        for chunk in x.split([3, 1, 5, 2]):
            out, state = module(chunk, state) if state is not None else module(chunk)
            outs.append(out)
        return head(torch.cat(outs)).pow(2).sum() + state[1].sum()

    explicit = ExplicitLSTM(lstm)
    loss_t = forward(explicit)
    loss_t.backward()
    plain = copy.deepcopy(lstm)
    forward(plain).backward()
    with rd.attach(lstm) as probe:
        loss = forward(lstm)
        loss.backward()
    torch.testing.assert_close(loss, loss_t, **TRUTH_TOL)
    assert_same_param_grads(lstm, plain)
    for state in ("h", "c"):
        truth = explicit.truth(state=state)
        assert truth.shape == (11, 2, 8) and (truth.norm(dim=-1) > 0).all()
        assert_series(probe.hidden_grads(state=state), truth, f"chunks state={state}")


@pytest.mark.parametrize("loss_kind", ["last", "every"])
def test_truncated_bptt_detach_between_calls(loss_kind):
    """Truncated BPTT inside one forward: ``h = h.detach()`` before calls 5, 10 and 15 of an
    nn.RNNCell loop (T = 20). The series still has 20 steps; the gradient ends at each detach:
    the step before a detach gets only its direct gradient, and with the loss on the last output
    only, every step before the last detach gets exactly 0 (log10 -inf). Truth: retain_grad."""
    torch.manual_seed(0)
    cell = nn.RNNCell(3, 8).double()
    x = torch.randn(20, 3, 3, dtype=F64)
    coeff = torch.randn(20, 3, 8, dtype=F64)

    def forward(c):
        h, hs = torch.zeros(3, 8, dtype=F64), []
        for t in range(20):
            if t % 5 == 0:
                h = h.detach()
            h = c(x[t], h)
            hs.append(h)
        hs = torch.stack(hs)
        return (hs[-1] * coeff[-1]).sum() if loss_kind == "last" else (hs.tanh() * coeff).sum()

    truth_cell = copy.deepcopy(cell)
    ret = Retainer(truth_cell)
    forward(truth_cell).backward()
    truth = cell_truth(ret)
    if loss_kind == "last":
        assert (truth[:15] == 0).all() and (truth[15:].norm(dim=-1) > 0).all()
    plain = copy.deepcopy(cell)
    forward(plain).backward()
    with rd.attach(cell) as probe:
        forward(cell).backward()
    assert_same_param_grads(cell, plain)
    assert_series(probe.hidden_grads(), truth, f"truncated BPTT loss={loss_kind}")
    assert_log_norms(probe.hidden_grad_log10_norms(), truth, f"truncated log10 {loss_kind}")


def test_growing_batch_rows_keep_their_index():
    """Sequences joining a running batch (continuous batching): a GRUCell loop whose batch grows
    from 2 to 4 rows at t = 3 (``h = torch.cat([h, h_new])``) and shrinks to 3 at t = 6
    (``h[:3]``). Row i stays row i; rows a call did not have are 0 / -inf, and frame()
    aggregates only over present rows. Truth: retain_grad on each returned h, padded."""
    torch.manual_seed(0)
    cell = nn.GRUCell(3, 8).double()
    x = torch.randn(9, 4, 3, dtype=F64)
    coeff = torch.randn(9, 4, 8, dtype=F64)
    sizes = [2, 2, 2, 4, 4, 4, 3, 3, 3]

    def forward(c):
        h, loss = torch.zeros(2, 8, dtype=F64), 0
        for t, n in enumerate(sizes):
            if n > h.shape[0]:
                h = torch.cat([h, torch.zeros(n - h.shape[0], 8, dtype=F64)])
            h = c(x[t, :n], h[:n])
            loss = loss + (h.tanh() * coeff[t, :n]).sum()
        return loss

    truth_cell = copy.deepcopy(cell)
    ret = Retainer(truth_cell)
    forward(truth_cell).backward()
    truth = cell_truth(ret, 0, 4)
    present = torch.tensor([[b < n for b in range(4)] for n in sizes])
    plain = copy.deepcopy(cell)
    forward(plain).backward()
    with rd.attach(cell) as probe:
        forward(cell).backward()
    assert_same_param_grads(cell, plain)
    assert_series(probe.hidden_grads(), truth, "growing batch", present=present)
    assert_log_norms(probe.hidden_grad_log10_norms(), truth, "growing batch log10")
    check_frame_over_present_rows(probe, "", truth, present)


def test_probe_never_raises_on_irregular_loops():
    """Code that breaks every assumption at once must still run unchanged under the probe and
    give autograd's totals: a GRUCell loop whose first call gets no state, one call gets a mix of
    two earlier states (``0.5 * (h + h_prev)``), the batch shrinks (``h[:2]``) and grows back
    with rows of an older state (``torch.cat``), the state is detached, then passed as a view;
    the loss is backpropagated twice with ``retain_graph=True``. Truth: retain_grad on every
    returned h after one backward (the probe reports the latest backward, not a sum)."""
    torch.manual_seed(0)
    cell = nn.GRUCell(3, 8).double()
    x = torch.randn(8, 4, 3, dtype=F64)
    coeff = torch.randn(8, 4, 8, dtype=F64)

    def forward(c):
        hs = [c(x[0])]
        hs.append(c(x[1], hs[-1]))
        hs.append(c(x[2], 0.5 * (hs[-1] + hs[0])))
        hs.append(c(x[3, :2], hs[-1][:2]))
        hs.append(c(x[4], torch.cat([hs[-1], hs[0][2:]])))
        hs.append(c(x[5], hs[-1].detach()))
        hs.append(c(x[6], hs[-1].view(4, 8)))
        hs.append(c(x[7], hs[-1]))
        return sum((h.tanh() * coeff[t, : h.shape[0]]).sum() for t, h in enumerate(hs))

    truth_cell = copy.deepcopy(cell)
    ret = Retainer(truth_cell)
    forward(truth_cell).backward()
    truth = cell_truth(ret, 0, 4)
    present = torch.ones(8, 4, dtype=torch.bool)
    present[3, 2:] = False
    plain = copy.deepcopy(cell)
    loss_q = forward(plain)
    loss_q.backward(retain_graph=True)
    loss_q.backward()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rd.attach(cell) as probe:
            loss = forward(cell)
            loss.backward(retain_graph=True)
            loss.backward()
    assert_same_param_grads(cell, plain)
    assert_series(probe.hidden_grads(), truth, "irregular loop", present=present)
    assert_log_norms(probe.hidden_grad_log10_norms(), truth, "irregular loop log10")


# ======================================== dynamic range

DR_T, DR_B, DR_H, DR_I = 2000, 2, 12, 3


def _contractive(kind: str, dtype, radius=0.3, seed=0):
    """nn.RNNCell or nn.RNN (tanh) with W_hh scaled to spectral radius ``radius``; returns
    (module, its W_hh as float64 numpy, x, coeff)."""
    g = torch.Generator().manual_seed(seed)
    module = nn.RNNCell(DR_I, DR_H) if kind == "cell" else nn.RNN(DR_I, DR_H)
    module = module.to(dtype)
    w = torch.randn(DR_H, DR_H, generator=g, dtype=F64)
    w *= radius / np.abs(np.linalg.eigvals(w.numpy())).max()
    w_hh = module.weight_hh if kind == "cell" else module.weight_hh_l0
    with torch.no_grad():
        w_hh.copy_(w)
    x = (0.5 * torch.randn(DR_T, DR_B, DR_I, generator=g, dtype=F64)).to(dtype)
    coeff = torch.randn(DR_B, DR_H, generator=g, dtype=F64).to(dtype)
    return module, w_hh.detach().double().numpy(), x, coeff


def _drive(module, kind: str, handoff: str, x, mask=None):
    """The user's per-step loop; returns the list of the h_t each call returned ([B, H] views).

    handoff: "same": the returned state itself; "view": a reshape/view of it (``unsqueeze``,
    ``squeeze``, ``view``); "mask": ``(1 - d_t) * h`` with d from ``mask``."""
    B = x.shape[1]
    hs = []
    if kind == "cell":
        h = torch.zeros(B, DR_H, dtype=x.dtype)
        for t in range(x.shape[0]):
            if handoff == "view":  # the user keeps h as [1, B, H] between calls
                h = module(x[t], h.view(B, DR_H)).unsqueeze(0)
                hs.append(h.squeeze(0))
            else:
                if handoff == "mask":
                    h = (1.0 - mask[t]).view(-1, 1) * h
                h = module(x[t], h)
                hs.append(h)
    else:
        h_n = torch.zeros(1, B, DR_H, dtype=x.dtype)
        for t in range(x.shape[0]):
            if handoff == "view":  # the user keeps h as [B, H] between calls
                h = h_n.squeeze(0) if t else h_n.view(B, DR_H)
                _, h_n = module(x[t : t + 1], h.unsqueeze(0))
            else:
                _, h_n = module(x[t : t + 1], h_n)
            hs.append(h_n[0])
    return hs


def log_space_adjoint(w_hh: np.ndarray, hs: np.ndarray, last_grad: np.ndarray, mask=None):
    """log10 ||dL/dh_t|| for L = <h_{T-1}, last_grad> of a tanh RNN, by a renormalised float64
    adjoint: lambda_{t-1} = m_t * (W_hh^T diag(1 - h_t^2) lambda_t), where m_t (1 - d_t) is the
    mask applied to the state before call t. -inf where a mask cut the path. [T, B]."""
    T, B = hs.shape[:2]
    out = np.full((T, B), -np.inf)
    n = np.linalg.norm(last_grad, axis=1)
    v, log_n = last_grad / n[:, None], np.log10(n)
    out[T - 1] = log_n
    alive = np.ones(B, dtype=bool)
    for t in range(T - 1, 0, -1):
        w = ((1.0 - hs[t] ** 2) * v) @ w_hh
        if mask is not None:
            alive &= mask[t] == 0
        nrm = np.linalg.norm(w, axis=1)
        v = w / nrm[:, None]
        log_n = log_n + np.log10(nrm)
        out[t - 1] = np.where(alive, log_n, -np.inf)
    return out


DR_CASES = [
    ("cell", "same", torch.float32),
    ("cell", "same", F64),
    ("cell", "view", torch.float32),
    ("rnn", "same", torch.float32),
    ("rnn", "same", F64),
    ("rnn", "view", torch.float32),
]


@pytest.mark.parametrize(
    "kind,handoff,dtype", DR_CASES, ids=[f"{k}-{h}-{str(d)[6:]}" for k, h, d in DR_CASES]
)
def test_per_step_loop_log_norms_far_below_float_range(kind, handoff, dtype):
    """An nn.RNNCell, or an nn.RNN called once per step, T = 2000, W_hh at spectral radius 0.3,
    loss on the last h: the true gradient falls ~1000 decades. With the state handed on as is or
    through a reshape/view, the probe's log10 norms must be finite at every step and within
    1e-3 (float32) / 1e-8 (float64) decades of a float64 log-space adjoint written here on the
    model's own trajectory, while plain autograd underflows to exact zeros far back."""
    module, w, x, coeff = _contractive(kind, dtype)
    with rd.attach(module) as probe:
        hs = _drive(module, kind, handoff, x)
        (hs[-1] * coeff).sum().backward()
    traj = torch.stack([h.detach() for h in hs]).double().numpy()
    ref = log_space_adjoint(w, traj, coeff.double().numpy())
    assert np.isfinite(ref).all() and ref.min() < -400, ref.min()

    logs = probe.hidden_grad_log10_norms().numpy()
    assert logs.shape == (DR_T, DR_B)
    bad = ~np.isfinite(logs)
    assert not bad.any(), f"non-finite log10 norms from t={np.flatnonzero(bad.any(1))[:5]} on"
    err = np.abs(logs - ref)
    tol = 1e-3 if dtype == torch.float32 else 1e-8
    t = int(np.unravel_index(np.argmax(err), err.shape)[0])
    assert err.max() < tol, f"max error {err.max():.3g} decades at t={t} (ref {ref[t]})"

    plain_module = copy.deepcopy(module)
    ret = Retainer(plain_module)
    plain_hs = _drive(plain_module, kind, handoff, x)
    (plain_hs[-1] * coeff).sum().backward()
    first = ret.calls[0][-1].grad  # h (cell) or h_n (nn.RNN) of the first call
    assert (first == 0).all(), "premise: plain autograd underflows to 0 far back"


def test_masked_loop_reports_autograd_values_never_false_finite():
    """Masking between calls (``h = (1 - d_t) * h``, CleanRL style) on a float32 nn.RNNCell,
    T = 300, spectral radius 0.3, loss on the last h; env 1 is reset at t = 150. The probe
    reports autograd's float32 values: where those are comfortably normal, its tensors and log10
    norms match them; where the path is cut by the mask, exactly 0 and -inf; where float32
    autograd underflowed, the log10 norm is -inf or the true (float64 log-space) value: never a
    false finite number."""
    module, w, x, coeff = _contractive("cell", torch.float32)
    x = x[:300]
    mask = torch.zeros(300, DR_B)
    mask[150, 1] = 1.0
    plain = copy.deepcopy(module)
    plain_hs = _drive(plain, "cell", "mask", x, mask)
    for h in plain_hs:
        h.retain_grad()
    (plain_hs[-1] * coeff).sum().backward()
    auto = torch.stack([grad_or_zeros(h) for h in plain_hs])  # float32 autograd, [T, B, H]
    traj = torch.stack([h.detach() for h in plain_hs]).double().numpy()
    ref = log_space_adjoint(w, traj, coeff.double().numpy(), mask.numpy())
    auto_log = log10_norms(auto)
    assert np.isneginf(ref[:150, 1]).all() and np.isfinite(ref[:, 0]).all()
    assert (auto_log == -np.inf).sum() > 50, "premise: float32 autograd underflows"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rd.attach(module) as probe:
            hs = _drive(module, "cell", "mask", x, mask)
            (hs[-1] * coeff).sum().backward()
    got = probe.hidden_grads()
    logs = probe.hidden_grad_log10_norms().numpy()
    assert got.shape == (300, DR_B, DR_H) and logs.shape == (300, DR_B)
    normal = auto_log > math.log10(torch.finfo(torch.float32).tiny) + 3
    assert normal.sum() > 100
    got_norm = log10_norms(got)
    np.testing.assert_allclose(got_norm[normal], auto_log[normal], atol=1e-5)
    np.testing.assert_allclose(logs[normal], auto_log[normal], atol=1e-5)
    cut = np.isneginf(ref)
    assert np.isneginf(logs[cut]).all(), "path cut by the mask must read -inf"
    assert (got.numpy()[cut] == 0).all()
    # below float32's normal range: -inf, or a finite value that is either the true one or
    # autograd's own (subnormal) value; anything else is a false finite number
    finite = np.isfinite(logs) & ~normal & ~cut
    with np.errstate(invalid="ignore"):
        ok = (np.abs(logs - ref) < 1e-3) | (np.abs(logs - auto_log) < 1e-3)
    bad = finite & ~ok
    assert not bad.any(), (
        f"false finite log10 norms at (t, b) {np.argwhere(bad)[:5].tolist()}: "
        f"probe {logs[bad][:5]}, true {ref[bad][:5]}, float32 autograd {auto_log[bad][:5]}"
    )
    assert not np.isnan(logs).any() and not (logs == np.inf).any()


# ======================================== gradient_summary


@pytest.mark.parametrize(
    "profile",
    [[0.5], [-np.inf, -np.inf, 0.5], [np.nan, 0.5, np.nan], [-np.inf, -np.inf]],
    ids=["single", "inf-then-one", "nan-around-one", "all-zero"],
)
def test_gradient_summary_fewer_than_two_finite_points_is_undetermined(profile):
    """A profile with fewer than two finite points has no decay to fit: verdict
    "undetermined", not "stable" (nor "vanishing" merely because earlier steps are zero)."""
    assert rd.gradient_summary(np.array(profile))["verdict"] == "undetermined"


def test_gradient_summary_of_truncated_loop_is_undetermined():
    """Real-code origin of such a profile: an RNNCell loop that detaches the state before its
    last call, with the loss on the last output only: only the last step gets gradient."""
    torch.manual_seed(0)
    cell = nn.RNNCell(3, 8).double()
    x = torch.randn(6, 2, 3, dtype=F64)
    with rd.attach(cell) as probe:
        h = torch.zeros(2, 8, dtype=F64)
        for t in range(6):
            h = cell(x[t], h.detach() if t == 5 else h)
        h.sum().backward()
    profile = probe.hidden_grad_log10_norms().mean(1)
    assert profile.shape == (6,)
    assert np.isneginf(profile[:5].numpy()).all() and np.isfinite(float(profile[5]))
    assert rd.gradient_summary(profile)["verdict"] == "undetermined"
