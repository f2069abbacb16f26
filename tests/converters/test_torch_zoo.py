"""A zoo of PyTorch model definitions in the styles people write, converted through every route.

Each module is the truth: its own ``forward`` output for each sequence. Every
route (the module, its state dict, a ``.pt``, a ``.safetensors``, the CLI)
must reproduce it within 1e-5, or the conversion must be refused with a
message naming what cannot be run. A silent difference fails a test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import framework

torch = framework("torch")
import torch.nn.functional as F
from safetensors.torch import save_model
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import rnninfer
from rnninfer.cli import main
from rnninfer.converters.base import finish

TOL = 1e-5
V, E, H = 40, 8, 6
LENGTHS = (1, 4, 9)


# ---- the zoo ---------------------------------------------------------------------------
class BiLSTMBackwardFirst(nn.Module):
    """The sentiment-notebook shape, concatenating the final states backward first."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(V, E)
        self.rnn = nn.LSTM(E, H, num_layers=2, bidirectional=True, dropout=0.5, batch_first=True)
        self.fc = nn.Linear(2 * H, 3)
        self.dropout = nn.Dropout(0.5)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        embedded = self.dropout(self.embedding(text))
        _, (hidden, _) = self.rnn(embedded)
        hidden = self.dropout(torch.cat((hidden[-1, :, :], hidden[-2, :, :]), dim=1))
        return self.fc(hidden)


