"""Run reports: Markdown, metrics.json and PNG figures (matplotlib Agg; no torch, no Qt)."""
