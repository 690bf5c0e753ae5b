"""Metrics by task, as pure numpy/torch functions: classification (mAP, AUC, F1, thresholds) and segmentation (IoU, Dice)."""
