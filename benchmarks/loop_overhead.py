"""Cost of an attached rnn_diag probe on models that step their RNN themselves, in a Python loop.

Two models written the way published code writes them, each calling a fused ``nn.GRU`` /
``nn.LSTM`` once per time step with the state the previous call returned:

* ``attn-decoder``: the PyTorch seq2seq translation tutorial's ``EncoderRNN`` +
  ``AttnDecoderRNN`` (Bahdanau attention, ``query = hidden.permute(1, 0, 2)``, dropout 0.1):
  a GRU encoder over S = 20 random source tokens, then ``nn.GRU(2H, H, batch_first=True)``
  called once per step for 50 teacher-forced steps, H = 256, B = 64, a vocabulary of 1000,
  NLL loss over all 50 steps, Adam.
* ``ppo-lstm``: CleanRL ``ppo_atari_lstm.py``'s agent and update, with a small MLP in front
  of the LSTM instead of the Atari CNN: ``nn.LSTM(512, 128)`` stepped by ``get_states`` over a
  128-step rollout of 8 environments (random observations, ~2% random dones that reset the
  state), clipped policy loss + clipped value loss - entropy bonus, gradient-norm clipping,
  Adam. One step = one update over the whole rollout (all 8 environments in one minibatch).

For each model it prints, from one run:

* time: median over ``--repeats`` timed training steps (after ``--warmup`` untimed ones) of
  zero_grad + forward + loss + backward + ``probe.hidden_grad_log10_norms()`` (every probed
  module) + optimiser step, on a model with ``rnn_diag.attach(model)`` attached for the whole
  run, against the same step on an identical model without a probe. Probed and unprobed steps
  alternate (and swap order every repetition) and draw the same dropout masks, so both see the
  same machine noise and compute the same thing. Both the ratio of the medians and the median
  of the per-repetition ratios are shown; the target is at most 1.3.
* memory: the peak extra memory of three steps, each (model, probed?) pair in a fresh
  subprocess, as in ``probe_overhead.py`` (CPU: ``VmHWM`` over the resident size once the
  model, data, optimiser and probe exist; CUDA: ``torch.cuda.max_memory_allocated``).
* whether the parameter gradients with and without the probe are bitwise equal, after the
  warm-up and again after the timed steps (the two models also take the same Adam steps).
* ``probe.hidden_grads(name).shape`` of every probed module, as a sanity line, beside the
  shape a probe that follows the whole loop would record.

Usage::

    python benchmarks/loop_overhead.py [--device auto|cpu|cuda] [--repeats N] [--threads N]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from _bootstrap import import_rnn_diag  # noqa: E402
from _measure import (  # noqa: E402
    alternating_times,
    machine_line,
    max_grad_difference,
    memory_baseline,
    memory_peak,
    table,
)
from torch import nn
from torch.distributions.categorical import Categorical
from torch.nn import functional as F

rd = import_rnn_diag()

TARGET_RATIO = 1.3

# --- attention decoder: PyTorch "NLP From Scratch: Translation with a Sequence to Sequence
# Network and Attention" (EncoderRNN, BahdanauAttention, AttnDecoderRNN), batch-first ----------

SOS_TOKEN = 0
DEC_H, DEC_B, DEC_S, DEC_T, DEC_VOCAB = 256, 64, 20, 50, 1000


class EncoderRNN(nn.Module):
    def __init__(self, input_size: int, hidden_size: int, dropout_p: float = 0.1) -> None:
        super().__init__()
        self.embedding = nn.Embedding(input_size, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True)
        self.dropout = nn.Dropout(dropout_p)

    def forward(self, input):
        embedded = self.dropout(self.embedding(input))
        output, hidden = self.gru(embedded)
        return output, hidden


class BahdanauAttention(nn.Module):
    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.Wa = nn.Linear(hidden_size, hidden_size)
        self.Ua = nn.Linear(hidden_size, hidden_size)
        self.Va = nn.Linear(hidden_size, 1)

    def forward(self, query, keys):
        scores = self.Va(torch.tanh(self.Wa(query) + self.Ua(keys)))
        scores = scores.squeeze(2).unsqueeze(1)
        weights = F.softmax(scores, dim=-1)
        context = torch.bmm(weights, keys)
        return context, weights


class AttnDecoderRNN(nn.Module):
    def __init__(self, hidden_size: int, output_size: int, dropout_p: float = 0.1) -> None:
        super().__init__()
        self.embedding = nn.Embedding(output_size, hidden_size)
        self.attention = BahdanauAttention(hidden_size)
        self.gru = nn.GRU(2 * hidden_size, hidden_size, batch_first=True)
        self.out = nn.Linear(hidden_size, output_size)
        self.dropout = nn.Dropout(dropout_p)

    def forward(self, encoder_outputs, encoder_hidden, target_tensor):
        batch_size = encoder_outputs.size(0)
        decoder_input = torch.empty(
            batch_size, 1, dtype=torch.long, device=encoder_outputs.device
        ).fill_(SOS_TOKEN)
        decoder_hidden = encoder_hidden
        decoder_outputs = []
        attentions = []
        for i in range(target_tensor.size(1)):
            decoder_output, decoder_hidden, attn_weights = self.forward_step(
                decoder_input, decoder_hidden, encoder_outputs
            )
            decoder_outputs.append(decoder_output)
            attentions.append(attn_weights)
            decoder_input = target_tensor[:, i].unsqueeze(1)  # teacher forcing
        decoder_outputs = torch.cat(decoder_outputs, dim=1)
        decoder_outputs = F.log_softmax(decoder_outputs, dim=-1)
        attentions = torch.cat(attentions, dim=1)
        return decoder_outputs, decoder_hidden, attentions

    def forward_step(self, input, hidden, encoder_outputs):
        embedded = self.dropout(self.embedding(input))
        query = hidden.permute(1, 0, 2)
        context, attn_weights = self.attention(query, encoder_outputs)
        input_gru = torch.cat((embedded, context), dim=2)
        output, hidden = self.gru(input_gru, hidden)
        output = self.out(output)
        return output, hidden, attn_weights


class Seq2Seq(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = EncoderRNN(DEC_VOCAB, DEC_H)
        self.decoder = AttnDecoderRNN(DEC_H, DEC_VOCAB)


def _decoder_setup(device: torch.device):
    model = Seq2Seq().to(device)
    data = {
        "src": torch.randint(1, DEC_VOCAB, (DEC_B, DEC_S), device=device),
        "tgt": torch.randint(1, DEC_VOCAB, (DEC_B, DEC_T), device=device),
    }
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    return model, data, opt


def _decoder_loss(model: Seq2Seq, data: dict) -> torch.Tensor:
    encoder_outputs, encoder_hidden = model.encoder(data["src"])
    decoder_outputs, _, _ = model.decoder(encoder_outputs, encoder_hidden, data["tgt"])
    return F.nll_loss(
        decoder_outputs.view(-1, decoder_outputs.size(-1)), data["tgt"].view(-1)
    )


# --- PPO LSTM: CleanRL ppo_atari_lstm.py (Agent.get_states and the update), MLP encoder ---------

PPO_OBS, PPO_H, PPO_ENVS, PPO_T, PPO_ACTIONS = 64, 128, 8, 128, 6
PPO_DONE_P = 0.02
CLIP_COEF, ENT_COEF, VF_COEF, MAX_GRAD_NORM = 0.1, 0.01, 0.5, 0.5


def layer_init(layer: nn.Linear, std: float = 2**0.5, bias_const: float = 0.0) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.network = nn.Sequential(  # stands in for the Atari CNN (ends in 512, ReLU)
            layer_init(nn.Linear(PPO_OBS, 256)),
            nn.ReLU(),
            layer_init(nn.Linear(256, 512)),
            nn.ReLU(),
        )
        self.lstm = nn.LSTM(512, PPO_H)
        for name, param in self.lstm.named_parameters():
            if "bias" in name:
                nn.init.constant_(param, 0)
            elif "weight" in name:
                nn.init.orthogonal_(param, 1.0)
        self.actor = layer_init(nn.Linear(PPO_H, PPO_ACTIONS), std=0.01)
        self.critic = layer_init(nn.Linear(PPO_H, 1), std=1)

    def get_states(self, x, lstm_state, done):
        hidden = self.network(x)

        # LSTM logic
        batch_size = lstm_state[0].shape[1]
        hidden = hidden.reshape((-1, batch_size, self.lstm.input_size))
        done = done.reshape((-1, batch_size))
        new_hidden = []
        for h, d in zip(hidden, done):
            h, lstm_state = self.lstm(
                h.unsqueeze(0),
                (
                    (1.0 - d).view(1, -1, 1) * lstm_state[0],
                    (1.0 - d).view(1, -1, 1) * lstm_state[1],
                ),
            )
            new_hidden += [h]
        new_hidden = torch.flatten(torch.cat(new_hidden), 0, 1)
        return new_hidden, lstm_state

    def get_action_and_value(self, x, lstm_state, done, action=None):
        hidden, lstm_state = self.get_states(x, lstm_state, done)
        logits = self.actor(hidden)
        probs = Categorical(logits=logits)
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(hidden), lstm_state


def _ppo_setup(device: torch.device):
    agent = Agent().to(device)
    n = PPO_T * PPO_ENVS
    obs = torch.randn(PPO_T, PPO_ENVS, PPO_OBS, device=device)
    dones = (torch.rand(PPO_T, PPO_ENVS, device=device) < PPO_DONE_P).float()
    state = (
        torch.zeros(agent.lstm.num_layers, PPO_ENVS, PPO_H, device=device),
        torch.zeros(agent.lstm.num_layers, PPO_ENVS, PPO_H, device=device),
    )
    b_obs, b_dones = obs.reshape(n, PPO_OBS), dones.reshape(n)
    with torch.no_grad():  # the rollout's actions, log-probabilities and values
        actions, logprobs, _, values, _ = agent.get_action_and_value(b_obs, state, b_dones)
    advantages = torch.randn(n, device=device)
    data = {
        "obs": b_obs,
        "dones": b_dones,
        "state": state,
        "actions": actions,
        "logprobs": logprobs,
        "values": values.view(-1),
        "advantages": advantages,
        "returns": advantages + values.view(-1),
    }
    opt = torch.optim.Adam(agent.parameters(), lr=2.5e-4, eps=1e-5)
    return agent, data, opt


def _ppo_loss(agent: Agent, data: dict) -> torch.Tensor:
    _, newlogprob, entropy, newvalue, _ = agent.get_action_and_value(
        data["obs"], data["state"], data["dones"], data["actions"].long()
    )
    logratio = newlogprob - data["logprobs"]
    ratio = logratio.exp()
    mb_advantages = data["advantages"]
    mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)
    pg_loss1 = -mb_advantages * ratio
    pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - CLIP_COEF, 1 + CLIP_COEF)
    pg_loss = torch.max(pg_loss1, pg_loss2).mean()
    newvalue = newvalue.view(-1)
    v_loss_unclipped = (newvalue - data["returns"]) ** 2
    v_clipped = data["values"] + torch.clamp(newvalue - data["values"], -CLIP_COEF, CLIP_COEF)
    v_loss_clipped = (v_clipped - data["returns"]) ** 2
    v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
    entropy_loss = entropy.mean()
    return pg_loss - ENT_COEF * entropy_loss + v_loss * VF_COEF


# --- the two workloads -------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    name: str
    T: int
    B: int
    H: int
    setup: Callable
    loss: Callable
    max_grad_norm: float | None
    expected: dict  # probed module name -> shape a probe following the whole loop records


WORKLOADS = [
    Workload(
        "attn-decoder", DEC_T, DEC_B, DEC_H, _decoder_setup, _decoder_loss, None,
        {"encoder.gru": (DEC_S, DEC_B, DEC_H), "decoder.gru": (DEC_T, DEC_B, DEC_H)},
    ),
    Workload(
        "ppo-lstm", PPO_T, PPO_ENVS, PPO_H, _ppo_setup, _ppo_loss, MAX_GRAD_NORM,
        {"lstm": (PPO_T, PPO_ENVS, PPO_H)},
    ),
]


def _workloads(args: argparse.Namespace) -> list[Workload]:
    if not args.models:
        return WORKLOADS
    names = args.models.split(",")
    unknown = sorted(set(names) - {w.name for w in WORKLOADS})
    if unknown:
        raise SystemExit(
            f"--models: unknown {unknown}; choose from {[w.name for w in WORKLOADS]}"
        )
    return [w for w in WORKLOADS if w.name in names]


def _setup(w: Workload, device: torch.device, seed: int = 0):
    torch.manual_seed(seed)
    return w.setup(device)


def _step(w: Workload, model: nn.Module, data: dict, opt, probe=None) -> None:
    opt.zero_grad(set_to_none=True)
    loss = w.loss(model, data)
    loss.backward()
    if probe is not None:
        # What a user reads after each step; includes any work the probe defers until asked.
        for name in probe.modules:
            probe.hidden_grad_log10_norms(name)
    if w.max_grad_norm is not None:
        nn.utils.clip_grad_norm_(model.parameters(), w.max_grad_norm)
    opt.step()


def _seeded(i: int) -> None:
    """The same dropout masks for the plain and the probed step of repetition i."""
    torch.manual_seed(1000 + i)


def measure_time(w: Workload, device: torch.device, warmup: int, repeats: int) -> dict:
    plain, data, opt_plain = _setup(w, device)
    probed, _, opt_probed = _setup(w, device)  # same seed: identical weights, fed the same data
    probe = rd.attach(probed)
    try:
        for i in range(warmup):
            _seeded(i)
            _step(w, plain, data, opt_plain)
            _seeded(i)
            _step(w, probed, data, opt_probed, probe)
        grad_diff_warm = max_grad_difference(plain, probed)
        t_plain, t_probed = alternating_times(
            lambda: _step(w, plain, data, opt_plain),
            lambda: _step(w, probed, data, opt_probed, probe), repeats, device,
            before=lambda i: _seeded(warmup + i))
        grad_diff = max(grad_diff_warm, max_grad_difference(plain, probed))
        shapes = {}
        for name in probe.modules:
            try:
                shapes[name] = tuple(probe.hidden_grads(name).shape)
            except (RuntimeError, ValueError) as exc:
                shapes[name] = f"error: {exc}"
    finally:
        probe.detach()
    pair_ratios = [p / q for p, q in zip(t_probed, t_plain)]
    return {
        "plain_ms": 1e3 * statistics.median(t_plain),
        "probed_ms": 1e3 * statistics.median(t_probed),
        "ratio": statistics.median(t_probed) / statistics.median(t_plain),
        "pair_median": statistics.median(pair_ratios),
        "ratio_min": min(pair_ratios),
        "ratio_max": max(pair_ratios),
        "grad_diff": grad_diff,
        "shapes": shapes,
    }


# --- peak memory, one fresh subprocess per (model, probed?), as in probe_overhead.py ----------


def _mem_child(w: Workload, device: torch.device, with_probe: bool, steps: int = 3) -> dict:
    model, data, opt = _setup(w, device)
    probe = rd.attach(model) if with_probe else None
    gc.collect()
    base, method = memory_baseline(device)
    for i in range(steps):
        _seeded(i)
        _step(w, model, data, opt, probe)
    peak = memory_peak(device, method)
    if probe is not None:
        probe.detach()
    return {"peak_extra_mib": (peak - base) / 2**20, "method": method}


def measure_memory(
    w: Workload, device: torch.device, threads: int | None, with_probe: bool
) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--device",
        device.type,
        "--models",
        w.name,
        "--mem-child",
        "probed" if with_probe else "plain",
    ]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory subprocess failed for {w.name}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- output ------------------------------------------------------------------------------------


def _header(device: torch.device, args: argparse.Namespace) -> str:
    return (
        machine_line(device, rd.__version__)
        + f"\nsteps: {args.warmup} warm-up + {args.repeats} timed per variant, alternating; "
        f"ratio = median(probed) / median(plain), pair med = median of per-pair ratios"
        f"\nstep = zero_grad + forward (RNN stepped in a Python loop) + loss + backward "
        f"[+ probe.hidden_grad_log10_norms()] + Adam step; probe = rnn_diag.attach(model), "
        f"attached for the whole run"
    )


def _shape(s) -> str:
    return "[" + ", ".join(str(d) for d in s) + "]" if isinstance(s, tuple) else str(s)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--repeats", type=int, default=21, help="timed steps per variant (>= 5)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    names = ", ".join(w.name for w in WORKLOADS)
    ap.add_argument("--models", help=f"comma-separated subset of: {names} (default: all)")
    ap.add_argument(
        "--threads",
        type=int,
        help="torch.set_num_threads(N) first (default: torch's default, one per core); "
        "1 is steadier on a machine that other jobs share",
    )
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--mem-child", choices=["plain", "probed"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit("--threads must be at least 1")
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch sees no CUDA device")
    workloads = _workloads(args)

    if args.mem_child:
        (w,) = workloads
        print(json.dumps(_mem_child(w, device, args.mem_child == "probed")))
        return 0

    if args.repeats < 5:
        raise SystemExit("--repeats must be at least 5")
    print(_header(device, args), flush=True)
    rows, sanity = [], []
    methods = set()
    for w in workloads:
        started = time.perf_counter()
        t = measure_time(w, device, args.warmup, args.repeats)
        worst = max(t["ratio"], t["pair_median"])
        row = [
            w.name,
            str(w.T),
            str(w.B),
            str(w.H),
            f"{t['plain_ms']:.1f}",
            f"{t['probed_ms']:.1f}",
            f"{t['ratio']:.2f}x",
            f"{t['pair_median']:.2f}x",
            f"{t['ratio_min']:.2f}-{t['ratio_max']:.2f}",
            "ok" if worst <= TARGET_RATIO else "OVER",
        ]
        if not args.no_memory:
            m_plain = measure_memory(w, device, args.threads, with_probe=False)
            m_probed = measure_memory(w, device, args.threads, with_probe=True)
            methods |= {m_plain["method"], m_probed["method"]}
            row += [
                f"{m_plain['peak_extra_mib']:.1f}",
                f"{m_probed['peak_extra_mib']:.1f}",
                f"{m_probed['peak_extra_mib'] / max(m_plain['peak_extra_mib'], 1e-9):.2f}x",
            ]
        row.append("yes" if t["grad_diff"] == 0 else f"no ({t['grad_diff']:.1e})")
        rows.append(row)
        for name, shape in t["shapes"].items():
            want = w.expected.get(name)
            verdict = "" if want is None else (
                "  (as expected)" if shape == want else f"  (expected {_shape(want)})"
            )
            sanity.append(f"  {w.name}: probe.hidden_grads({name!r}).shape = {_shape(shape)}"
                          f"{verdict}")
        print(f"  done {w.name} ({time.perf_counter() - started:.0f} s)", file=sys.stderr,
              flush=True)

    header = ["model", "T", "B", "H", "plain ms", "probed ms", "ratio", "pair med",
              "pair range", f"<= {TARGET_RATIO}"]
    if not args.no_memory:
        header += ["plain MiB", "probed MiB", "mem ratio"]
    header.append("grads equal")
    print()
    print(table(rows, header))
    if methods:
        how = ", ".join(sorted(methods))
        print(f"\nmemory: peak extra over 3 steps, a fresh subprocess each; method {how}")
    print("\nrecorded shapes (a probe that follows the loop records all T steps):")
    print("\n".join(sanity))
    return 0


if __name__ == "__main__":
    sys.exit(main())
