"""The experiment folder's files: model files, checkpoint records, thresholds.json and metrics.csv, each writer beside its reader."""
