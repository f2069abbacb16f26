"""PyTorch converter: parity with real PyTorch modules, source routes, and errors.

The truth is the module's own forward pass (float32, in PyTorch), written the
standard way: Embedding -> RNN stack (packed sequences for batches) -> readout
(``h_n[-num_directions:]`` concatenated, or the per-step output) -> Linear
head(s) -> head activation. rnninfer must agree within 1e-5 absolute.
"""

from __future__ import annotations

import io
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import framework
from hypothesis import given, settings
from hypothesis import strategies as st

torch = framework("torch")
from safetensors.numpy import save_file as save_numpy_safetensors
from safetensors.torch import save_file as save_torch_safetensors
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnninfer
from rnninfer.converters.torch import convert_torch

# PyTorch warns (once per process) that projected LSTMs bypass oneDNN; that is
# PyTorch talking about itself, not a problem under test.
pytestmark = pytest.mark.filterwarnings(
    "ignore:LSTM with projections is not supported with oneDNN:UserWarning"
)

TOL = 1e-5
VOCAB = 13
MAX_T = 9

ACT_MODULES: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "identity": nn.Identity,
}
HEAD_FUNCS: dict[str | None, Callable[[torch.Tensor], torch.Tensor]] = {
    None: lambda z: z,
    "sigmoid": torch.sigmoid,
    "softmax": lambda z: torch.softmax(z, dim=-1),
    "tanh": torch.tanh,
    "relu": torch.relu,
}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


# ---- the reference PyTorch model -------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One PyTorch model configuration."""

    cell: str = "lstm"  # lstm, gru, rnn_tanh, rnn_relu
    num_layers: int = 1
    bidirectional: bool = False
    bias: bool = True
    batch_first: bool = True
    proj: int = 0
    tokens: bool = True
    readout: str = "last"
    heads: tuple[int, ...] = (3,)
    hidden_act: str = "relu"
    head_act: str | None = None
    #: "sequential": nn.Sequential(Linear, act, Linear); "attrs": fc0, fc1 attributes.
    head_style: str = "sequential"
    #: number of separate recurrent modules stacked one after the other.
    modules: int = 1
    hidden: int = 6
    width: int = 5
    seed: int = 0


def _recurrent(case: Case, input_size: int) -> nn.Module:
    common: dict[str, Any] = {
        "input_size": input_size,
        "hidden_size": case.hidden,
        "num_layers": case.num_layers,
        "bias": case.bias,
        "batch_first": case.batch_first,
        "bidirectional": case.bidirectional,
    }
    if case.cell == "lstm":
        return nn.LSTM(proj_size=case.proj, **common)
    if case.cell == "gru":
        return nn.GRU(**common)
    return nn.RNN(nonlinearity=case.cell.split("_")[1], **common)


