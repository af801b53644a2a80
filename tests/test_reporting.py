"""training/reporting.py: the start line names the model file (variants sharing a class differ) and
a short EMA run says that its evaluated weights are still close to the initial ones."""
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import REPO
from training.config import parse_config
from training.reporting import arch_label, ema_horizon_note


def config(*overrides):
    with initialize_config_dir(config_dir=str(REPO / "config"), version_base=None):
        return parse_config(OmegaConf.to_container(compose("cfg_pretrain", overrides=list(overrides)), resolve=True))


@pytest.mark.parametrize("overrides, label", [
    ([], "hrm_act_v1 (HierarchicalReasoningModel_ACTV1)"),
    (["arch=trm"], "trm (TinyRecursiveReasoningModel_ACTV1)"),
    (["arch=trm", "arch.mlp_t=True"], "trm (TinyRecursiveReasoningModel_ACTV1, MLP mixer (mlp_t))"),
    (["arch=trm_singlez"], "trm_singlez (TinyRecursiveReasoningModel_ACTV1)"),
    (["arch=urm"], "urm (URM)"),
])
def test_start_line_names_the_model_file(overrides, label):
    assert arch_label(config(*overrides)) == label


def test_ema_note_only_when_the_run_is_shorter_than_the_horizon():
    short = config("arch=trm", "ema=True", "ema_rate=0.999")
    note = ema_horizon_note(short, 312)
    assert note.startswith("note: ema=True with ema_rate=0.999 averages over about 1000 steps, but this run makes 312")
    assert "still 73% the initial ones" in note  # 0.999 ** 312
    assert ema_horizon_note(short, 1000) is None and ema_horizon_note(config("ema=False"), 10) is None
