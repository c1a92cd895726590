"""Scratch buffers that survive from one backward pass to the next.

A fresh multi-megabyte CPU tensor costs a page fault per 4 KiB the first time it is written,
and glibc returns blocks above 32 MiB to the system on free, so a [T, B, 4H] LSTM gate buffer
allocated anew every step spends more time faulting than computing (measured: a 64 MiB matmul
output took 48 ms fresh and 14 ms into an existing buffer). Reusing the buffers removes that.
"""

from __future__ import annotations

import torch
from torch import Tensor


class Workspace:
    """Named, reusable, uninitialised buffers.

    Example:
        >>> ws = Workspace()
        >>> a = ws.empty("gates", (4, 3), torch.float32, "cpu")
        >>> a.data_ptr() == ws.empty("gates", (4, 3), torch.float32, "cpu").data_ptr()
        True
    """

    def __init__(self):
        self._buffers: dict[str, Tensor] = {}

    def empty(self, name: str, shape, dtype: torch.dtype, device) -> Tensor:
        """An uninitialised buffer of this shape; the same memory as the previous request of
        ``name`` when shape, dtype and device match. Its previous content is garbage."""
        shape = torch.Size(shape)
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype or buf.device != torch.device(
            device
        ):
            buf = torch.empty(shape, dtype=dtype, device=device)
            self._buffers[name] = buf
        return buf

    def clear(self) -> None:
        """Release every buffer."""
        self._buffers.clear()
