"""Helpers of the integration tests: a backward pass of a small model, the expected numbers
computed from ``probe.frame()`` with ``summarise_frame``, and a reader for W&B's offline run
files."""

from __future__ import annotations

import glob
import json
import os
import struct
import time

import numpy as np
import pandas as pd
import torch
from torch import nn

from rnn_diag.probes.summaries import VERDICT_CODES, summarise_frame


def backward(model: nn.Module, T: int = 15, batch: int = 4, seed: int = 0) -> None:
    """One forward and backward of a recurrent ``model`` (loss on the last output)."""
    torch.manual_seed(seed)
    out, _ = model(torch.randn(T, batch, model.input_size))
    out[-1].pow(2).sum().backward()


def expected_scalars(frame: pd.DataFrame, tag_module: str = "model") -> dict[str, float]:
    """``{tag: value}`` for the last iteration of ``frame``, straight from summarise_frame and
    the frame's t = 0 row (the definitions the loggers must follow)."""
    last = frame[frame["iteration"] == frame["iteration"].max()]
    out = {}
    for row in summarise_frame(last).to_dict("records"):
        name = tag_module if row["module"] == "" else row["module"]
        layer = f"layer{row['layer']}" + ("_reverse" if row["direction"] == 1 else "")
        prefix = f"rnn_diag/{name}/{layer}"
        first = last[(last["module"] == row["module"]) & (last["layer"] == row["layer"])
                     & (last["direction"] == row["direction"]) & (last["state"] == "h")
                     & (last["metric"] == "total_mean") & (last["t"] == 0)]["value"]
        assert len(first) == 1
        values = {"horizon": float(row["horizon"]) if row["horizon"] >= 0 else np.nan,
                  "decay_per_step": float(row["decay_per_step"]),
                  "verdict": VERDICT_CODES.get(row["verdict"], np.nan),
                  "log10_grad_first": float(first.iloc[0]),
                  "steps": float(row["steps"])}
        # undefined values (horizon -1, NaN, +-inf, undetermined verdict) are not logged
        out.update({f"{prefix}/{k}": v for k, v in values.items() if np.isfinite(v)})
    return out


def wandb_records(run_dir: str):
    """The protobuf records of an offline run's ``run-*.wandb`` file.

    W&B 0.31 no longer ships a Python reader (``wandb.sdk.internal.datastore`` is gone with the
    Python backend); the file is a 7-byte header (":W&B", magic, version) followed by records
    in LevelDB's log format: 32 KiB blocks of chunks ``crc32c:4 length:2 type:1 data``, type
    1 = a full record, 2/3/4 = first/middle/last piece of one.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = glob.glob(os.path.join(run_dir, "run-*.wandb"))
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b":W&B"
    pos, block, pieces = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # zero padding
            pos += left
            continue
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        pieces = chunk if kind in (1, 2) else pieces + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pieces)
            yield record


def finished_records(run_dir: str, timeout: float = 60.0) -> list:
    """The records of a finished offline run. ``run.finish()`` can return before W&B's service
    has written the last records (seen here: the history rows of ``log(..., step=)``), so wait
    for the final "exit" record; a record read half-written fails to parse and is read again."""
    from google.protobuf.message import DecodeError

    deadline = time.monotonic() + timeout
    while True:
        try:
            records = list(wandb_records(run_dir))
        except (DecodeError, struct.error):  # read while W&B's service was writing a record
            records = []
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        if time.monotonic() > deadline:
            raise TimeoutError(f"no exit record in {run_dir} after {timeout} s")
        time.sleep(0.1)


def wandb_history(run_dir: str) -> list[dict]:
    """The committed history rows of a finished offline run: ``{key: value}``, nested values
    (media) as dicts."""
    rows = []
    for record in finished_records(run_dir):
        if record.WhichOneof("record_type") != "history":
            continue
        row: dict = {}
        for item in record.history.item:
            keys = list(item.nested_key) or [item.key]
            target = row
            for key in keys[:-1]:
                target = target.setdefault(key, {})
            target[keys[-1]] = json.loads(item.value_json)
        rows.append(row)
    return rows


def wandb_metrics(run_dir: str) -> list:
    return [r.metric for r in finished_records(run_dir)
            if r.WhichOneof("record_type") == "metric"]
