"""The training engine: the LightningModule, the optimizer and scheduler, the runtime (device, precision, Trainer arguments), and the reading of an LR range test's curve."""
