"""Batch-32 CPU inference throughput of one experiment: eager vs TorchScript vs torch.export vs ONNX Runtime.

Usage (from the repo root, after `make install` and training, e.g. `make demo`):
    ROOT_PATH=data/demo .venv/bin/python bench/throughput.py [--experiment experiments/demo] [--iters 30]

It exports the experiment (`export.py`, all formats, each checked against eager), then times each on
the same uint8 batch of 32 real validation images, preprocessing inside (the exported modules' input),
after 3 warm-up batches; eager is the same wrapper run as plain PyTorch. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from mlic.deploy.export import Deployable, check_batch, export_experiment, image_paths
from mlic.experiment.checkpoints import load_model_file


def timed(fn, batch, iters: int) -> float:
    """Images per second over `iters` batches, after 3 warm-up batches."""
    for _ in range(3):
        fn(batch)
    start = time.perf_counter()
    for _ in range(iters):
        fn(batch)
    return iters * len(batch) / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", type=Path, default=Path("experiments/demo"))
    parser.add_argument("--iters", type=int, default=30)
    args = parser.parse_args()

    written = export_experiment(args.experiment)
    mf = load_model_file(args.experiment / "model.best.pth")
    batch, _ = check_batch(mf, image_paths(args.experiment, None), 32)
    if len(batch) < 32:
        batch = batch[torch.arange(32) % len(batch)]
    eager = Deployable(mf.model, mf.prep.mean, mf.prep.std, mf.task).eval()
    runners = {"eager (PyTorch)": lambda x: eager(x)}
    runners["TorchScript (model.ts)"] = torch.jit.load(str(written["torchscript"])).eval()
    runners["torch.export (model.pt2)"] = torch.export.load(str(written["export"])).module()
    if "onnx" in written:
        import onnxruntime as ort

        session = ort.InferenceSession(str(written["onnx"]), providers=["CPUExecutionProvider"])
        runners["ONNX Runtime (model.onnx)"] = lambda x: session.run(None, {"images": x.numpy()})
    rows = []
    with torch.inference_mode():
        for name, fn in runners.items():
            rate = timed(fn, batch, args.iters)
            rows.append((name, rate))
    base = rows[0][1]
    print(f"\n{mf.model_name}, input {tuple(batch.shape)} uint8, torch threads {torch.get_num_threads()}")
    print("| runtime | images/s | vs eager |\n|---|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:.0f} | {rate / base:.2f}× |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
