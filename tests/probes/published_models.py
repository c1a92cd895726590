"""Recurrent models written the way published code writes them, and the truth helpers that
tests/probes/test_published_models.py compares rnn_diag against.

The models follow their sources closely (names, loops, the way the state is handed on), shrunk
to test sizes and with the data pipeline replaced by random tensors:

* ``EncoderRNN`` / ``BahdanauAttention`` / ``AttnDecoderRNN``: the PyTorch tutorial "NLP From
  Scratch: Translation with a Sequence to Sequence Network and Attention" (2023 version): the
  decoder calls ``nn.GRU(batch_first=True)`` once per output step, handing the returned hidden
  state to the next call unchanged.
* ``Agent``: CleanRL ``ppo_atari_lstm.py`` (the convolutional torso replaced by an MLP): an
  ``nn.LSTM`` run once per environment step in ``get_states``, the state multiplied by
  ``(1.0 - done)`` before each call.
* ``Attention`` / ``DecoderWithAttention``: sgrvinod's "a-PyTorch-Tutorial-to-Image-Captioning"
  (Show, Attend and Tell): an ``nn.LSTMCell`` over a batch sorted by caption length that shrinks
  as captions end (``h[:batch_size_t]``).
* ``RNNModel`` / ``repackage_hidden``: PyTorch examples ``word_language_model``: a 2-layer
  ``nn.LSTM`` with dropout between layers and on embeddings/outputs, tied weights, and hidden
  state carried between batches through ``detach()``.
* ``BiLSTMTagger``: the common sequence-tagger pattern: ``pack_padded_sequence(...,
  enforce_sorted=False)`` into a bidirectional ``nn.LSTM(batch_first=True)``.
* ``Sequence``: PyTorch examples ``time_sequence_prediction``: two ``nn.LSTMCell`` in a loop over
  ``input.split(1, dim=1)``, plus "future" steps fed by the model's own output, trained by LBFGS.

Truth helpers (none of them uses rnn_diag):

* ``Retainer``: a forward hook that calls ``retain_grad()`` on every tensor a module returns, call
  after call. After ``backward()`` their ``.grad`` is plain autograd's total gradient on each
  returned state, through every path the user's code created.
* ``ExplicitLSTM``: a stand-in for an ``nn.LSTM`` (same float64 weights, same call signature,
  same inter-layer dropout and RNG use) that unrolls the PyTorch-documented LSTM equations one
  step at a time and retains every h_t and c_t. Because h_t = o_t tanh(c_t) is computed from c_t
  inside its graph, ``c_t.grad`` is the total dL/dc_t including the path through h_t, which the
  ``c_n`` returned by a fused ``nn.LSTM`` cannot show (its c_n and h_n are separate outputs of one
  node).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions.categorical import Categorical
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

# ======================================== 1. seq2seq tutorial

SOS_token = 0


class EncoderRNN(nn.Module):
    def __init__(self, input_size, hidden_size, dropout_p=0.1):
        super().__init__()
        self.hidden_size = hidden_size
        self.embedding = nn.Embedding(input_size, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True)
        self.dropout = nn.Dropout(dropout_p)

    def forward(self, input):
        embedded = self.dropout(self.embedding(input))
        output, hidden = self.gru(embedded)
        return output, hidden


class BahdanauAttention(nn.Module):
    def __init__(self, hidden_size):
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
    def __init__(self, hidden_size, output_size, max_length, dropout_p=0.1):
        super().__init__()
        self.max_length = max_length
        self.embedding = nn.Embedding(output_size, hidden_size)
        self.attention = BahdanauAttention(hidden_size)
        self.gru = nn.GRU(2 * hidden_size, hidden_size, batch_first=True)
        self.out = nn.Linear(hidden_size, output_size)
        self.dropout = nn.Dropout(dropout_p)

    def forward(self, encoder_outputs, encoder_hidden, target_tensor=None):
        batch_size = encoder_outputs.size(0)
        decoder_input = torch.empty(batch_size, 1, dtype=torch.long).fill_(SOS_token)
        decoder_hidden = encoder_hidden
        decoder_outputs = []
        attentions = []

        for i in range(self.max_length):
            decoder_output, decoder_hidden, attn_weights = self.forward_step(
                decoder_input, decoder_hidden, encoder_outputs
            )
            decoder_outputs.append(decoder_output)
            attentions.append(attn_weights)

            if target_tensor is not None:
                # Teacher forcing: Feed the target as the next input
                decoder_input = target_tensor[:, i].unsqueeze(1)  # Teacher forcing
            else:
                # Without teacher forcing: use its own predictions as the next input
                _, topi = decoder_output.topk(1)
                decoder_input = topi.squeeze(-1).detach()  # detach from history as input

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


class Translator(nn.Module):
    """The tutorial's ``train_epoch`` body as one module: encoder, then the attention decoder
    with teacher forcing; returns the NLL loss of the batch."""

    def __init__(self, in_vocab, out_vocab, hidden_size, max_length):
        super().__init__()
        self.encoder = EncoderRNN(in_vocab, hidden_size)
        self.decoder = AttnDecoderRNN(hidden_size, out_vocab, max_length)

    def forward(self, input_tensor, target_tensor):
        encoder_outputs, encoder_hidden = self.encoder(input_tensor)
        decoder_outputs, _, _ = self.decoder(encoder_outputs, encoder_hidden, target_tensor)
        return nn.NLLLoss()(
            decoder_outputs.view(-1, decoder_outputs.size(-1)), target_tensor.view(-1)
        )


# ======================================== 2. CleanRL PPO-LSTM


def layer_init(layer, std=None, bias_const=0.0):
    std = math.sqrt(2) if std is None else std
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    def __init__(self, obs_size, n_actions, hidden_size=16, torso_size=32):
        super().__init__()
        self.network = nn.Sequential(  # stands in for the Atari conv torso
            layer_init(nn.Linear(obs_size, torso_size)),
            nn.ReLU(),
        )
        self.lstm = nn.LSTM(torso_size, hidden_size)
        for name, param in self.lstm.named_parameters():
            if "bias" in name:
                nn.init.constant_(param, 0)
            elif "weight" in name:
                nn.init.orthogonal_(param, 1.0)
        self.actor = layer_init(nn.Linear(hidden_size, n_actions), std=0.01)
        self.critic = layer_init(nn.Linear(hidden_size, 1), std=1)

    def get_states(self, x, lstm_state, done):
        hidden = self.network(x / 255.0)

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

    def get_value(self, x, lstm_state, done):
        hidden, _ = self.get_states(x, lstm_state, done)
        return self.critic(hidden)

    def get_action_and_value(self, x, lstm_state, done, action=None):
        hidden, lstm_state = self.get_states(x, lstm_state, done)
        logits = self.actor(hidden)
        probs = Categorical(logits=logits)
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(hidden), lstm_state


def ppo_loss(agent, mb, clip_coef=0.1, ent_coef=0.01, vf_coef=0.5):
    """CleanRL's minibatch loss (clipped surrogate, clipped value loss, entropy bonus) on a
    minibatch dict with obs, initial_lstm_state, dones, actions, logprobs, advantages, returns,
    values (flattened [num_steps * envs] like ``b_obs[mb_inds]``)."""
    _, newlogprob, entropy, newvalue, _ = agent.get_action_and_value(
        mb["obs"], mb["initial_lstm_state"], mb["dones"], mb["actions"].long()
    )
    logratio = newlogprob - mb["logprobs"]
    ratio = logratio.exp()
    mb_advantages = mb["advantages"]
    mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)
    pg_loss1 = -mb_advantages * ratio
    pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)
    pg_loss = torch.max(pg_loss1, pg_loss2).mean()
    newvalue = newvalue.view(-1)
    v_loss_unclipped = (newvalue - mb["returns"]) ** 2
    v_clipped = mb["values"] + torch.clamp(newvalue - mb["values"], -clip_coef, clip_coef)
    v_loss_clipped = (v_clipped - mb["returns"]) ** 2
    v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
    entropy_loss = entropy.mean()
    return pg_loss - ent_coef * entropy_loss + v_loss * vf_coef


def ppo_rollout(agent, num_steps, num_envs, obs_size, gen, next_lstm_state=None):
    """A CleanRL-style rollout under ``torch.no_grad()`` on a fake environment (random
    observations, ~25% episode ends), then GAE. Returns the minibatch dict of all envs in
    CleanRL's flattened layout, and the LSTM state at the end of the rollout."""
    dtype = next(agent.parameters()).dtype
    H = agent.lstm.hidden_size
    if next_lstm_state is None:
        next_lstm_state = (torch.zeros(1, num_envs, H, dtype=dtype),) * 2
    initial_lstm_state = (next_lstm_state[0].clone(), next_lstm_state[1].clone())
    obs = torch.zeros(num_steps, num_envs, obs_size, dtype=dtype)
    dones = torch.zeros(num_steps, num_envs, dtype=dtype)
    actions = torch.zeros(num_steps, num_envs, dtype=dtype)
    logprobs = torch.zeros(num_steps, num_envs, dtype=dtype)
    rewards = torch.zeros(num_steps, num_envs, dtype=dtype)
    values = torch.zeros(num_steps, num_envs, dtype=dtype)
    next_obs = 255 * torch.rand(num_envs, obs_size, generator=gen, dtype=dtype)
    next_done = torch.zeros(num_envs, dtype=dtype)
    for step in range(num_steps):
        obs[step] = next_obs
        dones[step] = next_done
        with torch.no_grad():
            action, logprob, _, value, next_lstm_state = agent.get_action_and_value(
                next_obs, next_lstm_state, next_done
            )
            values[step] = value.flatten()
        actions[step] = action
        logprobs[step] = logprob
        rewards[step] = torch.randn(num_envs, generator=gen, dtype=dtype)
        next_obs = 255 * torch.rand(num_envs, obs_size, generator=gen, dtype=dtype)
        next_done = (torch.rand(num_envs, generator=gen) < 0.25).to(dtype)
    gamma, gae_lambda = 0.99, 0.95
    with torch.no_grad():
        next_value = agent.get_value(next_obs, next_lstm_state, next_done).reshape(1, -1)
        advantages = torch.zeros_like(rewards)
        lastgaelam = 0
        for t in reversed(range(num_steps)):
            if t == num_steps - 1:
                nextnonterminal = 1.0 - next_done
                nextvalues = next_value
            else:
                nextnonterminal = 1.0 - dones[t + 1]
                nextvalues = values[t + 1]
            delta = rewards[t] + gamma * nextvalues * nextnonterminal - values[t]
            advantages[t] = lastgaelam = delta + gamma * gae_lambda * nextnonterminal * lastgaelam
        returns = advantages + values
    mb = dict(
        obs=obs.reshape(-1, obs_size),
        initial_lstm_state=initial_lstm_state,
        dones=dones.reshape(-1),
        actions=actions.reshape(-1),
        logprobs=logprobs.reshape(-1),
        advantages=advantages.reshape(-1),
        returns=returns.reshape(-1),
        values=values.reshape(-1),
    )
    return mb, next_lstm_state


