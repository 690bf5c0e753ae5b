"""Building models: timm and segmentation-models-pytorch networks, weights files, freezing, the prior-initialised head."""
