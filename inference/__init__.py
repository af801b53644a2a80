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
"""
