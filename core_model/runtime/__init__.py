"""Torch-free inference over an exported model bundle (numpy + onnxruntime + tokenizers)."""
