"""One inference engine for every path that runs a trained model (``evaluate.py``, ``predict.py``,
``scripts/analyze_checkpoint.py``, the evaluation during training):

- ``checkpoint.py``: :func:`open_checkpoint` (weights through the safe loader, the run's config,
  its dataset metadata) into an :class:`OpenedCheckpoint` holding a ready model;
- ``model.py``: :func:`build_model`, the model of a run config (training builds through it too);
- ``segments.py``: :func:`run_segments`, the ACT segments of one batch under :class:`RunOptions`
  (``halt_max_steps``, ``act_inference``, identifier ablation, per-segment traces);
- ``evaluation.py``: a model over a whole split (metrics, evaluators, saved outputs) and
  :class:`Evaluation`, a checkpoint evaluated many ways;
- ``analysis.py``: the numbers ``scripts/analyze_checkpoint.py`` reports from saved outputs.
- ``sampling.py``: test-time scaling, many samples of every example as extra rows of its batch
  (the task's views, latent noise, checkpoint ensembles) and one answer chosen;
- ``selection.py``: the choice (majority vote or the most confident sample) and its metrics.
"""
