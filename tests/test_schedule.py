"""utils/schedule.py: the original's cosine schedule and warm-up-stable-decay, and which one a run's
``lr_schedule`` picks (training/state.py's compute_lr), on either clock."""
import math

import pytest

from conftest import lr_at, minimal_pretrain_config
from utils.schedule import cosine_schedule_with_warmup_lr_lambda, wsd_schedule_lr_lambda


def test_the_cosine_schedule_warms_up_then_decays_to_its_floor():
    def lr(step):
        return cosine_schedule_with_warmup_lr_lambda(step, base_lr=1.0, num_warmup_steps=10, num_training_steps=110, min_ratio=0.2)
    assert [lr(s) for s in (0, 5, 10)] == [0.0, 0.5, 1.0]
    assert lr(60) == pytest.approx(0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr(110) == pytest.approx(0.2)


def test_wsd_holds_the_peak_then_decays_linearly_over_the_last_fraction():
    def lr(step):
        return wsd_schedule_lr_lambda(step, base_lr=2.0, num_warmup_steps=10, num_training_steps=110, min_ratio=0.1, decay_fraction=0.25)
    assert [lr(s) for s in (0, 5, 10)] == [0.0, 1.0, 2.0], "the same warm-up as the cosine schedule"
    assert lr(50) == lr(85) == 2.0, "held at the peak until 75% of the steps after the warm-up"
    assert lr(97.5) == pytest.approx(2.0 * (0.1 + 0.9 * 0.5)), "halfway down the decay"
    assert lr(110) == pytest.approx(0.2) and lr(500) == pytest.approx(0.2), "the floor, held past the planned steps"
    steps = [lr(s) for s in range(85, 111)]
    assert all(b < a for a, b in zip(steps, steps[1:])), "falls at every step of the decay"


def test_a_run_picks_its_schedule_and_the_default_is_the_originals_cosine():
    def wsd(step):
        return wsd_schedule_lr_lambda(step, base_lr=1e-3, num_warmup_steps=10, num_training_steps=1000, min_ratio=0.1, decay_fraction=0.3)

    def cosine(step):
        return cosine_schedule_with_warmup_lr_lambda(step, base_lr=1e-3, num_warmup_steps=10, num_training_steps=1000, min_ratio=0.1)
    default, held = minimal_pretrain_config(), minimal_pretrain_config(lr_schedule="wsd", lr_decay_fraction=0.3)
    assert default.lr_schedule == "cosine" and default.lr_decay_fraction == 0.2
    assert [lr_at(default, s) for s in (5, 400, 900)] == [cosine(s) for s in (5, 400, 900)]
    assert [lr_at(held, s) for s in (5, 400, 900)] == [wsd(s) for s in (5, 400, 900)]
    assert lr_at(held, 600) == 1e-3 > lr_at(default, 600)


def test_wsd_on_the_budget_clock_decays_over_the_last_fraction_of_the_budget():
    config = minimal_pretrain_config(lr_schedule="wsd", lr_decay_fraction=0.3, lr_schedule_clock="budget", max_train_seconds=100)
    assert lr_at(config, 5, budget_progress=0.9) == 5e-4, "the warm-up counts steps"
    assert lr_at(config, 50, budget_progress=0.69) == 1e-3, "held until 70% of the budget"
    assert lr_at(config, 50, budget_progress=0.85) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5)), "halfway down at 85%"
    assert lr_at(config, 50, budget_progress=1.0) == pytest.approx(1e-4)


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_a_decay_fraction_outside_0_to_1_is_a_one_line_config_error(fraction):
    from utils.config import ConfigError
    with pytest.raises(ConfigError, match=rf"^config: lr_decay_fraction must be in \(0, 1\] .* got {fraction}$"):
        minimal_pretrain_config(lr_schedule="wsd", lr_decay_fraction=fraction)