class RefNet(nn.Module):
    """Embedding -> recurrent module(s) -> readout -> Linear head(s) -> activation."""

    def __init__(self, case: Case) -> None:
        super().__init__()
        torch.manual_seed(case.seed)
        self.case = case
        if case.tokens:
            self.embedding = nn.Embedding(VOCAB, case.width, padding_idx=0)
        width = case.width
        rnns = []
        for _ in range(case.modules):
            rnns.append(_recurrent(case, width))
            width = (case.proj or case.hidden) * (2 if case.bidirectional else 1)
        # Separate attributes (rnn0, rnn1, ...) rather than a ModuleList, as
        # users write "lstm1, lstm2".
        for k, rnn in enumerate(rnns):
            setattr(self, f"rnn{k}", rnn)
        layers: list[nn.Module] = []
        for j, units in enumerate(case.heads):
            if j:
                layers.append(ACT_MODULES[case.hidden_act]())
            layers.append(nn.Linear(width, units))
            width = units
        if case.head_style == "sequential":
            self.head = nn.Sequential(*layers)
        else:
            self.linears = [m for m in layers if isinstance(m, nn.Linear)]
            self.acts = [m for m in layers if not isinstance(m, nn.Linear)]
            for j, lin in enumerate(self.linears):
                setattr(self, f"fc{j}", lin)
            for j, act in enumerate(self.acts):
                setattr(self, f"act{j}", act)  # registered, as users do: self.relu = nn.ReLU()
        self.eval()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: batch-first ``(B, T)`` ids or ``(B, T, F)`` features."""
        case = self.case
        z = self.embedding(x) if case.tokens else x
        steps = z.shape[1]
        if not case.batch_first:
            z = z.transpose(0, 1)
        h: Any = None
        for k in range(case.modules):
            rnn = getattr(self, f"rnn{k}")
            if lengths is None:
                z, h = rnn(z)
            else:
                packed = pack_padded_sequence(
                    z, lengths, batch_first=case.batch_first, enforce_sorted=False
                )
                out, h = rnn(packed)
                z, _ = pad_packed_sequence(out, batch_first=case.batch_first, total_length=steps)
        if isinstance(h, tuple):
            h = h[0]
        if case.readout == "last":
            y = torch.cat(list(h[-(2 if case.bidirectional else 1) :]), dim=-1)
        else:
            y = z if case.batch_first else z.transpose(0, 1)
        if case.head_style == "sequential":
            y = self.head(y)
        else:
            for j, lin in enumerate(self.linears):
                y = lin(self.acts[j - 1](y) if j else y)
        return HEAD_FUNCS[case.head_act](y)


def _convert(net: RefNet, source: object = None, **extra: Any) -> rnninfer.Model:
    case = net.case
    kwargs: dict[str, Any] = {"readout": case.readout, "head_activation": case.head_act}
    if case.head_style == "attrs" or source is not None:
        kwargs["hidden_activation"] = case.hidden_act
    if case.cell == "rnn_relu" and source is not None:
        kwargs["nonlinearity"] = "relu"
    kwargs.update(extra)
    if source is not None and case.heads and kwargs.get("head_activation") is None:
        # A file cannot show the activation after the head: the converter says so.
        with pytest.warns(UserWarning, match="head_activation='sigmoid'"):
            return rnninfer.from_torch(source, **kwargs)
    return rnninfer.from_torch(net if source is None else source, **kwargs)


# ---- inputs and comparison -------------------------------------------------------------
def _inputs(case: Case, rng: np.random.Generator, lengths: list[int]) -> list[np.ndarray]:
    if case.tokens:
        return [rng.integers(0, VOCAB, size=n) for n in lengths]
    return [rng.standard_normal((n, case.width)).astype(np.float32) for n in lengths]


def _pad(case: Case, seqs: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A padded batch whose padding is random junk: it must never be read."""
    steps = max(len(s) for s in seqs)
    if case.tokens:
        out = rng.integers(0, VOCAB, size=(len(seqs), steps))
    else:
        out = rng.standard_normal((len(seqs), steps, case.width)).astype(np.float32)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out


def _torch_run(net: RefNet, batch: np.ndarray, lengths: list[int] | None) -> np.ndarray:
    x = torch.from_numpy(batch)
    with torch.inference_mode():
        y = net(x, None if lengths is None else torch.tensor(lengths, dtype=torch.int64))
    return y.numpy()


def _compare(ours: np.ndarray, ref: np.ndarray, case: Case, lengths: list[int]) -> float:
    """Max abs error; for per-step output only valid steps count, padding rows must be 0."""
    assert ours.dtype == np.float32
    if case.readout == "last":
        assert ours.shape == ref.shape
        return float(np.max(np.abs(ours.astype(np.float64) - ref)))
    err = 0.0
    for i, n in enumerate(lengths):
        err = max(err, float(np.max(np.abs(ours[i, :n].astype(np.float64) - ref[i, :n]))))
        assert not ours[i, n:].any(), "rows past a sequence's length must be zero"
    return err


