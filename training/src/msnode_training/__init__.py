"""msnode training pipeline: data, nnU-Net v2 training, MSSEG-2 metrics, ONNX export with model cards."""

__version__ = "0.1.0"
