"""A sweep on the demo: `ROOT_PATH=data/demo python sweep.py configs/sweep_demo.py` (minutes on 2 CPU cores).

Four trials of the demo at a fixed LR (no range test: the sweep picks the LR), three epochs each, in
experiments/sweep_demo_sweep/; from the third trial on, a trial whose valid mAP falls below the median
of the earlier trials' at the same epoch is stopped early.
"""

from dataclasses import replace

from configs.demo import config as demo
from mlic import Stage, Sweep, loguniform

config = replace(
    demo,
    experiment_name="sweep_demo",
    stages=[Stage("full", epochs=3)],  # the optimizer's lr, which the sweep draws
    sweep=Sweep(
        n_trials=4,
        metric="valid/map",
        space={
            "optimizer.lr": loguniform(3e-4, 1e-2),
            "optimizer.weight_decay": loguniform(1e-4, 1e-1),
        },
    ),
)