def check_parity(net: RefNet, model: rnninfer.Model, seed: int = 0) -> float:
    """Single sequences, a ragged batch and a padded batch with lengths; returns max error."""
    case = net.case
    rng = np.random.default_rng(seed)
    lengths = [int(n) for n in rng.integers(1, MAX_T + 1, size=4)]
    lengths[0] = MAX_T  # the longest sets the padded width
    lengths[1] = 1
    seqs = _inputs(case, rng, lengths)
    err = 0.0
    for s in seqs[:2]:
        ref = _torch_run(net, s[None], None)[0]
        ours = model.predict(s)
        assert ours.shape == ref.shape
        err = max(err, float(np.max(np.abs(ours.astype(np.float64) - ref))))
    padded = _pad(case, seqs, rng)
    ref = _torch_run(net, padded, lengths)
    ragged: list[Any] = [s.tolist() for s in seqs] if case.tokens else list(seqs)
    err = max(err, _compare(model.predict(ragged), ref, case, lengths))
    err = max(err, _compare(model.predict(padded, lengths=np.array(lengths)), ref, case, lengths))
    assert err <= TOL, f"max abs error {err:.3g} for {case}"
    return err


# ---- parity over the configuration grid -----------------------------------------------
CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
HEADS = ((), (3,), (5, 3), (4,))
HEAD_ACTS = (None, "sigmoid", "softmax", "tanh", "relu")
HIDDEN_ACTS = tuple(ACT_MODULES)


