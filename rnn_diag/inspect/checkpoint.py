"""Loading a checkpoint safely, and the one-line errors of ``rnn-diag inspect``.

Only ``torch.load(path, map_location="cpu", weights_only=True)`` is ever called: a pickle that it
refuses is reported (with torch's reason), never re-read unsafely. Before that, the file's first
bytes say what it is, so a text file, a NumPy array or a truncated archive gets a message about
*that* rather than torch's internal one:

* ``PK\\x03\\x04`` — a zip archive, what ``torch.save`` writes since PyTorch 1.6; without its
  end-of-archive directory it was cut short (truncated);
* ``\\x80`` — a pickle (``torch.save(..., _use_new_zipfile_serialization=False)`` or ``pickle``);
* ``\\x93NUMPY`` — a NumPy ``.npy`` array; anything else is not a checkpoint.

The loaded object is reduced to a flat ``{name: Tensor}`` state dict by
:func:`extract_state_dict`.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["InspectError", "LoadedCheckpoint", "extract_state_dict", "load_checkpoint"]

#: Top-level keys under which training scripts commonly keep the model's state dict, in the
#: order they are tried ("state_dict": Lightning and many scripts).
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network")

SAVE_HINT = "save the weights instead: torch.save(model.state_dict(), 'model.pt')"


class InspectError(Exception):
    """A problem with the user's input, reported as one line with exit status 2."""


@dataclass
class LoadedCheckpoint:
    """A checkpoint as read from disk.

    Attributes:
        path: the file.
        state_dict: ``{dotted name: Tensor}``, every tensor of the model's weights (CPU).
        container: where in the loaded object they were: ``"state_dict"`` (a Lightning
            checkpoint or a ``{"state_dict": ...}`` wrapper), ``"model"``, ... , ``""`` for a plain
            state dict, ``"nested dicts"`` when tensors were collected from several sub-dicts.
        top_keys: the loaded object's top-level keys (for the notes).
    """

    path: Path
    state_dict: dict
    container: str
    top_keys: list[str]

    @property
    def lightning(self) -> bool:
        """True for a checkpoint written by Lightning (``pytorch-lightning_version`` key)."""
        return any(k.endswith("lightning_version") for k in self.top_keys)


def _kind_of_bytes(head: bytes) -> str:
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head.startswith(b"\x80"):
        return "pickle"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    return "other"


def _describe_other(path: Path, head: bytes) -> str:
    """What a file that is neither a zip archive nor a pickle looks like, in a few words."""
    if head[8:10] == b'{"' and head[6:8] == b"\x00\x00":  # u64 header length, then JSON
        return "it looks like a safetensors file, which rnn-diag inspect does not read yet"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"it starts with the bytes {head[:8]!r}"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    first = first if len(first) <= 40 else first[:37] + "..."
    if first.startswith(("{", "[")):
        kind = "JSON"
    elif first.startswith("---") or re.match(r"^[\w.\"'-]+\s*:(\s|$)", first):
        kind = "YAML"
    else:
        kind = "text"
    return f"it is a {kind} file (first line: {first!r})"


def _weights_only_reason(message: str) -> str:
    """torch's reason for refusing a pickle, shortened to a phrase."""
    m = re.search(r"GLOBAL ([\w.]+)", message)
    if m:
        return f"it needs the Python object {m.group(1)} (a class or function of your code or a " \
               "library), and constructing it could run arbitrary code"
    m = re.search(r"WeightsUnpickler error:\s*(.+)", message, re.DOTALL)
    if m:
        reason = m.group(1).strip().splitlines()[0].strip()
        return f"torch says: {reason}"
    return "torch says: " + message.strip().splitlines()[0][:120]


def _truncated(path: Path, size: int, detail: str) -> InspectError:
    return InspectError(f"{path}: the file is truncated or corrupted ({size} bytes; {detail}); "
                        "copy or save it again")


