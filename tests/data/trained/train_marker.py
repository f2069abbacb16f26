"""Trains the small model behind the reduced-precision accuracy test (docs/precision.md).

Task ("marker"): sequences of T = 60 tokens from a vocabulary of 10; token 1 is
a marker, 0 a blank. The first 10 steps are random tokens, with the marker at a
random one of them in half of the sequences (label 1); the next 50 steps are
blanks with 10 % random non-marker tokens. The model must carry what it saw
50+ steps before the readout. (Variants with 50 steps of pure noise, with or
without late distractor markers, did not train within the one-minute budget.)

    python tests/data/trained/train_marker.py      # needs torch; < 1 min on 2 cores

Writes ``marker_lstm.npz`` (the rnninfer model, fp32, converted with
``rnninfer.from_torch``) and ``marker_eval.npz`` (``inputs`` (N, 60) uint8 held
out sequences, ``labels``, and ``fp32_logits``: the fp32 engine's outputs when
the file was written). Tests need neither torch nor this script.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
T, VOCAB, MARKER, WINDOW = 60, 10, 1, 10
N_EVAL = 2000


def make_batch(rng: np.random.Generator, n: int, steps: int = T) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sequences of ``steps`` tokens and their labels (half positive)."""
    x = rng.integers(2, VOCAB, size=(n, steps))
    # After the window mostly a blank token (0), with 10 % noise tokens: the
    # state must hold the answer for 50 steps while inputs keep arriving.
    x[:, WINDOW:] = np.where(rng.random((n, steps - WINDOW)) < 0.1, x[:, WINDOW:], 0)
    y = rng.random(n) < 0.5
    for i in range(n):
        if y[i]:
            x[i, rng.integers(0, WINDOW)] = MARKER
    return x, y.astype(np.float32)


def main() -> None:
    import torch
    from torch import nn

    import rnninfer

    torch.manual_seed(0)
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.Embedding(VOCAB, 8)
            self.lstm = nn.LSTM(8, 32, batch_first=True)
            self.fc = nn.Linear(32, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            _, (h, _) = self.lstm(self.embedding(x))
            return self.fc(h[-1]).squeeze(-1)

    net = Net()
    with torch.no_grad():  # forget-gate bias 1: the usual help for long memory
        net.lstm.bias_ih_l0[32:64].fill_(1.0)
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    for step in range(2000):
        # Curriculum: short sequences first give the gradient a short path;
        # later batches reach the full length the model is evaluated at.
        xb, yb = make_batch(rng, 128, int(rng.integers(WINDOW + 1, min(T, WINDOW + 2 + step // 20) + 1)))
        loss = loss_fn(net(torch.from_numpy(xb)), torch.from_numpy(yb))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        if step % 100 == 0:
            print(f"step {step}: loss {loss.item():.4f}")
    net.eval()
    xe, ye = make_batch(np.random.default_rng(1), N_EVAL)
    with torch.inference_mode():
        acc = float(((net(torch.from_numpy(xe)) > 0).numpy() == (ye > 0.5)).mean())
    print(f"held-out accuracy (torch): {acc:.4f}")

    model = rnninfer.from_torch(net.state_dict(), readout="last")
    model.save(HERE / "marker_lstm.npz", compress=True)
    logits = model.predict(xe)[:, 0]
    print(f"held-out accuracy (rnninfer fp32): {float(((logits > 0) == (ye > 0.5)).mean()):.4f}")
    np.savez_compressed(HERE / "marker_eval.npz", inputs=xe.astype(np.uint8), labels=ye.astype(np.uint8),
                        fp32_logits=logits.astype(np.float32))


if __name__ == "__main__":
    main()
