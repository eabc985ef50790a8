"""Qt-free logic of the review app (napari style: thin Qt widgets over these modules).

- :mod:`app.logic.image` — an image as the viewer holds it: the library's display pipeline,
  modality values, window presets, fast re-windowing, pixel readout, spacing-aware distance.
- :mod:`app.logic.overlay` — segmentation / heatmap overlays as RGBA, compositing exactly as
  shown, PNG export of the view.
- :mod:`app.logic.analysis` — running a model bundle on library instances and the analysis
  cache policy (results stored with :func:`app.library.queries.add_analysis`).
- :mod:`app.logic.predictions_csv` — CSV of predictions.
- :mod:`app.logic.report_text` — report sentences (what the reports panel makes clickable).
- :mod:`app.logic.thumbnails` — small cached thumbnails for the study browser.
- :mod:`app.logic.bundles` — opening a model bundle with one clear message when it fails.
- :mod:`app.logic.jobs` — every background job of the app (import, image loading, analysis,
  heatmaps, similar reports, reviews, thumbnails, exports) as a plain function the GUI's
  task runner calls in a worker thread.

Nothing here imports Qt or torch; the headless ``analyze`` command uses the same code.
"""
