"""The model bundle format, defined once (stdlib only; no torch, no onnxruntime).

Both the exporter (:mod:`core_model.export.bundle`) and the runtime (:mod:`core_model.runtime`)
take the format name, version, required files and graph input/output names from here, so the two
can never disagree. A bundle is a closed set: ``manifest.json`` lists the SHA-256 of every other
file in the folder, and the runtime reads nothing that is not listed.
"""

from __future__ import annotations

BUNDLE_FORMAT = "cxr-adaptor-bundle"
BUNDLE_VERSION = 1  # what the exporter writes
SUPPORTED_VERSIONS = (1,)  # what the runtime reads

MANIFEST = "manifest.json"
REQUIRED_FILES = (
    "config.json",
    "model_card.json",
    "image.onnx",
    "text.onnx",
    "tokenizer/tokenizer.json",
    "reports/reports.jsonl",
    "reports/embeddings.npy",
)

# Graph inputs (exactly these, in this order) and outputs (these first, in this order: the runtime
# reads them by position). Kept in step with core_model.export.bundle.export_onnx.
GRAPH_IO: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "image": (("pixel_values",), ("probabilities", "logits", "mask_logits", "patch_tokens", "embedding")),
    "text": (("input_ids", "attention_mask"), ("token_embeddings", "embedding")),
    "heatmap": (("token_embeddings", "word_weights", "patch_tokens"), ("heatmap",)),
}
# The optional report index (core_model.runtime.report_index): both files or neither, hashed like
# every other file. Export builds it when the bank holds at least REPORT_INDEX_MIN_REPORTS
# reports (the export config key ``report_index_min_reports`` overrides it).
REPORT_INDEX_FILES = ("reports/index.hnsw", "reports/index.json")
REPORT_INDEX_MIN_REPORTS = 50_000
REQUIRED_GRAPHS = ("image", "text")
DEFAULT_GRAPHS = {"image": "image.onnx", "text": "text.onnx"}

# Reading limits. JSON files are small; anything bigger or deeper is not a bundle we wrote.
MAX_JSON_BYTES = 8 << 20  # manifest.json, config.json, model_card.json
MAX_JSON_DEPTH = 64  # nesting of objects/arrays in any JSON file of a bundle
MAX_MARKDOWN_BYTES = 4 << 20  # MODEL_CARD.md
MAX_REPORT_LINE_BYTES = 1 << 20  # one reports.jsonl record
MAX_REPORT_DEPTH = 4  # a record is a flat {"id": ..., "text": ...}
MAX_INPUT_SIZE = 4096  # preprocess.size, pixels
MAX_TOKENIZER_BYTES = 256 << 20  # tokenizer/tokenizer.json
