"""A run's results: the Markdown report, metrics.json and PNG figures (matplotlib Agg; no torch,
no Qt). (Radiology report text is :mod:`core_model.data.reports`.)"""
