"""`rnn-diag inspect` through click: the tables, --json, --html, --input-size, and every
error case with exit status 2, a one-line message and no traceback."""

import json
import pickle
import re
import zipfile

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from rnn_diag.inspect.command import inspect

FAST = ["--steps", "40", "--warmup", "10"]


class Net(nn.Module):
    """A user's model class: pickling it whole needs this class to load."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.RNN(3, 4, num_layers=2)
        self.head = nn.Linear(4, 1)


def invoke(*args):
    return CliRunner().invoke(inspect, [str(a) for a in args])


def assert_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    out = result.output.strip()
    assert "\n" not in out, out  # one line
    assert "Traceback" not in out
    assert out.startswith("rnn-diag inspect: ")
    for f in fragments:
        assert re.search(f, out), (f, out)
    return out


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "net.pt"
    torch.save({"epoch": 2, "model": {f"module.{k}": v for k, v in Net().state_dict().items()}},
               path)
    return path


# ---------------------------------------------------------------------------- output


def test_tables_and_verdicts(saved):
    result = invoke(saved, *FAST)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "the weights under 'model'" in out
    assert "module.rnn  nn.RNN(3, 4, num_layers=2, nonlinearity='tanh')" in out
    header = next(line for line in out.splitlines() if "σ_max" in line)
    for col in ("layer", "dir", "gate", "ρ", "λ1", "λ2", "λ3", "decay/step", "horizon",
                "verdict"):
        assert col in header
    assert re.search(r"layer 0: (vanishing|stable|exploding)", out)
    assert re.search(r"layer 1: (vanishing|stable|exploding).*40 steps back", out)
    assert "does not store whether an nn.RNN uses tanh or relu; assumed tanh" in out
    assert "head" not in out.split("module.rnn")[1].split("ρ:")[0]  # the Linear is ignored


def test_nonlinearity_option_is_used_and_stated(saved):
    result = invoke(saved, *FAST, "--nonlinearity", "relu")
    assert result.exit_code == 0, result.output
    assert "nonlinearity='relu'" in result.output and "assumed relu" in result.output


def test_json_has_the_documented_keys(saved):
    result = invoke(saved, *FAST, "--json", "-k", "2")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) == {"schema", "rnn_diag_version", "checkpoint", "container", "lightning",
                         "settings", "modules", "skipped", "notes"}
    assert data["schema"] == "rnn_diag.inspect/1" and data["container"] == "model"
    assert data["settings"] == {"steps": 40, "warmup": 10, "input_scale": 1.0, "seed": 0,
                                "nonlinearity": "tanh", "lyapunov_k": 2}
    (m,) = data["modules"]
    assert {"name", "type_name", "signature", "kind", "input_size", "hidden_size", "proj_size",
            "num_layers", "bidirectional", "bias", "dtype", "nonlinearity",
            "nonlinearity_assumed", "layers"} == set(m)
    assert (m["name"], m["type_name"], m["num_layers"], m["nonlinearity_assumed"]) == \
        ("module.rnn", "RNN", 2, True)
    layer = m["layers"][1]
    assert {"layer", "direction", "driven_by", "state_size", "gates", "lyapunov", "method",
            "decay_per_step", "horizon", "log10_at_steps", "verdict", "edge_of_chaos",
            "sentence", "profile"} == set(layer)
    assert layer["gates"][0].keys() == {"gate", "spectral_radius", "sigma_max"}
    assert len(layer["lyapunov"]) == 2 and len(layer["profile"]) == 41
    assert layer["driven_by"].startswith("the output of layer 0 driven by x_t ~ N(0, 1²·I)")


def test_json_is_the_same_for_the_same_seed_and_differs_for_another(saved):
    a = json.loads(invoke(saved, *FAST, "--json").output)
    b = json.loads(invoke(saved, *FAST, "--json").output)
    c = json.loads(invoke(saved, *FAST, "--json", "--seed", "1").output)
    assert a == b
    assert a["modules"][0]["layers"][0]["lyapunov"] != c["modules"][0]["layers"][0]["lyapunov"]


def test_html_is_one_self_contained_page(saved, tmp_path):
    page = tmp_path / "out" / "inspect.html"
    result = invoke(saved, *FAST, "--html", page)
    assert result.exit_code == 0, result.output
    text = page.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    assert "default-src 'none'" in text  # nothing may be fetched
    srcs = re.findall(r'src="([^"]*)"', text)
    assert len(srcs) == 2 and all(s.startswith("data:image/") for s in srcs)
    assert "<script" not in text and "--vanish" in text  # the report's stylesheet
    assert "module.rnn" in text and "nn.RNN(3, 4, num_layers=2" in text
    assert [p.name for p in page.parent.iterdir()] == ["inspect.html"]  # no temporary left


def test_input_size_is_a_consistency_check(saved):
    assert invoke(saved, *FAST, "--input-size", "3").exit_code == 0
    assert_error(invoke(saved, *FAST, "--input-size", "7"),
                 r"--input-size 7 contradicts the weights", r"weight_ih_l0 has 3 columns",
                 r"module\.rnn")


# ---------------------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    assert_error(invoke(tmp_path / "nope.pt"), r"nope\.pt: no such file")


def test_directory(tmp_path):
    assert_error(invoke(tmp_path), r"is a directory")


def test_text_file(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello world\nsecond line\n")
    assert_error(invoke(p), r"not a PyTorch checkpoint", r"'hello world'")


def test_yaml_file(tmp_path):
    p = tmp_path / "config.yaml"
    p.write_text("model:\n  cell: lstm\n  hidden_size: 32\n")
    assert_error(invoke(p), r"not a PyTorch checkpoint", r"YAML", r"'model:'")


def test_numpy_file(tmp_path):
    import numpy as np

    p = tmp_path / "a.npy"
    np.save(p, np.zeros(3))
    assert_error(invoke(p), r"NumPy \.npy")


def test_a_pickled_model_is_refused_and_never_loaded_unsafely(tmp_path, monkeypatch):
    p = tmp_path / "whole_model.pt"
    torch.save(Net(), p)
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    out = assert_error(invoke(p), r"weights_only=True\) refused", r"Net\b",
                       r"never loads a checkpoint unsafely",
                       r"torch\.save\(model\.state_dict\(\)")
    assert "test_inspect_command.Net" in out
    assert calls and all(c.get("weights_only") is True for c in calls)
    assert all(c.get("map_location") == "cpu" for c in calls)


def test_a_plain_pickle_is_refused_with_torchs_reason(tmp_path):
    p = tmp_path / "d.pkl"
    with p.open("wb") as f:
        pickle.dump({"w": [1, 2]}, f, protocol=4)
    assert_error(invoke(p), r"refused", r"torch says: Unsupported operand")


def test_no_recurrent_weights_lists_what_was_found(tmp_path):
    p = tmp_path / "mlp.pt"
    mlp = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))
    torch.save({f"backbone.{k}": v for k, v in mlp.state_dict().items()}, p)
    assert_error(invoke(p), r"no recurrent weights found", r"4 tensors",
                 r"backbone\.0 \(2\)", r"backbone\.2 \(2\)", r"backbone\.0\.weight",
                 r"weight_hh_l0")


def test_truncated_zip_checkpoint(tmp_path):
    full = tmp_path / "full.pt"
    torch.save(nn.LSTM(3, 4).state_dict(), full)
    data = full.read_bytes()
    p = tmp_path / "cut.pt"
    p.write_bytes(data[: len(data) // 2])
    assert_error(invoke(p), r"truncated", rf"{len(data) // 2} bytes")


def test_truncated_legacy_checkpoint(tmp_path):
    full = tmp_path / "old.pt"
    torch.save(nn.GRU(3, 4).state_dict(), full, _use_new_zipfile_serialization=False)
    data = full.read_bytes()
    for n in (len(data) // 3, len(data) - 7):
        p = tmp_path / f"old_cut{n}.pt"
        p.write_bytes(data[:n])
        assert_error(invoke(p), r"truncated")


def test_legacy_checkpoint_loads(tmp_path):
    p = tmp_path / "old.pt"
    torch.save(nn.GRU(3, 4).state_dict(), p, _use_new_zipfile_serialization=False)
    result = invoke(p, *FAST)
    assert result.exit_code == 0, result.output
    assert "nn.GRU(3, 4)" in result.output


def test_empty_file(tmp_path):
    p = tmp_path / "empty.pt"
    p.write_bytes(b"")
    assert_error(invoke(p), r"empty \(0 bytes\)")


def test_zip_of_other_files(tmp_path):
    p = tmp_path / "bundle.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("readme.txt", "hi")
    assert_error(invoke(p), r"not a PyTorch checkpoint", r"zip archive")


def test_torchscript_archive(tmp_path):
    p = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(nn.GRU(2, 3)), p)
    assert_error(invoke(p), r"TorchScript", r"state_dict")


def test_a_bare_tensor(tmp_path):
    p = tmp_path / "t.pt"
    torch.save(torch.zeros(3), p)
    assert_error(invoke(p), r"holds a Tensor, not a dict")


def test_html_escapes_names_from_the_checkpoint(tmp_path):
    p = tmp_path / "hostile.pt"
    torch.save({f"<script>x</script>.{k}": v for k, v in nn.GRU(2, 3).state_dict().items()}, p)
    page = tmp_path / "h.html"
    assert invoke(p, *FAST, "--html", page).exit_code == 0
    text = page.read_text(encoding="utf-8")
    assert "<script>" not in text and "&lt;script&gt;x&lt;/script&gt;" in text
