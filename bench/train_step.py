"""One training step in isolation: a bare loop, the bare loop with mlic's parameter groups, and
`ClassifierModule` under Lightning's Trainer, on the same fixed batch.

Usage (from the repo root, after `make install`), one kind per fresh process:
    for k in bare groups lightning; do .venv/bin/python bench/train_step.py $k; done

`resnet18` (random init), a fixed random batch of 64 at 96×96, channels-last, AdamW lr 1e-3; prints the
median of the steps after the first 3.
"""

from __future__ import annotations

import statistics
import sys
import time
from functools import partial

import lightning as L
import timm
import torch

from mlic import Stage
from mlic.engine.module import ClassifierModule
from mlic.engine.optim import build_optimizer

BATCH, STEPS, CLASSES = 64, 15, 20


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False, num_classes=CLASSES)


def main(kind: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(BATCH, 3, 96, 96)
    y = (torch.rand(BATCH, CLASSES) < 0.2).float()
    adamw = partial(torch.optim.AdamW, lr=1e-3, weight_decay=1e-2)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    times: list[float] = []
    if kind in ("bare", "groups"):
        m = model().to(memory_format=torch.channels_last).train()
        opt = (
            adamw(m.parameters()) if kind == "bare" else build_optimizer(m, Stage("full", 1, lr=1e-3), adamw)
        )
        for _ in range(STEPS):
            start = time.perf_counter()
            loss = loss_fn(m(x.contiguous(memory_format=torch.channels_last)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - start)
    elif kind == "lightning":

        class Batches(torch.utils.data.Dataset):
            def __len__(self) -> int:
                return BATCH * STEPS

            def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
                return x[i % BATCH], y[i % BATCH]

        class Timer(L.Callback):
            def on_train_batch_start(self, *args) -> None:
                self.start = time.perf_counter()

            def on_train_batch_end(self, *args) -> None:
                times.append(time.perf_counter() - self.start)

        module = ClassifierModule(model(), loss_fn, adamw, None, channels_last=True)
        module.set_stage(Stage("full", epochs=1, lr=1e-3))
        trainer = L.Trainer(
            max_epochs=1,
            accelerator="cpu",
            enable_progress_bar=False,
            enable_model_summary=False,
            logger=False,
            enable_checkpointing=False,
            callbacks=[Timer()],
        )
        trainer.fit(module, torch.utils.data.DataLoader(Batches(), batch_size=BATCH))
    else:
        raise SystemExit(f"unknown kind {kind!r}: bare, groups or lightning")
    print(
        f"{kind}: median step {statistics.median(times[3:]):.3f} s, {torch.get_num_threads()} torch threads"
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bare")