def _grid() -> list[Case]:
    """Every cell x num_layers x direction; the other options rotate so each appears with each cell."""
    cases = []
    for n, (cell, layers, bidir) in enumerate(
        (c, n, b) for c in CELLS for n in (1, 2, 3) for b in (False, True)
    ):
        heads = HEADS[n % len(HEADS)]
        cases.append(
            Case(
                cell=cell,
                num_layers=layers,
                bidirectional=bidir,
                bias=n % 3 != 1,
                batch_first=n % 2 == 0,
                proj=(2 + n % 3) if cell == "lstm" and n % 4 != 1 else 0,
                tokens=(n // 2) % 2 == 0,
                readout="sequence" if n % 5 in (1, 3) else "last",
                heads=heads,
                hidden_act=HIDDEN_ACTS[n % len(HIDDEN_ACTS)],
                head_act=HEAD_ACTS[n % len(HEAD_ACTS)] if heads else None,
                head_style="attrs" if n % 7 in (2, 5) else "sequential",
                hidden=3 + (5 * n) % 14,
                seed=n,
            )
        )
    return cases


def _case_id(c: Case) -> str:
    return f"{c.cell}-L{c.num_layers}-{'bi' if c.bidirectional else 'uni'}-s{c.seed}"


@pytest.mark.parametrize("case", _grid(), ids=_case_id)
def test_module_parity_grid(case: Case) -> None:
    net = RefNet(case)
    check_parity(net, _convert(net), seed=case.seed)


@pytest.mark.parametrize(
    "case",
    [
        Case(cell="lstm", modules=2, bidirectional=True, heads=(4, 2), head_act="softmax"),
        Case(cell="gru", modules=3, num_layers=2, tokens=False, readout="sequence", batch_first=False),
        Case(cell="lstm", modules=2, proj=2, hidden=5, bias=False, heads=(), readout="sequence"),
        Case(cell="rnn_relu", modules=2, bidirectional=True, heads=(3, 3, 2), hidden_act="tanh",
             head_style="attrs"),
    ],
    ids=["lstm1-lstm2-bi", "gru-x3-seq", "lstm-proj-nohead", "rnn-relu-x2-attrs"],
)
def test_stacked_modules_parity(case: Case) -> None:
    net = RefNet(case)
    model = _convert(net)
    assert len(model.spec.layers) == case.modules * case.num_layers
    check_parity(net, model)


@settings(deadline=None, max_examples=15)
@given(
    cell=st.sampled_from(CELLS),
    num_layers=st.integers(1, 3),
    bidirectional=st.booleans(),
    bias=st.booleans(),
    batch_first=st.booleans(),
    proj=st.integers(0, 2),
    tokens=st.booleans(),
    readout=st.sampled_from(("last", "sequence")),
    heads=st.sampled_from(HEADS),
    hidden_act=st.sampled_from(HIDDEN_ACTS),
    head_act=st.sampled_from(HEAD_ACTS),
    head_style=st.sampled_from(("sequential", "attrs")),
    hidden=st.integers(3, 16),
    seed=st.integers(0, 2**16),
)
def test_module_parity_property(
    cell: str, proj: int, heads: tuple[int, ...], head_act: str | None, **kw: Any
) -> None:
    case = Case(
        cell=cell,
        proj=proj if cell == "lstm" else 0,
        heads=heads,
        head_act=head_act if heads else None,
        **kw,
    )
    net = RefNet(case)
    check_parity(net, _convert(net), seed=case.seed)


# ---- source routes ---------------------------------------------------------------------
ROUTE_CASES = [
    Case(cell="lstm", num_layers=2, bidirectional=True, proj=2, heads=(4, 2), head_act="sigmoid"),
    Case(cell="gru", bias=False, tokens=False, readout="sequence", heads=(3,)),
    Case(cell="rnn_relu", num_layers=3, batch_first=False, heads=(5, 4, 2), hidden_act="tanh"),
    Case(cell="lstm", modules=2, heads=(), tokens=False),
]


def _all_routes(net: RefNet, tmp_path: Path) -> dict[str, rnninfer.Model]:
    sd = net.state_dict()
    pt = tmp_path / "model.pt"
    torch.save(sd, pt)
    st_path = tmp_path / "model.safetensors"
    save_torch_safetensors(sd, str(st_path))
    return {
        "module": _convert(net),
        "state_dict": _convert(net, sd),
        "pt": _convert(net, str(pt)),
        "pathlike": _convert(net, pt),
        "safetensors": _convert(net, str(st_path)),
    }


@pytest.mark.parametrize("case", ROUTE_CASES, ids=lambda c: f"{c.cell}-{c.modules}x{c.num_layers}")
def test_every_route_gives_the_same_model(case: Case, tmp_path: Path) -> None:
    net = RefNet(case)
    models = _all_routes(net, tmp_path)
    base = models["module"]
    files = {}
    for route, model in models.items():
        assert model.spec == base.spec, route
        assert list(model.tensors) == list(base.tensors), route
        for name, t in base.tensors.items():
            np.testing.assert_array_equal(model.tensors[name], t, err_msg=f"{route}: {name}")
        path = tmp_path / f"{route}.npz"
        model.save(path)
        with np.load(path, allow_pickle=False) as z:
            files[route] = {k: z[k] for k in z.files if k != "__manifest__"}
    for route, arrays in files.items():
        assert arrays.keys() == files["module"].keys()
        for k, v in arrays.items():
            np.testing.assert_array_equal(v, files["module"][k], err_msg=f"{route}: {k}")
    check_parity(net, models["safetensors"])
    assert models["pt"].producer["source"] == "model.pt"
    assert models["safetensors"].producer["source"] == "model.safetensors"
    assert models["state_dict"].producer["source"] == "state_dict"
    assert models["module"].producer["framework"] == "torch"
    assert models["module"].producer["framework_version"] == torch.__version__
    reloaded = rnninfer.load(tmp_path / "safetensors.npz")
    assert reloaded.spec == base.spec


def test_tensors_are_renamed_not_changed() -> None:
    case = Case(cell="lstm", num_layers=2, bidirectional=True, proj=3, hidden=7)
    net = RefNet(case)
    spec, tensors, _ = convert_torch(net, hidden_activation="relu")
    rnn = net.rnn0
    for k in range(2):
        for d, sfx in (("fwd", ""), ("bwd", "_reverse")):
            for ours, theirs in (("w_ih", "weight_ih"), ("w_hh", "weight_hh"), ("b_ih", "bias_ih"),
                                 ("b_hh", "bias_hh"), ("w_hr", "weight_hr")):
                np.testing.assert_array_equal(
                    tensors[f"layers.{k}.{d}.{ours}"], getattr(rnn, f"{theirs}_l{k}{sfx}").detach().numpy()
                )
    np.testing.assert_array_equal(tensors["embedding.weight"], net.embedding.weight.detach().numpy())
    assert spec.layers[1].proj_size == 3
    assert spec.input.kind == "tokens"
    assert spec.input.vocab_size == VOCAB


def test_nested_training_checkpoint(tmp_path: Path) -> None:
    net = RefNet(Case(cell="gru"))
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "model_state_dict": net.state_dict()}, path)
    check_parity(net, _convert(net, path))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("route", ["state_dict", "safetensors"])