class BiLSTMForwardFirstSigmoidAttr(nn.Module):
    """Forward-first concatenation and ``self.sig = nn.Sigmoid()`` applied in forward."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(V, E)
        self.lstm = nn.LSTM(E, H, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(2 * H, 1)
        self.sig = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(self.embedding(x))
        return self.sig(self.fc(torch.cat([h[-2], h[-1]], dim=1))).squeeze(1)


class GRULastStep(nn.Module):
    """``output[:, -1]`` of a one-direction GRU and a functional sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.gru = nn.GRU(E, H, num_layers=2, batch_first=True)
        self.out = nn.Linear(H, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output, _ = self.gru(self.emb(x))
        return torch.sigmoid(self.out(output[:, -1, :]))


class BiGRUSumLogSoftmax(nn.Module):
    """The two directions summed, then ``F.log_softmax``."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.gru = nn.GRU(E, H, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(H, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h = self.gru(self.emb(x))
        return F.log_softmax(self.fc(h[-1] + h[-2]), dim=1)


class BiLSTMMeanNoHead(nn.Module):
    """The mean of the directions' final states is the output (no Linear)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.lstm = nn.LSTM(E, H, bidirectional=True, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(self.emb(x))
        return (h[-2] + h[-1]) / 2


class StackedSoftmaxAttr(nn.Module):
    """Two recurrent modules one after the other, ``self.softmax = nn.Softmax(dim=1)``."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(V, E)
        self.lstm1 = nn.LSTM(E, H, batch_first=True)
        self.lstm2 = nn.LSTM(H, H, batch_first=True)
        self.fc = nn.Linear(H, 4)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm1(self.embedding(x))
        _, (h, _) = self.lstm2(out)
        return self.softmax(self.fc(h[-1]))


class PackedLengths(nn.Module):
    """Packed sequences with the lengths passed to forward."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(V, E, padding_idx=0)
        self.rnn = nn.GRU(E, H, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(2 * H, 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(self.emb(x), lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, h = self.rnn(packed)
        return torch.sigmoid(self.fc(torch.cat([h[-2], h[-1]], dim=1)))


class TiedWordLM(nn.Module):
    """PyTorch's word-language-model example: seq-first, tied decoder, log_softmax per step."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.2)
        self.encoder = nn.Embedding(V, H)
        self.rnn = nn.LSTM(H, H, 2, dropout=0.2)
        self.decoder = nn.Linear(H, V)
        self.decoder.weight = self.encoder.weight

    def forward(self, x: torch.Tensor, hidden: Any = None) -> tuple[torch.Tensor, Any]:
        emb = self.drop(self.encoder(x))
        output, hidden = self.rnn(emb, hidden)
        decoded = self.decoder(self.drop(output)).view(-1, V)
        return F.log_softmax(decoded, dim=1), hidden


class RNNReluTransposed(nn.Module):
    """A batch-first input transposed inside forward for a seq-first ``nn.RNN(relu)``."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.rnn = nn.RNN(E, H, nonlinearity="relu")
        self.fc = nn.Linear(H, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h = self.rnn(self.emb(x).transpose(0, 1))
        return torch.tanh(self.fc(h.squeeze(0)))


class FeatureMLPHead(nn.Module):
    """Float features, a two-layer head with activation and dropout attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(5, H, batch_first=True)
        self.fc1 = nn.Linear(H, 7)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(7, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(x)
        z = F.dropout(self.relu(self.fc1(h[-1])), 0.3, self.training)
        return self.fc2(z)


class BiTagger(nn.Module):
    """A per-step tagger: Linear on every step of a bidirectional output, log_softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.lstm = nn.LSTM(E, H, bidirectional=True, batch_first=True)
        self.hidden2tag = nn.Linear(2 * H, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.emb(x))
        return F.log_softmax(self.hidden2tag(out), dim=-1)


class BiFirstLastOutputs(nn.Module):
    """The final states read from the output: forward at the last step, backward at the first."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.lstm = nn.LSTM(E, H, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(2 * H, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.emb(x))
        return self.fc(torch.cat([out[:, -1, :H], out[:, 0, H:]], dim=1))


class BiGRUSequenceNoHead(nn.Module):
    """The recurrent output itself, every step."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.gru = nn.GRU(E, H, bidirectional=True, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(self.emb(x))[0]


class TutorialTagger(nn.Module):
    """PyTorch's sequence-models tutorial: one unbatched sentence, views inside forward."""

    def __init__(self) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(V, E)
        self.lstm = nn.LSTM(E, H)
        self.hidden2tag = nn.Linear(H, 5)

    def forward(self, sentence: torch.Tensor) -> torch.Tensor:
        embeds = self.word_embeddings(sentence)
        lstm_out, _ = self.lstm(embeds.view(len(sentence), 1, -1))
        tag_space = self.hidden2tag(lstm_out.view(len(sentence), -1))
        return F.log_softmax(tag_space, dim=1)


@dataclass(frozen=True)
class Zoo:
    make: Callable[[], nn.Module]
    #: what a file route needs to be told (the module route reads it from forward).
    opts: dict[str, str] = field(default_factory=dict)
    seq_first: bool = False
    lengths_arg: bool = False
    features: int = 0
    #: forward takes one unbatched sequence.
    single: bool = False


ZOO = {
    "bilstm-backward-first": Zoo(BiLSTMBackwardFirst, {"readout": "last_backward_first", "head_activation": "identity"}),
    "bilstm-forward-first-sigmoid-attr": Zoo(BiLSTMForwardFirstSigmoidAttr, {"head_activation": "sigmoid"}),
    "gru-output-last-step": Zoo(GRULastStep, {"head_activation": "sigmoid"}),
    "bigru-sum-log-softmax": Zoo(BiGRUSumLogSoftmax, {"readout": "last_sum", "head_activation": "log_softmax"}),
    "bilstm-mean-no-head": Zoo(BiLSTMMeanNoHead, {"readout": "last_mean"}),
    "stacked-softmax-attr": Zoo(StackedSoftmaxAttr, {"head_activation": "softmax"}),
    "packed-lengths": Zoo(PackedLengths, {"head_activation": "sigmoid"}, lengths_arg=True),
    "tied-word-lm": Zoo(TiedWordLM, {"readout": "sequence", "head_activation": "log_softmax"}, seq_first=True),
    "rnn-relu-transposed": Zoo(RNNReluTransposed, {"nonlinearity": "relu", "head_activation": "tanh"}),
    "features-mlp-head": Zoo(FeatureMLPHead, {"hidden_activation": "relu", "head_activation": "identity"},
                             features=5),
    "bi-tagger": Zoo(BiTagger, {"readout": "sequence", "head_activation": "log_softmax"}),
    "bi-first-last-outputs": Zoo(BiFirstLastOutputs, {"head_activation": "identity"}),
    "bigru-sequence-no-head": Zoo(BiGRUSequenceNoHead, {"readout": "sequence"}),
    "tutorial-tagger-unbatched": Zoo(TutorialTagger, {"readout": "sequence", "head_activation": "log_softmax"},
                                     single=True),
}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _net(z: Zoo) -> nn.Module:
    torch.manual_seed(7)
    return z.make().eval()


def _sequences(z: Zoo) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    if z.features:
        return [rng.standard_normal((n, z.features)).astype(np.float32) for n in LENGTHS]
    return [rng.integers(1, V, size=n) for n in LENGTHS]


def _source_output(net: nn.Module, z: Zoo, seq: np.ndarray) -> np.ndarray:
    """The module's own answer for one sequence alone."""
    x = torch.from_numpy(seq)
    x = x if z.single else x[:, None] if z.seq_first else x[None]
    with torch.no_grad():
        out = net(x, torch.tensor([len(seq)])) if z.lengths_arg else net(x)
    if isinstance(out, tuple):
        out = out[0]
    return out.double().numpy().reshape(-1)


def _example(z: Zoo) -> tuple[Any, ...] | None:
    if not z.lengths_arg:
        return None
    return (torch.randint(1, V, (3, 7)), torch.tensor([7, 3, 5]))


def _assert_matches(model: rnninfer.Model, net: nn.Module, z: Zoo, route: str) -> None:
    for seq in _sequences(z):
        want = _source_output(net, z, seq)
        got = np.asarray(model.predict(seq), dtype=np.float64).reshape(-1)
        assert got.shape == want.shape, route
        err = float(np.max(np.abs(got - want)))
        assert err <= TOL, f"{route}: max difference {err:.3g} on a sequence of length {len(seq)}"


def _routes(z: Zoo, net: nn.Module, tmp_path: Path) -> dict[str, rnninfer.Model]:
    models = {"module": rnninfer.from_torch(net, example_inputs=_example(z))}
    opts: dict[str, Any] = dict(z.opts)
    state = net.state_dict()
    pt = tmp_path / "model.pt"
    torch.save(state, pt)
    st = tmp_path / "model.safetensors"
    save_model(net, str(st))  # keeps one name of tied tensors, records the tie in its metadata
    models["state_dict"] = rnninfer.from_torch(state, **opts)
    models["pt"] = rnninfer.from_torch(pt, **opts)
    models["safetensors"] = rnninfer.from_torch(st, **opts)
    out = tmp_path / "cli.npz"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in opts.items()]
    assert main(["convert", str(st), "-o", str(out), *flags]) == 0
    models["cli"] = rnninfer.load(out)
    return models


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_every_route_matches_the_module(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    z = ZOO[name]
    net = _net(z)
    models = _routes(z, net, tmp_path)
    capsys.readouterr()
    for route, model in models.items():
        _assert_matches(model, net, z, route)
    base = models["module"]
    for route, model in models.items():
        assert model.spec == base.spec, route


def test_packed_batch_with_padding_matches(tmp_path: Path) -> None:
    net = _net(ZOO["packed-lengths"])
    x = torch.randint(1, V, (4, 9))
    lengths = torch.tensor([9, 2, 5, 1])
    model = rnninfer.from_torch(net, example_inputs=(x, lengths))
    with torch.no_grad():
        want = net(x, lengths).double().numpy()
    got = model.predict(x.numpy(), lengths=lengths.numpy())
    assert float(np.max(np.abs(got - want))) <= TOL


def test_module_route_reads_forward_and_says_so() -> None:
    model = rnninfer.from_torch(_net(ZOO["bilstm-backward-first"]))
    assert any("last_backward_first" in n for n in model.producer["notes"])
    model = rnninfer.from_torch(_net(ZOO["bilstm-forward-first-sigmoid-attr"]))
    assert model.spec.head[-1].activation == "sigmoid"
    model = rnninfer.from_torch(_net(ZOO["bilstm-mean-no-head"]))
    assert model.spec.layers[-1].merge == "ave"
    model = rnninfer.from_torch(_net(ZOO["bigru-sum-log-softmax"]))
    assert model.spec.layers[-1].merge == "sum"
    assert model.spec.head[-1].activation == "log_softmax"


def test_options_that_contradict_forward_are_refused() -> None:
    net = _net(ZOO["bilstm-backward-first"])
    with pytest.raises(ValueError, match="forward reads readout 'last_backward_first' but readout='last'"):
        rnninfer.from_torch(net, readout="last")
    net = _net(ZOO["bilstm-forward-first-sigmoid-attr"])
    with pytest.raises(ValueError, match=r"forward applies 'sigmoid'.*head_activation='softmax'"):
        rnninfer.from_torch(net, head_activation="softmax")


def test_forward_first_file_default_differs_from_backward_first() -> None:
    """Without the readout option a file cannot know the order: the option is what fixes it."""
    net = _net(ZOO["bilstm-backward-first"])
    with pytest.warns(UserWarning, match="head_activation"):
        plain = rnninfer.from_torch(net.state_dict())
    told = rnninfer.from_torch(net.state_dict(), readout="last_backward_first", head_activation="identity")
    seq = _sequences(ZOO["bilstm-backward-first"])[2]
    want = _source_output(net, ZOO["bilstm-backward-first"], seq)
    assert np.max(np.abs(told.predict(seq) - want)) <= TOL
    assert np.max(np.abs(plain.predict(seq) - want)) > TOL


def test_state_dict_without_head_activation_warns_with_the_remedy() -> None:
    net = _net(ZOO["gru-output-last-step"])
    with pytest.warns(UserWarning, match=r"head_activation='sigmoid'.*--head-activation"):
        rnninfer.from_torch(net.state_dict())


def test_cli_accepts_log_softmax(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = _net(ZOO["bigru-sum-log-softmax"])
    pt = tmp_path / "m.pt"
    torch.save(net.state_dict(), pt)
    out = tmp_path / "m.npz"
    assert main(["convert", str(pt), "-o", str(out), "--readout", "last_sum",
                 "--head-activation", "log_softmax"]) == 0
    capsys.readouterr()
    assert rnninfer.load(out).spec.head[-1].activation == "log_softmax"


# ---- refusals ----------------------------------------------------------------------------
class _Base(nn.Module):
    def __init__(self, bidirectional: bool = False, layers: int = 1) -> None:
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.lstm = nn.LSTM(E, H, num_layers=layers, bidirectional=bidirectional, batch_first=True)
        self.fc = nn.Linear(H * (2 if bidirectional else 1), 2)


class BiOutputLastStep(_Base):
    def __init__(self) -> None:
        super().__init__(bidirectional=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.emb(x))
        return self.fc(out[:, -1, :])


class TanhBeforeHead(_Base):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(self.emb(x))
        return self.fc(torch.tanh(h[-1]))


class DropoutAlwaysOn(_Base):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(self.emb(x))
        return self.fc(F.dropout(h[-1], 0.5))


class LowerLayerState(_Base):
    def __init__(self) -> None:
        super().__init__(layers=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(self.emb(x))
        return self.fc(h[0])


class ConstantShift(_Base):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(self.emb(x))
        return self.fc(h[-1] + 1.0)


class LearnedInitialState(_Base):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("h0", torch.ones(1, 1, H))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0 = self.h0.expand(1, x.shape[0], H).contiguous()
        _, (h, _) = self.lstm(self.emb(x), (h0, torch.zeros_like(h0)))
        return self.fc(h[-1])


class MeanOverTime(_Base):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.emb(x))
        return self.fc(out.mean(dim=1))


class BackwardFirstNoHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.gru = nn.GRU(E, H, bidirectional=True, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h = self.gru(self.emb(x))
        return torch.cat([h[-1], h[-2]], dim=1)


class CellStateHead(_Base):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (_, c) = self.lstm(self.emb(x))
        return self.fc(c[-1])


REFUSED = {
    "bidirectional-output-last-step": (BiOutputLastStep, r"output\[:, -1\].*backward direction has seen only"),
    "activation-before-head": (TanhBeforeHead, "applies tanh to the recurrent output before any Linear"),
    "dropout-training-true": (DropoutAlwaysOn, "training=True"),
    "lower-layer-state": (LowerLayerState, "reads h_n of layer 0 of 'lstm'"),
    "constant-shift": (ConstantShift, r"add\(\)"),
    "initial-state": (LearnedInitialState, "initial state to 'lstm'"),
    "mean-over-time": (MeanOverTime, "at different steps"),
    "backward-first-no-head": (BackwardFirstNoHead, "no Linear head to fold"),
    "cell-state": (CellStateHead, "cell state c_n"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_zoo_refusals_name_the_operation(name: str) -> None:
    make, message = REFUSED[name]
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=message):
        rnninfer.from_torch(make().eval())


def test_check_catches_a_silent_difference(monkeypatch: pytest.MonkeyPatch) -> None:
    """If the reading of forward missed something, the probe comparison says so."""
    import rnninfer.converters.torch as conv

    real = conv.convert_torch_probed

    def wrong(*args: Any, **kwargs: Any) -> Any:
        (spec, tensors, producer), probe = real(*args, **kwargs)
        bias = tensors["head.0.bias"].copy()
        bias[0] += 0.01  # one logit: log_softmax would hide a shift of all of them
        return finish(spec, dict(tensors, **{"head.0.bias": bias}), producer), probe

    monkeypatch.setattr(conv, "convert_torch_probed", wrong)
    net = _net(ZOO["bigru-sum-log-softmax"])
    with pytest.raises(ValueError, match="max difference"):
        rnninfer.from_torch(net)
    assert rnninfer.from_torch(net, check=False).spec.head


def test_untraceable_forward_warns_and_falls_back() -> None:
    class NeedsTwo(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(V, E)
            self.lstm = nn.LSTM(E, H, batch_first=True)
            self.fc = nn.Linear(H, 1)

        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            _, (h, _) = self.lstm(self.emb(x) * mask[..., None])
            return self.fc(h[-1])

    with pytest.warns(UserWarning, match="could not run forward.*example_inputs"):
        rnninfer.from_torch(NeedsTwo().eval())


# ---- state dict structure ----------------------------------------------------------------
def test_tied_lm_without_the_tie_names_the_missing_key() -> None:
    net = _net(ZOO["tied-word-lm"])
    state = {k: v for k, v in net.state_dict().items() if k != "decoder.weight"}
    with pytest.raises(rnninfer.ModelFormatError, match=r"missing key 'decoder\.weight'.*tied to 'encoder\.weight'"):
        rnninfer.from_torch(state, readout="sequence", head_activation="log_softmax")


def test_untied_lm_safetensors_resolves_encoder_by_widths(tmp_path: Path) -> None:
    class LM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Embedding(V, H)
            self.rnn = nn.GRU(H, H)
            self.decoder = nn.Linear(H, V)

    path = tmp_path / "lm.safetensors"
    save_model(LM(), str(path))
    model = rnninfer.from_torch(path, readout="sequence", head_activation="log_softmax")
    assert model.spec.input.kind == "tokens"
    assert any("encoder.weight taken as the embedding table (from the widths" in n for n in model.producer["notes"])


def test_transposed_weight_is_named_with_its_expected_shape() -> None:
    state = _Base().state_dict()
    state["lstm.weight_ih_l0"] = state["lstm.weight_ih_l0"].T.contiguous()
    with pytest.raises(rnninfer.ModelFormatError, match=r"lstm\.weight_ih_l0 has shape \(8, 24\) \(transposed\?\), expected \(24, in\)"):
        rnninfer.from_torch(state, head_activation="identity")


def test_summary_counts_params_as_torch_does() -> None:
    net = _net(ZOO["stacked-softmax-attr"])
    text = rnninfer.from_torch(net).summary()
    lstm1 = sum(p.numel() for p in net.lstm1.parameters())
    assert f" {lstm1} " in text
    assert f"total params: {sum(p.numel() for p in net.parameters())} (counted as torch counts them)" in text


class SwappedClasses(_Base):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(self.emb(x))
        return self.fc(h[-1])[:, [1, 0]]


class FlippedSteps(_Base):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.emb(x))
        return self.fc(out).flip(1)


class FirstClassOnly(_Base):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(self.emb(x))
        return self.fc(h[-1])[:, 0]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (SwappedClasses, "reorders or selects the elements of the output vector"),
        (FlippedSteps, "reorders the steps of the output"),
        (FirstClassOnly, "not the output of its last head layer"),
    ],
    ids=["swapped-classes", "flipped-steps", "first-class-only"],
)
def test_output_rearrangements_are_refused(make: Callable[[], nn.Module], message: str) -> None:
    """Same numbers in other places would pass a value comparison: they are refused instead."""
    with pytest.raises(ValueError, match=message):
        rnninfer.from_torch(make().eval())
