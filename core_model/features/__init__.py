"""Feature cache: frozen-encoder outputs computed once (``precompute``) and memory-mapped for
training. :mod:`~core_model.features.cache` is numpy-only; :mod:`~core_model.features.precompute`
runs the encoders (torch)."""