def test_half_precision_weights(dtype: torch.dtype, route: str, tmp_path: Path) -> None:
    net = RefNet(Case(cell="lstm", bidirectional=True, heads=(4, 2)))
    half = {k: v.to(dtype) for k, v in net.state_dict().items()}
    # The module with the same rounded weights is the truth.
    net.load_state_dict({k: v.float() for k, v in half.items()})
    if route == "safetensors":
        src: object = tmp_path / "half.safetensors"
        save_torch_safetensors(half, str(src))
    else:
        src = half
    model = _convert(net, src)
    np.testing.assert_array_equal(
        model.tensors["layers.0.bwd.w_hh"], half["rnn0.weight_hh_l0_reverse"].float().numpy()
    )
    check_parity(net, model)


def test_safetensors_route_reads_numpy_files(tmp_path: Path) -> None:
    """A file written without torch (numpy API) converts the same."""
    net = RefNet(Case(cell="gru", num_layers=2))
    path = tmp_path / "np.safetensors"
    save_numpy_safetensors({k: v.numpy() for k, v in net.state_dict().items()}, str(path))
    check_parity(net, _convert(net, path))


def test_safetensors_order_inferred_from_widths(tmp_path: Path) -> None:
    """Sorted keys put 'a_out' before 'b_hidden'; widths say b_hidden comes first."""
    net = RefNet(Case(cell="lstm", heads=(4, 2), head_style="attrs"))
    sd = net.state_dict()
    renamed = OrderedDict(
        (k.replace("fc0", "b_hidden").replace("fc1", "a_out"), v) for k, v in sd.items()
    )
    path = tmp_path / "sorted.safetensors"
    save_torch_safetensors(renamed, str(path))
    model = _convert(net, path)
    assert any("inferred from widths" in n for n in model.producer["notes"])
    assert "note: order of Linear layers" in model.summary()
    check_parity(net, model)


def test_state_dict_notes_name_inferences() -> None:
    net = RefNet(Case(cell="rnn_tanh", heads=(3,)))
    with pytest.warns(UserWarning, match="raw output"):
        model = rnninfer.from_torch(net.state_dict())
    notes = model.producer["notes"]
    assert any("embedding.weight taken as the embedding" in n for n in notes)
    assert any("nonlinearity 'tanh'" in n for n in notes)
    check_parity(net, model)


def test_visible_head_activation_is_used() -> None:
    case = Case(cell="gru", heads=(4, 2))
    net = RefNet(case)
    net.head.append(nn.Sigmoid())
    model = rnninfer.from_torch(net)
    assert model.spec.head[-1].activation == "sigmoid"
    assert model.spec.head[0].activation == "relu"
    ref_net = replace(case, head_act="sigmoid")
    check_parity(RefNet(ref_net), model)
    with pytest.raises(ValueError, match="head_activation"):
        rnninfer.from_torch(net, head_activation="tanh")


@pytest.mark.parametrize(("readout", "dim", "ok"), [("last", 1, True), ("sequence", 2, True),
                                                   ("sequence", 1, False), ("last", 0, False)])
def test_softmax_module_must_normalise_the_output_vector(readout: str, dim: int, ok: bool) -> None:
    case = Case(cell="gru", heads=(4,), readout=readout)
    net = RefNet(case)
    net.head.append(nn.Softmax(dim=dim))
    if not ok:
        with pytest.raises(ValueError, match=f"dim={dim}"):
            rnninfer.from_torch(net, readout=readout)
        return
    model = rnninfer.from_torch(net, readout=readout)
    assert model.spec.head[-1].activation == "softmax"
    check_parity(RefNet(replace(case, head_act="softmax")), model)


