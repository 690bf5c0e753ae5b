"""The losses a config names (`from mlic import losses`; `Config(loss=losses.FocalLoss())`)."""

from mlic.losses.classification import AsymmetricLoss, BCEWithLogitsLoss, FocalLoss, LabelSmoothingBCE
from mlic.losses.segmentation import DiceLoss, SumLoss

__all__ = ["AsymmetricLoss", "BCEWithLogitsLoss", "DiceLoss", "FocalLoss", "LabelSmoothingBCE", "SumLoss"]