def ppo_minibatch(mb, num_envs, mbenvinds):
    """CleanRL's env-wise minibatch: ``mb_inds = flatinds[:, mbenvinds].ravel()``."""
    flatinds = torch.arange(mb["dones"].numel()).reshape(-1, num_envs)
    mb_inds = flatinds[:, mbenvinds].ravel()
    out = {k: v[mb_inds] for k, v in mb.items() if k != "initial_lstm_state"}
    init = mb["initial_lstm_state"]
    out["initial_lstm_state"] = (init[0][:, mbenvinds], init[1][:, mbenvinds])
    return out


# ======================================== 3. Show, Attend and Tell


class Attention(nn.Module):
    def __init__(self, encoder_dim, decoder_dim, attention_dim):
        super().__init__()
        self.encoder_att = nn.Linear(encoder_dim, attention_dim)
        self.decoder_att = nn.Linear(decoder_dim, attention_dim)
        self.full_att = nn.Linear(attention_dim, 1)
        self.relu = nn.ReLU()
        self.softmax = nn.Softmax(dim=1)

    def forward(self, encoder_out, decoder_hidden):
        att1 = self.encoder_att(encoder_out)
        att2 = self.decoder_att(decoder_hidden)
        att = self.full_att(self.relu(att1 + att2.unsqueeze(1))).squeeze(2)
        alpha = self.softmax(att)
        attention_weighted_encoding = (encoder_out * alpha.unsqueeze(2)).sum(dim=1)
        return attention_weighted_encoding, alpha


