"""Every file name of the experiment folder, in one place (what each holds: docs/experiment-folder.md)."""

MODEL_BEST = "model.best.pth"  # the best epoch's weights by the monitor, with classes and preprocessing
MODEL_LAST = "model.last.pth"  # the last epoch's
MODEL_EMA = "model.ema.pth"  # the moving average of the weights (Config(swa=SWA(ema_decay=...)))
MODEL_SWA = "model.swa.pth"  # swa.py's average of checkpoints
CHECKPOINTS = "checkpoints"  # Lightning checkpoints, a folder per stage
CONFIG_COPY = "config.py"  # the config that ran, with its --set overrides
METRICS = "metrics.csv"  # one row per epoch and stage
REPORT = "report.md"
REPORT_HTML = "report.html"  # the same run as one self-contained page, with the error browser
RESULTS = "results.json"  # the metrics of the best, SWA and EMA models, for tools
THRESHOLDS = "thresholds.json"  # per-class thresholds tuned on valid
CALIBRATION = "calibration.json"  # per-class scale and shift of the logits, fitted on valid (calibration=...)
RELIABILITY = "reliability.png"  # the reliability diagram, before and after calibration
STAGES = "stages.json"  # which stages finished, for --resume
CURVES = "curves.png"
EXPORT = "export.json"  # what export.py wrote and how to feed it
LABEL_AUDIT = "label_audit.csv"  # python -m mlic.audit: the labels the model disagrees with, worst first
AUDIT = "audit"  # the audit's fold models and their out-of-sample probabilities, a folder and a CSV per fold
