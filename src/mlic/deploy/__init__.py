"""Deploying a trained model: export (TorchScript, torch.export, ONNX) and prediction on image folders or lists."""
