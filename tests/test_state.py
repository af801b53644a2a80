"""training/state.py: the learning rate of each update, HRM's timing and, with urm_train_loop, URM's."""
import pytest
import torch
from conftest import in_process_run
from training.state import train_batch
from utils.functions import unwrap_compiled
from utils.schedule import cosine_schedule_with_warmup_lr_lambda

TINY_URM = ["arch=urm", "arch.hidden_size=32", "arch.num_heads=2", "arch.num_layers=1", "arch.H_cycles=1", "arch.L_cycles=1",
            "arch.loops=2", "arch.forward_dtype=float32"]


def first_updates(data, urm_train_loop, steps=3):
    """``steps`` updates of a tiny URM (warm-up 2 steps to lr 3e-3): the logged LRs, the weights
    before and after the first update, and the AdamATan2 step count after it."""
    config, dataset, state = in_process_run(data, ["epochs=2", "eval_interval=2", "global_batch_size=8", "evaluators=[]", "lr=3e-3",
                                                   "puzzle_emb_lr=1e-2", "lr_warmup_steps=2", "compile=false", *TINY_URM,
                                                   f"urm_train_loop={urm_train_loop}"])
    inner = unwrap_compiled(state.model).model.inner

    def weights():
        return {**{k: v.detach().clone() for k, v in state.model.named_parameters()}, "puzzle_emb": inner.puzzle_emb.weights.clone()}

    before, after_first, lrs = weights(), None, []
    for _, batch, gbs in dataset:
        lrs.append(train_batch(config, state, batch, gbs, rank=0, world_size=1)["train/lr"])
        if after_first is None:
            after_first = weights()
            adam_steps = {float(s["step"]) for s in state.optimizers[1].state.values()}
        if len(lrs) == steps:
            break
    return config, state.total_steps, lrs, before, after_first, adam_steps


@pytest.mark.parametrize("urm_train_loop", [False, True])
def test_update_k_runs_at_the_schedule_of_step_k_or_with_urm_train_loop_k_minus_1(sudoku4, urm_train_loop):
    """HRM's and TRM's train_batch count the step, then read the schedule there; URM's reads it
    first (pretrain.py of the URM code), so its first update runs at lr(0) = 0 during warm-up,
    moving no weight yet advancing the optimizer's moments and step count."""
    config, total_steps, lrs, before, after_first, adam_steps = first_updates(sudoku4, urm_train_loop)
    schedule = [cosine_schedule_with_warmup_lr_lambda(s, base_lr=3e-3, num_warmup_steps=2, num_training_steps=total_steps,
                                                      min_ratio=config.lr_min_ratio) for s in range(4)]
    assert schedule[:3] == [0.0, 1.5e-3, 3e-3]
    assert lrs == (schedule[0:3] if urm_train_loop else schedule[1:4])
    moved = sorted(k for k in before if not torch.equal(before[k], after_first[k]))
    if urm_train_loop:
        assert moved == [] and adam_steps == {1}
    else:
        assert "puzzle_emb" in moved and "model.inner.lm_head.weight" in moved
