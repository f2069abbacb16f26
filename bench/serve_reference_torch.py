"""The reference service for bench/serve_load.py: the same model in PyTorch behind FastAPI.

Written the way a PyTorch user would write it: a FastAPI app with a pydantic
request model, a plain ``def`` endpoint (FastAPI runs it in its thread pool),
``torch.inference_mode()`` and ``torch.set_num_threads(threads)``, one request
= one forward call, on uvicorn. The weights are those of the rnninfer model
file (mapped to ``nn.Embedding`` / ``nn.LSTM`` / ``nn.Linear`` by
``rnninfer.bench.peers.torch_module``).

    python bench/serve_reference_torch.py MODEL.npz --threads 2 --port 0

Prints ``listening on http://HOST:PORT`` when ready; stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import socket
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from rnninfer.bench.peers import torch_module
from rnninfer.format import npz


class PredictRequest(BaseModel):
    inputs: list[int]


def make_app(model_path: str) -> FastAPI:
    spec, tensors, _ = npz.read(model_path)
    net = torch_module(spec, tensors)
    app = FastAPI()

    @app.post("/v1/predict")
    def predict(req: PredictRequest) -> dict[str, Any]:
        with torch.inference_mode():
            y = net(torch.tensor([req.inputs], dtype=torch.long))
        return {"outputs": y[0].tolist()}

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    app = make_app(args.model)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)
    print(f"torch {torch.__version__} + FastAPI listening on http://{args.host}:{sock.getsockname()[1]}",
          flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
