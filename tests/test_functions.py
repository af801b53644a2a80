"""Model identifiers and flexible state-dict loading."""
import os

import pytest
import torch

from models.losses import ACTLossHead
from utils.functions import get_model_source_path, load_model_class, load_state_dict_flexible

ORIGINAL_IDENTIFIERS = [
    "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1",
    "recursive_reasoning.hrm@HierarchicalReasoningModel_ACTV1",
    "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1",
    "losses@ACTLossHead",
]


@pytest.mark.parametrize("identifier", ORIGINAL_IDENTIFIERS)
def test_original_identifiers_resolve(identifier):
    cls = load_model_class(identifier)
    assert cls.__name__ == identifier.split("@")[1]
    path = get_model_source_path(identifier)
    assert os.path.isfile(path) and path.endswith(".py")


def test_trm_repo_name_of_hrm_is_the_same_class():
    assert load_model_class(ORIGINAL_IDENTIFIERS[0]) is load_model_class(ORIGINAL_IDENTIFIERS[1])


@pytest.mark.parametrize("identifier, message", [
    ("hrm.hrm_act_v1.HierarchicalReasoningModel_ACTV1", "expected '<module path>@<ClassName>'"),
    ("hrm.nope@HierarchicalReasoningModel_ACTV1", "no module 'models.hrm.nope'"),
    ("hrm.hrm_act_v1@Nope", "has no class 'Nope'"),
])
def test_bad_identifiers(identifier, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        load_model_class(identifier)


def small_model():
    cls = load_model_class(ORIGINAL_IDENTIFIERS[2])
    return ACTLossHead(cls(dict(batch_size=2, seq_len=4, puzzle_emb_ndim=8, puzzle_emb_len=1, num_puzzle_identifiers=2,
                                vocab_size=5, H_cycles=1, L_cycles=1, L_layers=1, hidden_size=8, expansion=1, num_heads=1,
                                pos_encodings="rope", halt_max_steps=2, halt_exploration_prob=0.0, forward_dtype="float32")),
                       "stablemax_cross_entropy")


def test_loads_compiled_prefix_keys():
    src, dst = small_model(), small_model()
    prefixed = {"_orig_mod." + k: v for k, v in src.state_dict().items()}
    load_state_dict_flexible(dst, prefixed)
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v)


def test_missing_unexpected_and_misshaped_keys_are_named():
    model = small_model()
    sd = model.state_dict()
    sd.pop("model.inner.lm_head.weight")
    sd["model.inner.bogus"] = torch.zeros(1)
    sd["model.inner.q_head.bias"] = torch.zeros(3)
    with pytest.raises(ValueError) as e:
        load_state_dict_flexible(model, sd, source="step_7")
    msg = str(e.value)
    assert msg.startswith("step_7 does not fit the model")
    assert "missing keys: model.inner.lm_head.weight" in msg
    assert "unexpected keys: model.inner.bogus" in msg
    assert "model.inner.q_head.bias (3,) vs model (2,)" in msg