class DecoderWithAttention(nn.Module):
    def __init__(self, attention_dim, embed_dim, decoder_dim, vocab_size, encoder_dim, dropout=0.5):
        super().__init__()
        self.encoder_dim = encoder_dim
        self.attention_dim = attention_dim
        self.embed_dim = embed_dim
        self.decoder_dim = decoder_dim
        self.vocab_size = vocab_size
        self.dropout = dropout

        self.attention = Attention(encoder_dim, decoder_dim, attention_dim)
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.dropout = nn.Dropout(p=self.dropout)
        self.decode_step = nn.LSTMCell(embed_dim + encoder_dim, decoder_dim, bias=True)
        self.init_h = nn.Linear(encoder_dim, decoder_dim)
        self.init_c = nn.Linear(encoder_dim, decoder_dim)
        self.f_beta = nn.Linear(decoder_dim, encoder_dim)
        self.sigmoid = nn.Sigmoid()
        self.fc = nn.Linear(decoder_dim, vocab_size)

    def init_hidden_state(self, encoder_out):
        mean_encoder_out = encoder_out.mean(dim=1)
        h = self.init_h(mean_encoder_out)
        c = self.init_c(mean_encoder_out)
        return h, c

    def forward(self, encoder_out, encoded_captions, caption_lengths):
        batch_size = encoder_out.size(0)
        encoder_dim = encoder_out.size(-1)
        vocab_size = self.vocab_size

        encoder_out = encoder_out.view(batch_size, -1, encoder_dim)
        num_pixels = encoder_out.size(1)

        caption_lengths, sort_ind = caption_lengths.squeeze(1).sort(dim=0, descending=True)
        encoder_out = encoder_out[sort_ind]
        encoded_captions = encoded_captions[sort_ind]

        embeddings = self.embedding(encoded_captions)

        h, c = self.init_hidden_state(encoder_out)

        decode_lengths = (caption_lengths - 1).tolist()

        predictions = torch.zeros(batch_size, max(decode_lengths), vocab_size, dtype=h.dtype)
        alphas = torch.zeros(batch_size, max(decode_lengths), num_pixels, dtype=h.dtype)

        for t in range(max(decode_lengths)):
            batch_size_t = sum([l > t for l in decode_lengths])
            attention_weighted_encoding, alpha = self.attention(
                encoder_out[:batch_size_t], h[:batch_size_t]
            )
            gate = self.sigmoid(self.f_beta(h[:batch_size_t]))
            attention_weighted_encoding = gate * attention_weighted_encoding
            h, c = self.decode_step(
                torch.cat([embeddings[:batch_size_t, t, :], attention_weighted_encoding], dim=1),
                (h[:batch_size_t], c[:batch_size_t]),
            )
            preds = self.fc(self.dropout(h))
            predictions[:batch_size_t, t, :] = preds
            alphas[:batch_size_t, t, :] = alpha

        return predictions, encoded_captions, decode_lengths, alphas, sort_ind