def load_checkpoint(path) -> LoadedCheckpoint:
    """Read ``path`` with ``torch.load(weights_only=True, map_location="cpu")``.

    Raises:
        InspectError: the file does not exist or is a directory, is empty, is not a PyTorch
            checkpoint (text, YAML, NumPy, a zip of something else, a TorchScript archive), is
            truncated, or holds a pickle that ``weights_only`` refuses (custom classes); the
            message is one line and says what to do.
    """
    import pickle
    import warnings

    import torch

    path = Path(path)
    if not path.exists():
        raise InspectError(f"{path}: no such file")
    if path.is_dir():
        raise InspectError(f"{path}: is a directory; give the checkpoint file (e.g. model.pt or "
                           "a Lightning .ckpt)")
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(64)
    except OSError as exc:
        raise InspectError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if size == 0:
        raise InspectError(f"{path}: the file is empty (0 bytes): truncated, or not a checkpoint")
    kind = _kind_of_bytes(head)
    if kind == "npy":
        raise InspectError(f"{path}: not a PyTorch checkpoint: it is a NumPy .npy array; "
                           "rnn-diag inspect reads files written by torch.save or Lightning")
    if kind == "other":
        raise InspectError(f"{path}: not a PyTorch checkpoint: {_describe_other(path, head)}; "
                           "rnn-diag inspect reads files written by torch.save or Lightning")
    if kind == "zip" and not zipfile.is_zipfile(path):
        raise _truncated(path, size, "its zip directory is missing")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on protocols and TorchScript
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        if "Weights only load failed" not in msg:
            raise _truncated(path, size, f"unpickling failed: {msg.splitlines()[0][:80]}") from None
        hint = SAVE_HINT
        if path.suffix == ".ckpt" or "lightning" in msg.lower():
            hint += (" (for a Lightning checkpoint whose hyper-parameters hold such an object: "
                     "LitModel.load_from_checkpoint(path) in your code, then save its state_dict)")
        raise InspectError(
            f"{path}: torch.load(weights_only=True) refused this pickle: "
            f"{_weights_only_reason(msg)}; rnn-diag never loads a checkpoint unsafely, so "
            f"{hint}"
        ) from None
    except (EOFError, ValueError) as exc:  # pickle cut short
        raise _truncated(path, size, f"{type(exc).__name__}: {str(exc)[:60] or 'ran out of data'}"
                         ) from None
    except RuntimeError as exc:
        msg = str(exc)
        if "TorchScript" in msg:
            raise InspectError(
                f"{path}: a TorchScript archive (torch.jit.save), not a state dict; "
                f"{SAVE_HINT}") from None
        if "not in a subdirectory" in msg or "data.pkl" in msg:
            raise InspectError(f"{path}: not a PyTorch checkpoint: a zip archive of other files "
                               "(torch.save writes <name>/data.pkl inside)") from None
        raise _truncated(path, size, msg.splitlines()[0][:80]) from None
    except Exception as exc:  # struct.error and friends from a cut-short legacy pickle
        if kind == "pickle":
            raise _truncated(path, size, f"{type(exc).__name__}: {str(exc)[:60]}") from None
        raise
    state_dict, container, top = extract_state_dict(obj)
    return LoadedCheckpoint(path, state_dict, container, top)


def _tensors(obj, prefix: str, out: dict, depth: int = 0) -> None:
    import torch

    if depth > 6 or not isinstance(obj, dict):
        return
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            out[name] = value
        elif isinstance(value, dict):
            _tensors(value, name + ".", out, depth + 1)


def extract_state_dict(obj) -> tuple[dict, str, list[str]]:
    """The model weights of a loaded checkpoint as one flat ``{name: Tensor}``.

    A dict of tensors is a state dict as is. Otherwise the first of :data:`WRAPPER_KEYS`
    ("state_dict", "model_state_dict", "model", ...) that holds a dict with tensors is used;
    failing that, tensors are collected from nested dicts with dotted names
    (``{"encoder": sd}`` gives ``"encoder.rnn.weight_hh_l0"``).

    Returns:
        ``(state_dict, container, top_keys)`` — see :class:`LoadedCheckpoint`.

    Raises:
        InspectError: the checkpoint holds no dict (e.g. a bare tensor or a list).

    Example:
        >>> import torch
        >>> sd, where, _ = extract_state_dict({"epoch": 3, "model": {"w": torch.zeros(1)}})
        >>> list(sd), where
        (['w'], 'model')
    """
    import torch

    if not isinstance(obj, dict):
        raise InspectError(
            f"the checkpoint holds a {type(obj).__name__}, not a dict of weights; "
            f"{SAVE_HINT}")
    top = [str(k) for k in obj]
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {str(k): v for k, v in obj.items()}, "", top
    for key in WRAPPER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, dict):
            flat: dict = {}
            _tensors(inner, "", flat)
            if flat:
                return flat, key, top
    flat = {}
    _tensors(obj, "", flat)
    return flat, "nested dicts", top
