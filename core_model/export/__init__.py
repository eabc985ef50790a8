"""Export of trained Adaptors and heads to ONNX model bundles (torch side)."""