def caption_loss(decoder, imgs, caps, caplens, alpha_c=1.0):
    """sgrvinod's train() step body: packed cross-entropy plus doubly stochastic attention."""
    scores, caps_sorted, decode_lengths, alphas, sort_ind = decoder(imgs, caps, caplens)
    targets = caps_sorted[:, 1:]
    scores = pack_padded_sequence(scores, decode_lengths, batch_first=True).data
    targets = pack_padded_sequence(targets, decode_lengths, batch_first=True).data
    loss = nn.CrossEntropyLoss()(scores, targets)
    loss += alpha_c * ((1.0 - alphas.sum(dim=1)) ** 2).mean()
    return loss, decode_lengths


# ======================================== 4. word language model


class RNNModel(nn.Module):
    """Container module with an encoder, a recurrent module, and a decoder."""

    def __init__(self, rnn_type, ntoken, ninp, nhid, nlayers, dropout=0.5, tie_weights=False):
        super().__init__()
        self.ntoken = ntoken
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = getattr(nn, rnn_type)(ninp, nhid, nlayers, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        if tie_weights:
            if nhid != ninp:
                raise ValueError("When using the tied flag, nhid must be equal to emsize")
            self.decoder.weight = self.encoder.weight
        self.init_weights()
        self.rnn_type = rnn_type
        self.nhid = nhid
        self.nlayers = nlayers

    def init_weights(self):
        initrange = 0.1
        nn.init.uniform_(self.encoder.weight, -initrange, initrange)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -initrange, initrange)

    def forward(self, input, hidden):
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        output = self.drop(output)
        decoded = self.decoder(output)
        decoded = decoded.view(-1, self.ntoken)
        return F.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, bsz):
        weight = next(self.parameters())
        if self.rnn_type == "LSTM":
            return (
                weight.new_zeros(self.nlayers, bsz, self.nhid),
                weight.new_zeros(self.nlayers, bsz, self.nhid),
            )
        return weight.new_zeros(self.nlayers, bsz, self.nhid)


def repackage_hidden(h):
    """Wraps hidden states in new Tensors, to detach them from their history."""
    if isinstance(h, torch.Tensor):
        return h.detach()
    return tuple(repackage_hidden(v) for v in h)


