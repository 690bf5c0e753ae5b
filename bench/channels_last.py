"""One training step of a timm model in PyTorch's default memory order against channels-last.

Usage (from the repo root, after `make install`):
    .venv/bin/python bench/channels_last.py [--model resnet18] [--height 96] [--width 96] [--batch 64]

Random inputs and targets, AdamW, BCE; seconds a step (forward, backward, optimizer) averaged over 10
steps after 3 warm-up steps, for: default order, channels-last input only, channels-last weights and input.
"""

from __future__ import annotations

import argparse
import time

import timm
import torch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    print(
        f"{args.model}, {args.height}x{args.width}, batch {args.batch}, torch threads {torch.get_num_threads()}"
    )
    print("| order | s a step |\n|---|---|")
    for order in ("default", "channels-last input", "channels-last weights and input"):
        torch.manual_seed(0)
        model = timm.create_model(args.model, pretrained=False, num_classes=18)
        if order.endswith("weights and input"):
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
        x = torch.randn(args.batch, 3, args.height, args.width)
        y = torch.rand(args.batch, 18).round()
        if order != "default":
            x = x.contiguous(memory_format=torch.channels_last)
        for i in range(13):
            if i == 3:
                start = time.perf_counter()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(f"| {order} | {(time.perf_counter() - start) / 10:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
