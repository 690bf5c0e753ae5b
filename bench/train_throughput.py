"""Training throughput: train.py's path against a bare PyTorch loop over pre-decoded tensors, paired.

Usage (from the repo root, after `make install`):
    .venv/bin/python bench/train_throughput.py [--data data/demo] [--reps 3] [--cache on off] [--compile]

Both train the same model (`--model`, random init), batch, image size, AdamW + OneCycleLR schedule and
augmentation (horizontal flips, p=0.5) for the same number of optimizer steps on the train split:

- **bare**: every training image decoded and resized once into one uint8 tensor; each step indexes a
  shuffled batch, flips, normalises, runs forward, BCE, backward and the optimizer step, with the
  model and batches in channels-last memory order (the faster kernels). No loader, no validation, no
  logging.
- **mlic**: `mlic.train.stages.run` on a config of the same settings (one stage, `num_iteration_on_epoch`
  steps an epoch, `data.num_workers`, `data.cache` as given), in its own process, with a callback that
  times every phase of every step.

Each repetition runs bare, then mlic for each `--cache` setting, in fresh processes, so the machine's
drift hits all alike; the medians of `--reps` repetitions are printed. A step's time runs from the
previous step's end to its own (loader wait included); its median over a run is less sensitive to
the machine's hiccups than the total, so "vs bare (steps)" compares median steps. Images/s counts training
images over the time of the training steps (for mlic: from the first batch's start to the last
batch's end of each epoch, validation excluded); "wall" is the whole process, startup and
validation included. The profile splits mlic's epoch time into loader wait, forward (with the loss
and its logging), backward, optimizer step, the rest of the step, and validation. Prints Markdown for
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import albumentations as A
import lightning as L
import numpy as np
import pandas as pd
import timm
import torch

from mlic import Config, Data, Model, Stage
from mlic.data.images import read_rgb, resize
from mlic.train.stages import run

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def settings(args: argparse.Namespace) -> dict:
    return dict(
        model=args.model,
        img=args.img_size,
        batch=args.batch,
        steps=args.steps,
        epochs=args.epochs,
        lr=1e-3,
        compile=args.compile,
    )


# ------------------------------------------------------------------------------------------ the bare loop


def bare(data: Path, s: dict) -> dict:
    torch.manual_seed(0)
    table = pd.read_csv(data / "train_df.csv", dtype={"Id": str})
    classes = [c for c in table.columns if c != "Id"]
    start = time.perf_counter()
    images = torch.from_numpy(
        np.stack(
            [resize(read_rgb(str(data / "Images" / f"{i}.jpg")), (s["img"], s["img"])) for i in table["Id"]]
        )
    )
    targets = torch.tensor(table[classes].to_numpy(np.float32))
    decode = time.perf_counter() - start
    model = timm.create_model(s["model"], pretrained=False, num_classes=len(classes))
    model = model.to(memory_format=torch.channels_last)  # the faster convolutions, as mlic's default
    optimizer = torch.optim.AdamW(model.parameters(), lr=s["lr"], weight_decay=1e-2)
    total = s["steps"] * s["epochs"]
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=s["lr"], total_steps=total)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD).view(1, 3, 1, 1) * 255
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    order = torch.randperm(len(images))
    position = 0
    step_s = []
    start = time.perf_counter()
    for _ in range(total):
        step_start = time.perf_counter()
        if position + s["batch"] > len(order):
            order, position = torch.randperm(len(images)), 0
        index = order[position : position + s["batch"]]
        position += s["batch"]
        x = images[index].permute(0, 3, 1, 2).float().contiguous(memory_format=torch.channels_last)
        flip = torch.rand(len(x)) < 0.5
        x[flip] = x[flip].flip(-1)
        x = (x - mean) / std
        loss = loss_fn(model(x), targets[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        step_s.append(time.perf_counter() - step_start)
    seconds = time.perf_counter() - start
    return {
        "images_s": total * s["batch"] / seconds,
        "train_s": seconds,
        "decode_s": decode,
        "step_s": step_s,
    }


# ---------------------------------------------------------------------------------------- mlic's path


class PhaseTimer(L.Callback):
    """Wall time of each phase of every training step, and of validation."""

    def __init__(self) -> None:
        self.phases = dict(loader=0.0, forward=0.0, backward=0.0, optimizer=0.0, rest=0.0, validation=0.0)
        self.train_s = 0.0
        self.steps = 0
        self.step_s: list[float] = []
        self._mark = None
        self._epoch_start: float | None = None

    def _lap(self, phase: str) -> None:
        now = time.perf_counter()
        if self._mark is not None and phase:
            self.phases[phase] += now - self._mark
        self._mark = now

    def on_train_epoch_start(self, trainer, module) -> None:
        self._epoch_start = time.perf_counter()
        self._mark = self._epoch_start

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self._step_start = self._mark  # the previous step's end: a step's time includes its loader wait
        self._lap("loader")

    def on_before_backward(self, trainer, module, loss) -> None:
        self._lap("forward")

    def on_after_backward(self, trainer, module) -> None:
        self._lap("backward")

    def on_before_optimizer_step(self, trainer, module, optimizer) -> None:
        self._lap("rest")  # gradient clipping, hooks

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self._lap("optimizer")  # the step itself, the scheduler and the step's logging
        self.steps += 1
        self._last_batch_end = time.perf_counter()
        self.step_s.append(self._last_batch_end - self._step_start)

    def on_validation_epoch_start(self, trainer, module) -> None:
        if self._epoch_start is not None:  # the validation at the end of a training epoch
            self.train_s += self._last_batch_end - self._epoch_start
            self._epoch_start = None
        self._validation_start = time.perf_counter()

    def on_validation_epoch_end(self, trainer, module) -> None:
        self.phases["validation"] += time.perf_counter() - self._validation_start


def mlic(data: Path, s: dict, cache: str, workers: int, out: Path) -> dict:
    timer = PhaseTimer()
    config = Config(
        experiment_name=f"throughput_{cache}",
        output_dir=str(out),
        data=Data(
            root=str(data),
            img_size=(s["img"], s["img"]),
            batch_size=s["batch"],
            num_workers=workers,
            num_iteration_on_epoch=s["steps"],
            augmentations=A.HorizontalFlip(p=0.5),
            cache=cache == "on",
        ),
        model=Model(name=s["model"], pretrained=False, compile=s["compile"]),
        optimizer=partial(torch.optim.AdamW, lr=s["lr"], weight_decay=1e-2),
        scheduler=partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=s["lr"]),
        stages=[Stage("full", epochs=s["epochs"], lr=s["lr"])],
        callbacks=[timer],
        trainer=dict(accelerator="auto", enable_progress_bar=False, enable_model_summary=False),
        seed=0,
    )
    start = time.perf_counter()
    run(config)
    wall = time.perf_counter() - start
    images = timer.steps * s["batch"]
    return {
        "images_s": images / timer.train_s,
        "train_s": timer.train_s,
        "wall_s": wall,
        "phases": timer.phases,
        "step_s": timer.step_s,
    }


# ------------------------------------------------------------------------------------------ the driver


def one(kind: str, args: argparse.Namespace) -> dict:
    """Run one measurement in a fresh process; its JSON comes back on the last line of stdout."""
    command = [sys.executable, __file__, "--one", kind, *sys.argv[1:]]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{result.stderr[-3000:]}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    measured.setdefault("wall_s", time.perf_counter() - start)
    return measured


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/demo"))
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--img-size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per epoch")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--cache", nargs="+", default=["off", "on"])
    parser.add_argument("--compile", action="store_true", help="train.py's path with Model(compile=True)")
    parser.add_argument("--out", type=Path, default=Path("experiments/bench_throughput"))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    s = settings(args)
    os.environ.setdefault("ROOT_PATH", str(args.data))
    if args.one == "bare":
        print(json.dumps(bare(args.data, s)))
        return 0
    if args.one:
        print(json.dumps(mlic(args.data, s, args.one.split("_")[1], args.workers, args.out)))
        return 0
    if not (args.data / "train_df.csv").is_file():
        subprocess.run([sys.executable, "-m", "mlic.demo", "--out", str(args.data)], check=True)
    kinds = ["bare"] + [f"mlic_{c}" for c in args.cache]
    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    for _ in range(args.reps):
        for kind in kinds:
            runs[kind].append(one(kind, args))
    n = len(pd.read_csv(args.data / "train_df.csv"))
    print(
        f"\n{s['model']}, {s['img']}x{s['img']}, batch {s['batch']}, {s['epochs']} x {s['steps']} steps, "
        f"{n} train images, data.num_workers={args.workers}, torch threads {torch.get_num_threads()}, "
        f"{'Model(compile=True), ' if args.compile else ''}"
        f"median of {args.reps}\n"
    )
    bare_rate = statistics.median(r["images_s"] for r in runs["bare"])
    bare_step = statistics.median(statistics.median(r["step_s"]) for r in runs["bare"])
    print(
        "| path | train images/s | vs bare | median step s | vs bare (steps) | training s | wall s |\n"
        "|---|---|---|---|---|---|---|"
    )
    for kind in kinds:
        rate = statistics.median(r["images_s"] for r in runs[kind])
        step = statistics.median(statistics.median(r["step_s"]) for r in runs[kind])
        train = statistics.median(r["train_s"] for r in runs[kind])
        wall = statistics.median(r["wall_s"] for r in runs[kind])
        label = "bare loop (pre-decoded)" if kind == "bare" else f"train.py path, cache {kind.split('_')[1]}"
        print(
            f"| {label} | {rate:.0f} | {rate / bare_rate:.2f}x | {step:.3f} | {bare_step / step:.2f}x "
            f"| {train:.1f} | {wall:.1f} |"
        )
    print("\n| path | " + " | ".join(PhaseTimer().phases) + " |\n|---|" + "---|" * len(PhaseTimer().phases))
    for kind in kinds[1:]:
        phases = {p: statistics.median(r["phases"][p] for r in runs[kind]) for p in PhaseTimer().phases}
        print(f"| {kind} | " + " | ".join(f"{v:.1f} s" for v in phases.values()) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
