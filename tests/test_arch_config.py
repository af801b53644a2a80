"""utils/arch_config.py and config/arch/*.yaml: one spelling of arch overrides for every arch, and
arch keys the model does not know are errors that name them."""
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import REPO
from utils.arch_config import check_arch_keys, configured_segments, normalise_arch_overrides, plus_unknown_keys
from utils.functions import load_model_class

ARCHS = sorted(p.stem for p in (REPO / "config" / "arch").glob("*.yaml"))


def composed_arch(overrides):
    with initialize_config_dir(config_dir=str(REPO / "config"), version_base=None):
        return OmegaConf.to_container(compose("cfg_pretrain", overrides=overrides), resolve=True)["arch"]


def test_overrides_are_normalised_to_add_or_override():
    assert normalise_arch_overrides(["arch=trm", "arch.hidden_size=64", "+arch.forward_dtype=float32", "++arch.x=1",
                                     "+run_name=r", "data_path=arch.y", "~arch.mlp_t"]) == \
        ["arch=trm", "++arch.hidden_size=64", "++arch.forward_dtype=float32", "++arch.x=1", "+run_name=r", "data_path=arch.y", "~arch.mlp_t"]


@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_has_forward_dtype_and_only_known_keys(arch):
    assert {"hrm", "hrm_v1", "trm", "trm_singlez", "trm_hier6", "transformers_baseline"} <= set(ARCHS)
    default = composed_arch([f"arch={arch}"])
    assert default["forward_dtype"] == "bfloat16"
    # Both spellings, as the command-line entry points pass them to Hydra.
    for spelling in ("arch.forward_dtype=float32", "+arch.forward_dtype=float32"):
        assert composed_arch([f"arch={arch}", *normalise_arch_overrides([spelling])])["forward_dtype"] == "float32"
    config_cls = load_model_class(default["name"]).config_class
    check_arch_keys(default, config_cls, default["name"])


def test_unknown_key_names_it_and_the_nearest_valid_ones():
    cls = load_model_class("recursive_reasoning.transformers_baseline@Model_ACTV2").config_class
    with pytest.raises(ValueError, match=r"^arch\.L_layers: unknown key for tb; did you mean H_layers\?$"):
        check_arch_keys(["hidden_size", "L_layers"], cls, "tb")
    with pytest.raises(ValueError, match="arch.seq_len is set by pretrain.py"):
        check_arch_keys(["seq_len"], cls, "tb")
    with pytest.raises(ValueError, match="valid keys: "):
        check_arch_keys(["zzzzzz"], cls, "tb")


def test_unknown_top_level_keys_reach_the_schema():
    """pretrain.py adds '+' to a key the base config lacks, so the schema names the typo in one
    line instead of Hydra's multi-line struct error."""
    args = ["epocs=5", "lr=1e-3", "arch.hidden_size=8", "run_name=x", "+seed=1", "~ema", "hydra.verbose=true", "hydra/job_logging=disabled", "-m", "a.b=1"]
    assert plus_unknown_keys(args, ["lr", "arch", "seed", "ema"]) == [
        "+epocs=5", "lr=1e-3", "arch.hidden_size=8", "+run_name=x", "+seed=1", "~ema", "hydra.verbose=true", "hydra/job_logging=disabled", "-m", "+a.b=1"]


def test_configured_segments_reads_either_name():
    """``halt_max_steps``, or URM's ``loops`` for the same number; None when an arch has neither."""
    assert configured_segments({"halt_max_steps": 6}) == 6 and configured_segments({"loops": 16}) == 16
    assert configured_segments({"name": "x"}) is None