def test_bias_free_linear_is_not_taken_for_the_embedding() -> None:
    net = RefNet(Case(cell="lstm", tokens=False, heads=(3,)))
    net.head[0] = nn.Linear(6, 3, bias=False)
    model = _convert(net, net.state_dict())
    assert model.spec.input.kind == "features"
    assert not model.spec.head[0].bias
    check_parity(net, model)


# ---- errors ----------------------------------------------------------------------------
def _small() -> RefNet:
    return RefNet(Case(cell="gru", heads=(4, 2)))


def test_unknown_key_is_named() -> None:
    sd = _small().state_dict()
    sd["norm.running_mean"] = torch.zeros(4)
    with pytest.raises(rnninfer.ModelFormatError, match=r"norm\.running_mean"):
        rnninfer.from_torch(sd, hidden_activation="relu")
    sd = _small().state_dict()
    sd["rnn0.weight_xx_l0"] = torch.zeros(4)
    with pytest.raises(rnninfer.ModelFormatError, match=r"rnn0\.weight_xx_l0"):
        rnninfer.from_torch(sd, hidden_activation="relu")


def test_projection_on_gru_is_refused() -> None:
    sd = _small().state_dict()
    sd["rnn0.weight_hr_l0"] = torch.zeros(3, 6)
    with pytest.raises(rnninfer.ModelFormatError, match=r"weight_hr.*GRU"):
        rnninfer.from_torch(sd, hidden_activation="relu")


@pytest.mark.parametrize("dtype", [torch.float64, torch.int64])
def test_bad_dtype_is_named(dtype: torch.dtype, tmp_path: Path) -> None:
    sd = _small().state_dict()
    sd["rnn0.weight_hh_l0"] = sd["rnn0.weight_hh_l0"].to(dtype)
    with pytest.raises(rnninfer.ModelFormatError, match=r"rnn0\.weight_hh_l0.*dtype"):
        rnninfer.from_torch(sd, hidden_activation="relu")
    path = tmp_path / "bad.safetensors"
    save_torch_safetensors(sd, str(path))
    with pytest.raises(rnninfer.ModelFormatError, match=r"rnn0\.weight_hh_l0.*dtype"):
        rnninfer.from_torch(path, hidden_activation="relu")


def test_nan_weight_is_named() -> None:
    sd = _small().state_dict()
    sd["head.2.bias"][1] = float("nan")
    with pytest.raises(rnninfer.ModelFormatError, match=r"head\.2\.bias.*NaN"):
        rnninfer.from_torch(sd, hidden_activation="relu")


def test_several_linears_need_hidden_activation() -> None:
    net = _small()
    with pytest.raises(ValueError, match="hidden_activation"):
        rnninfer.from_torch(net.state_dict())
    # Activation modules held as attributes are read from forward.
    attrs = RefNet(Case(cell="gru", heads=(4, 2), head_style="attrs"))
    assert rnninfer.from_torch(attrs).spec.head[0].activation == "relu"
    # A Sequential shows its activation; contradicting it is an error, not a choice.
    with pytest.raises(ValueError, match="hidden_activation='tanh'"):
        rnninfer.from_torch(net, hidden_activation="tanh")
    # "identity" is an answer.
    with pytest.warns(UserWarning, match="raw output"):
        model = rnninfer.from_torch(net.state_dict(), hidden_activation="identity")
    assert model.spec.head[0].activation == "linear"


