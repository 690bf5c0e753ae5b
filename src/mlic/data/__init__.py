"""Data: images, label tables and masks read as typed records, splits, the decoded-image cache, augmentation, mixing and the loaders."""