def get_batch(source, i, bptt):
    seq_len = min(bptt, len(source) - 1 - i)
    data = source[i : i + seq_len]
    target = source[i + 1 : i + 1 + seq_len].view(-1)
    return data, target


def lm_train_batch(model, hidden, data, targets, lr=20.0, clip=0.25):
    """One iteration of the example's train(): zero_grad, repackage_hidden, forward, NLL loss,
    backward, clip, manual SGD. Returns (loss, the new hidden state)."""
    model.zero_grad()
    hidden = repackage_hidden(hidden)
    output, hidden = model(data, hidden)
    loss = nn.NLLLoss()(output, targets)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    for p in model.parameters():
        p.data.add_(p.grad, alpha=-lr)
    return loss, hidden


# ======================================== 5. BiLSTM tagger


class BiLSTMTagger(nn.Module):
    def __init__(self, vocab_size, tagset_size, embedding_dim, hidden_dim):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.lstm = nn.LSTM(embedding_dim, hidden_dim, batch_first=True, bidirectional=True)
        self.hidden2tag = nn.Linear(hidden_dim * 2, tagset_size)

    def forward(self, sentences, lengths):
        embeds = self.embedding(sentences)
        packed = pack_padded_sequence(embeds, lengths.cpu(), batch_first=True, enforce_sorted=False)
        packed_out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(packed_out, batch_first=True)
        return self.hidden2tag(out)


# ======================================== 6. time sequence prediction


class Sequence(nn.Module):
    def __init__(self, hidden=51):
        super().__init__()
        self.hidden = hidden
        self.lstm1 = nn.LSTMCell(1, hidden)
        self.lstm2 = nn.LSTMCell(hidden, hidden)
        self.linear = nn.Linear(hidden, 1)

    def forward(self, input, future=0):
        outputs = []
        h_t = torch.zeros(input.size(0), self.hidden, dtype=torch.double)
        c_t = torch.zeros(input.size(0), self.hidden, dtype=torch.double)
        h_t2 = torch.zeros(input.size(0), self.hidden, dtype=torch.double)
        c_t2 = torch.zeros(input.size(0), self.hidden, dtype=torch.double)

        for input_t in input.split(1, dim=1):
            h_t, c_t = self.lstm1(input_t, (h_t, c_t))
            h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
            output = self.linear(h_t2)
            outputs += [output]
        for _i in range(future):  # if we should predict the future
            h_t, c_t = self.lstm1(output, (h_t, c_t))
            h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
            output = self.linear(h_t2)
            outputs += [output]
        outputs = torch.cat(outputs, dim=1)
        return outputs


def sine_data(T=20, L=31, N=5, seed=2):
    """The example's generate_sine_wave.py, shrunk: N shifted sine waves of length L."""
    import numpy as np

    rng = np.random.RandomState(seed)
    x = np.empty((N, L), "int64")
    x[:] = np.array(range(L)) + rng.randint(-4 * T, 4 * T, N).reshape(N, 1)
    data = np.sin(x / 1.0 / T).astype("float64")
    return torch.from_numpy(data[:, :-1]), torch.from_numpy(data[:, 1:])


# ======================================== truth helpers


def _tensors(obj) -> list[Tensor]:
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _tensors(o)]
    return []


class Retainer:
    """Forward hook: ``retain_grad()`` on every tensor ``module`` returns, kept in call order.

    ``calls[k]`` is the flat list of tensors returned by the k-th call: ``[output, h_n]`` (GRU,
    RNN), ``[output, h_n, c_n]`` (LSTM), ``[h]`` or ``[h, c]`` (cells)."""

    def __init__(self, module: nn.Module):
        self.calls: list[list[Tensor]] = []
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        tensors = _tensors(output)
        if tensors and tensors[0].requires_grad:
            for t in tensors:
                t.retain_grad()
            self.calls.append(tensors)

    def remove(self):
        self.handle.remove()


def grad_or_zeros(t: Tensor) -> Tensor:
    return torch.zeros_like(t) if t.grad is None else t.grad


def pad_rows(rows: list[Tensor], B: int | None = None) -> Tensor:
    """Stack per-step [B_t, H] tensors into [T, B_max, H], zero-padded at the end of the batch
    (row i stays row i)."""
    B = max(r.shape[0] for r in rows) if B is None else B
    out = rows[0].new_zeros(len(rows), B, rows[0].shape[-1])
    for t, r in enumerate(rows):
        out[t, : r.shape[0]] = r
    return out