class _Payload:
    """Unpickling this creates a marker directory: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


def test_malicious_pickle_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    sd: dict[str, Any] = dict(_small().state_dict())
    sd["payload"] = _Payload(marker)
    torch.save(sd, path)
    with pytest.raises(rnninfer.ModelFormatError, match="weights_only=True") as info:
        rnninfer.from_torch(path, hidden_activation="relu")
    assert "mkdir" in str(info.value)
    assert not marker.exists()
    # The payload is live: the unsafe load rnninfer must never do creates the marker.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_whole_pickled_module_asks_for_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(_small(), path)
    with pytest.raises(rnninfer.ModelFormatError, match=r"state_dict\(\)"):
        rnninfer.from_torch(path)


@pytest.mark.parametrize(
    "damage",
    ["garbage", "truncated", "empty"],
)
def test_corrupt_pt(damage: str, tmp_path: Path) -> None:
    good = io.BytesIO()
    torch.save(_small().state_dict(), good)
    data = good.getvalue()
    body = {"garbage": os.urandom(300), "truncated": data[: len(data) // 2], "empty": b""}[damage]
    path = tmp_path / "bad.pt"
    path.write_bytes(body)
    with pytest.raises(rnninfer.ModelFormatError):
        rnninfer.from_torch(path, hidden_activation="relu")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "huge_header", "bad_json", "overlap"])
def test_corrupt_safetensors(damage: str, tmp_path: Path) -> None:
    good = tmp_path / "good.safetensors"
    save_torch_safetensors(_small().state_dict(), str(good))
    data = good.read_bytes()
    n = int.from_bytes(data[:8], "little")
    if damage == "garbage":
        body = os.urandom(200)
    elif damage == "truncated":
        body = data[: len(data) - 40]
    elif damage == "huge_header":
        body = (2**62).to_bytes(8, "little") + data[8:]
    elif damage == "bad_json":
        body = data[:8] + b"{" * n + data[8 + n :]
    else:
        header = data[8 : 8 + n].replace(b'"data_offsets":[0,', b'"data_offsets":[4,')
        body = data[:8] + header + data[8 + n :]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(body)
    with pytest.raises(rnninfer.ModelFormatError):
        rnninfer.from_torch(path, hidden_activation="relu")


def test_pt_that_is_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(rnninfer.ModelFormatError, match="state dict"):
        rnninfer.from_torch(path)
    with pytest.raises(rnninfer.ModelFormatError, match="no such file"):
        rnninfer.from_torch(tmp_path / "missing.pt")


def test_unsupported_modules_are_named() -> None:
    net = _small()
    net.norm = nn.LayerNorm(4)
    with pytest.raises(TypeError, match=r"'norm' \(LayerNorm"):
        rnninfer.from_torch(net)
    net = _small()
    net.head[1] = nn.LeakyReLU()  # slope 0.01; rnninfer's leaky_relu is 0.2
    with pytest.raises(ValueError, match="negative_slope"):
        rnninfer.from_torch(net)


def test_linear_between_recurrent_modules_is_refused() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn1 = nn.LSTM(4, 6)
            self.mid = nn.Linear(6, 6)
            self.rnn2 = nn.LSTM(6, 6)

    with pytest.raises(TypeError, match=r"'mid'.*between recurrent"), pytest.warns(
        UserWarning, match="could not run forward"
    ):
        rnninfer.from_torch(Net())


def test_ambiguous_embedding_asks_for_a_name() -> None:
    rnn = nn.GRU(6, 6)
    sd: dict[str, torch.Tensor] = {f"rnn.{k}": v for k, v in rnn.state_dict().items()}
    sd["table.weight"] = torch.randn(10, 6)  # fits as embedding (6 wide) and as a Linear on h (6)
    with pytest.raises(ValueError, match=r"table\.weight"):
        rnninfer.from_torch(sd)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"readout": "mean"}, "readout"),
        ({"head_activation": "swishy"}, "head_activation"),
        ({"hidden_activation": "softmax"}, "hidden_activation"),
        ({"nonlinearity": "sigmoid"}, "nonlinearity"),
    ],
)
def test_bad_options(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        rnninfer.from_torch(_small(), **kwargs)


def test_head_activation_without_head() -> None:
    net = RefNet(Case(cell="gru", heads=()))
    with pytest.raises(ValueError, match=r"no nn\.Linear"):
        rnninfer.from_torch(net, head_activation="sigmoid")


def test_bad_source_type() -> None:
    with pytest.raises(TypeError, match=r"nn\.Module"):
        rnninfer.from_torch(42)
    with pytest.raises(rnninfer.ModelFormatError, match="empty"):
        rnninfer.from_torch({})

