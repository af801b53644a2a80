"""Everything a training run is made of, one concern per file; ``pretrain.py`` is the loop.

- ``config.py``: the config schema, its validation and the config every rank agrees on;
- ``validation.py``: checks of values, output names and splits before any work;
- ``build.py``: data loaders, the model (through ``inference/model.py``), optimizers, evaluators;
- ``state.py``: the train state and one optimisation step (micro-batches, learning rate);
- ``evaluation.py``: evaluation during training, best checkpoint, early stopping;
- ``best_checkpoint.py``: the ``best`` weights and the tracker behind them;
- ``checkpointing.py``: saving ``step_N`` and the resume state, reading it back;
- ``preemption.py``: stop signals, agreed by every rank, and :class:`Preempted`;
- ``runs.py``: run folders and sweep jobs.
"""