def cell_truth(ret: Retainer, i: int = 0, B: int | None = None) -> Tensor:
    """Total dL/d(state i) of every call of a cell, [T, B_max, H]: the ``.grad`` of what each
    call returned (i = 0: h, 1: c)."""
    return pad_rows([grad_or_zeros(call[i]).detach() for call in ret.calls], B)


def fused_per_step_truth(ret: Retainer, batch_first: bool) -> Tensor:
    """Total dL/dh_t for a single-layer unidirectional nn.RNN/GRU/LSTM called on sequences of
    any length, call after call: within a call, h_t is output[t]; its last step is also h_n, a
    second output of the same node holding the same value, so dL/dh_last = output[-1].grad +
    h_n.grad. [T_total, B, H]."""
    steps = []
    for call in ret.calls:
        out, h_n = call[0], call[1]
        g = grad_or_zeros(out).detach()
        g = g.transpose(0, 1) if batch_first else g  # time-major [L, B, H]
        g = g.clone()
        g[-1] += grad_or_zeros(h_n).detach()[0]
        steps.extend(g.unbind(0))
    return torch.stack(steps)


def lstm_equations(x, h, c, w_ih, w_hh, b_ih, b_hh):
    """One LSTM step from the PyTorch documentation: gates (i, f, g, o)."""
    gates = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
    i, f, g, o = gates.chunk(4, -1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * c + i * g
    return o * torch.tanh(c), c


class ExplicitLSTM(nn.Module):
    """A float64 stand-in for an ``nn.LSTM`` (no projection): same weights, same call signature
    and output layout, same inter-layer dropout (``F.dropout`` on each lower layer's whole output,
    as ``nn.LSTM`` does on CPU, so it draws the same random numbers), unrolled one documented
    equation step at a time. Every h_t and c_t it computes is retained, call after call, in
    ``states[(layer, direction)]`` as (h, c) pairs in processing order."""

    def __init__(self, lstm: nn.LSTM):
        super().__init__()
        assert not getattr(lstm, "proj_size", 0)
        self.num_layers = lstm.num_layers
        self.hidden_size = lstm.hidden_size
        self.input_size = lstm.input_size
        self.batch_first = lstm.batch_first
        self.dropout = lstm.dropout
        self.D = 2 if lstm.bidirectional else 1
        self.train(lstm.training)
        self.w = {}
        for layer in range(self.num_layers):
            for d in range(self.D):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                # leaves that require grad, so every state is in the graph even when the input
                # and initial state are not (their own .grad is never read)
                self.w[(layer, d)] = tuple(
                    getattr(lstm, n + sfx).detach().double().clone().requires_grad_()
                    for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                )
        self.states: dict[tuple[int, int], list[tuple[Tensor, Tensor]]] = {k: [] for k in self.w}

    def forward(self, input, hx=None):
        x = input.transpose(0, 1) if self.batch_first else input
        T, B = x.shape[:2]
        LD, H = self.num_layers * self.D, self.hidden_size
        if hx is None:
            zeros = torch.zeros(LD, B, H, dtype=x.dtype)
            hx = (zeros, zeros)
        h0, c0 = hx
        layer_in, h_n, c_n = x, [], []
        for layer in range(self.num_layers):
            outs = []
            for d in range(self.D):
                h, c = h0[layer * self.D + d], c0[layer * self.D + d]
                hs = [None] * T
                for t in reversed(range(T)) if d else range(T):
                    h, c = lstm_equations(layer_in[t], h, c, *self.w[(layer, d)])
                    h.retain_grad()
                    c.retain_grad()
                    self.states[(layer, d)].append((h, c))
                    hs[t] = h
                h_n.append(h)
                c_n.append(c)
                outs.append(torch.stack(hs))
            layer_out = torch.cat(outs, -1)
            if layer < self.num_layers - 1 and self.dropout and self.training:
                layer_out = F.dropout(layer_out, self.dropout, True)
            layer_in = layer_out
        out = layer_in.transpose(0, 1) if self.batch_first else layer_in
        return out, (torch.stack(h_n), torch.stack(c_n))

    def truth(self, layer: int = 0, direction: int = 0, state: str = "h") -> Tensor:
        """[T_total, B, H] plain-autograd total gradient on every retained state, call order."""
        i = "hc".index(state)
        return torch.stack([grad_or_zeros(s[i]).detach() for s in self.states[(layer, direction)]])

    def values(self, layer: int = 0, direction: int = 0, state: str = "h") -> Tensor:
        i = "hc".index(state)
        return torch.stack([s[i].detach() for s in self.states[(layer, direction)]])
