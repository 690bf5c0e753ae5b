"""Evaluating a trained model: evaluation on a split, thresholds, report.md, and the table across experiments (compare)."""
