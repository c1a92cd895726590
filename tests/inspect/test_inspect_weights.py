"""Finding recurrent weight groups in saved state dicts and rebuilding the modules: every group
of a real model saved with torch.save is found with its kind and sizes, and the rebuilt module
computes exactly what the original computes."""

import pytest
import torch
from torch import nn

from rnn_diag.inspect.checkpoint import load_checkpoint
from rnn_diag.inspect.weights import find_groups, rebuild


class Zoo(nn.Module):
    """One of each: prefixes, layers, directions, projection, no bias, cells, two RNNs."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.rnn = nn.RNN(3, 5, num_layers=2, nonlinearity="relu")
        self.lstm = nn.LSTM(4, 6, num_layers=2, bidirectional=True, proj_size=3)
        self.gru = nn.GRU(2, 7, bias=False)
        self.cells = nn.ModuleDict({
            "lstm": nn.LSTMCell(3, 4), "gru": nn.GRUCell(3, 4), "rnn": nn.RNNCell(3, 4),
        })
        self.first = nn.RNN(2, 3)
        self.second = nn.RNN(2, 3)
        self.head = nn.Linear(6, 1)


#: (prefix, type, kind, input, hidden, proj, layers, bidirectional, bias)
EXPECTED = {
    "module.encoder.rnn": ("RNN", "rnn", 3, 5, 0, 2, False, True),
    "module.lstm": ("LSTM", "lstm", 4, 6, 3, 2, True, True),
    "module.gru": ("GRU", "gru", 2, 7, 0, 1, False, False),
    "module.cells.lstm": ("LSTMCell", "lstm", 3, 4, 0, 1, False, True),
    "module.cells.gru": ("GRUCell", "gru", 3, 4, 0, 1, False, True),
    "module.cells.rnn": ("RNNCell", "rnn", 3, 4, 0, 1, False, True),
    "module.first": ("RNN", "rnn", 2, 3, 0, 1, False, True),
    "module.second": ("RNN", "rnn", 2, 3, 0, 1, False, True),
}


@pytest.fixture(scope="module")
def zoo_file(tmp_path_factory):
    torch.manual_seed(0)
    model = Zoo()
    path = tmp_path_factory.mktemp("zoo") / "zoo.pt"
    # DataParallel's "module." prefix on top of the model's own prefixes
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, path)
    return model, path


def _original(model, prefix):
    m = model
    for part in prefix.removeprefix("module.").split("."):
        m = m[part] if isinstance(m, nn.ModuleDict) else getattr(m, part)
    return m


def test_every_group_is_found_with_its_kind_and_sizes(zoo_file):
    _, path = zoo_file
    groups, skipped = find_groups(load_checkpoint(path).state_dict)
    assert skipped == []
    got = {g.prefix: (g.type_name, g.kind, g.input_size, g.hidden_size, g.proj_size,
                      g.num_layers, g.bidirectional, g.bias) for g in groups}
    assert got == EXPECTED


def test_rebuilt_modules_reproduce_the_originals_exactly(zoo_file):
    model, path = zoo_file
    groups, _ = find_groups(load_checkpoint(path).state_dict)
    torch.manual_seed(1)
    for g in groups:
        original = _original(model, g.prefix).eval()
        nonlinearity = getattr(original, "nonlinearity", "tanh")
        rebuilt = rebuild(g, nonlinearity)
        assert type(rebuilt) is type(original)
        x = torch.randn(9, original.input_size) if g.cell else torch.randn(9, 2,
                                                                          original.input_size)
        with torch.no_grad():
            a, b = original(x), rebuilt(x)
        flat_a = torch.cat([t.flatten() for t in _tensors(a)])
        flat_b = torch.cat([t.flatten() for t in _tensors(b)])
        assert torch.equal(flat_a, flat_b), g.prefix


def _tensors(out):
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in _tensors(o)]


def test_the_wrong_nonlinearity_changes_the_output(zoo_file):
    # the state dict does not store tanh vs relu: the rebuilt module follows what it is told
    model, path = zoo_file
    g = next(g for g in find_groups(load_checkpoint(path).state_dict)[0]
             if g.prefix == "module.encoder.rnn")
    x = torch.randn(5, 1, 3)
    with torch.no_grad():
        assert not torch.equal(rebuild(g, "tanh")(x)[0], model.encoder.rnn(x)[0])
        assert torch.equal(rebuild(g, "relu")(x)[0], model.encoder.rnn(x)[0])


def test_a_custom_weight_hh_that_fits_no_module_is_skipped_with_a_reason():
    sd = {"custom.weight_hh": torch.zeros(5, 3), "custom.weight_ih": torch.zeros(5, 2),
          **{f"rnn.{k}": v for k, v in nn.GRU(2, 4).state_dict().items()}}
    groups, skipped = find_groups(sd)
    assert [g.prefix for g in groups] == ["rnn"]
    assert skipped and skipped[0][0] == "custom" and "1, 3 or 4" in skipped[0][1]


def test_a_missing_layer_is_reported_by_rebuild():
    sd = nn.LSTM(3, 4, num_layers=3).state_dict()
    del sd["weight_hh_l1"]
    (g,), _ = find_groups(sd)
    with pytest.raises(ValueError, match="weight_hh_l1"):
        rebuild(g)


def test_half_precision_weights_are_rebuilt_in_float32():
    sd = nn.GRU(2, 3).half().state_dict()
    (g,), _ = find_groups(sd)
    assert g.dtype == "float16"
    m = rebuild(g)
    assert m.weight_hh_l0.dtype == torch.float32
    assert torch.equal(m.weight_hh_l0, sd["weight_hh_l0"].float())
