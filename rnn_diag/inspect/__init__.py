"""``rnn-diag inspect``: the recurrent weights of a saved checkpoint, without the user's code.

One concept per module, in the order the command uses them (docs/inspect.md):

* :mod:`.checkpoint` — ``torch.load(weights_only=True)`` only, the file's kind from its first
  bytes, the state dict inside a wrapper (Lightning's ``"state_dict"``, ``"model"``, ...),
  and :class:`~.checkpoint.InspectError` (one line, exit status 2);
* :mod:`.weights` — recurrent weight groups found by PyTorch's parameter names under any
  prefix, their kind and sizes from the shapes, and the rebuilt ``torch.nn`` modules;
* :mod:`.analysis` — per gate the spectra, per layer the Lyapunov exponents and the
  Jacobian-product decay along a Gaussian-driven trajectory, as dataclasses with ``to_dict``;
* :mod:`.verdict` — the plain-language sentence per layer;
* :mod:`.text`, :mod:`.html`, :mod:`.figures` — rendering;
* :mod:`.command` — the click command ``inspect``.
"""
