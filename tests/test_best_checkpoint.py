"""Best checkpoint and early stopping: on a run whose evaluation accuracy peaks and then falls,
``best`` holds the peak's weights, training stops after ``early_stop_patience`` evaluations
without improvement, a resumed run keeps the best-so-far, and ``evaluate.py`` reads ``best``."""
import json
import math

import pytest
import torch

from conftest import REPO, TINY_HRM, load_weights
from training.best_checkpoint import BestTracker


def peaking_run(data, ck, *extra):
    """A real training run in this process (``pretrain.launch``, as the command line calls it).

    Weight decay 50 with the learning rate warming up over the whole run: the model first learns
    (accuracy rises), then the decay factor 1 - lr * wd shrinks the weights to nothing (accuracy
    falls back to chance). Accuracy per evaluation: 0.34, 0.41 (step 12), 0.25, 0.25, ...
    """
    from omegaconf import OmegaConf
    from hydra import compose, initialize_config_dir
    import pretrain
    with initialize_config_dir(config_dir=str(REPO / "config"), version_base=None):
        cfg = compose("cfg_pretrain", overrides=[
            f"data_path={data}", "epochs=6", "eval_interval=1", "global_batch_size=8", "evaluators=[]", "lr=0.03",
            "weight_decay=50", "lr_warmup_steps=36", *TINY_HRM, f"checkpoint_path={ck}", "+run_name=p",
            "best_metric=all/accuracy", *extra])
    pretrain.launch(OmegaConf.to_container(cfg, resolve=True))


def logged(ck):
    return {line["step"]: line for line in map(json.loads, (ck / "eval_metrics.jsonl").read_text().splitlines())}


def test_best_is_the_peak_and_training_stops_after_patience(sudoku4, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    ck = tmp_path / "ck"
    peaking_run(sudoku4, ck, "early_stop_patience=1")
    out = capsys.readouterr().out
    evals = logged(ck)
    accuracy = {step: line["all"]["accuracy"] for step, line in evals.items()}
    assert max(accuracy, key=accuracy.get) == 12 and accuracy[6] < accuracy[12], accuracy  # built to peak at its second evaluation
    # One evaluation without improvement after the peak, then stop: no training past step 18.
    assert sorted(evals) == [6, 12, 18]
    assert all(line["eval/seconds"] > 0 for line in evals.values())
    assert "early stop at step 18: all/accuracy did not improve for 1 evaluation(s); best" in out and "at step 12" in out
    assert not (ck / "step_24").exists() and (ck / "step_18").exists()

    info = json.loads((ck / "best.json").read_text())
    assert info == {"step": 12, "metric": "all/accuracy", "value": pytest.approx(accuracy[12])}
    best, at_peak = load_weights(ck / "best"), load_weights(ck / "step_12")
    assert best.keys() == at_peak.keys() and all(torch.equal(best[k], at_peak[k]) for k in best)

    # Resumed with more patience, the run remembers its best (step 12, one evaluation since): the
    # next evaluation (step 24) is the second without improvement, so it stops there; had the best
    # been lost, step 24 would have become the new best and training would have gone on.
    saved = torch.load(ck / "step_18.train_state.pt", map_location="cpu", weights_only=False)["best"]
    assert saved == {"step": 12, "value": pytest.approx(accuracy[12]), "evals_since_best": 1}
    peaking_run(sudoku4, ck, "early_stop_patience=2", f"resume={ck}")
    out = capsys.readouterr().out
    assert "early stop at step 24: all/accuracy did not improve for 2 evaluation(s)" in out and not (ck / "step_30").exists()
    assert json.loads((ck / "best.json").read_text())["step"] == 12

    # evaluate.py takes the best weights like any step_N (its run(), in this process).
    import evaluate
    metrics = evaluate.run(evaluate.EvalConfig(checkpoint=str(ck / "best"), save_outputs=[]))
    assert metrics["all"]["accuracy"] == pytest.approx(accuracy[12], rel=1e-6)


def test_tracker_modes_nan_and_unknown_metric():
    t = BestTracker("all/lm_loss", mode="min", patience=2)
    assert t.update(1, {"all/lm_loss": 2.0}) and t.update(2, {"all/lm_loss": 1.5})
    assert not t.update(3, {"all/lm_loss": math.nan}) and not t.should_stop  # NaN never counts as a best
    assert not t.update(4, {"all/lm_loss": 1.5}) and t.should_stop and (t.step, t.value) == (2, 1.5)
    with pytest.raises(ValueError) as e:
        BestTracker("all/exact_acc").update(1, {"all/exact_accuracy": 0.5, "ARC/pass@2": 0.1, "eval/seconds": 1.0})
    assert str(e.value) == ("best_metric=all/exact_acc: the evaluation logged no such metric; "
                            "available: ARC/pass@2, all/exact_accuracy, eval/seconds")


def test_unknown_metric_stops_training_with_one_line(tmp_path):
    from training.config import ConfigError
    from training.evaluation import update_best
    from training.state import TrainState
    from utils.distributed import DistInfo
    from test_pretrain import compose_config
    config = compose_config([f"checkpoint_path={tmp_path}", "best_metric=all/exact_acc"])
    state = TrainState(model=torch.nn.Linear(1, 1), optimizers=[], optimizer_lrs=[], carry=None, step=6, total_steps=12,
                       best=BestTracker(config.best_metric))  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as e:
        update_best(config, state, {"all": {"exact_accuracy": 0.5, "lm_loss": 1.0}, "eval/seconds": 0.1}, DistInfo(0, 1, torch.device("cpu")))
    assert str(e.value) == "best_metric=all/exact_acc: the evaluation logged no such metric; available: all/exact_accuracy, all/lm_loss, eval/seconds"
    assert not (tmp_path / "best").exists()
