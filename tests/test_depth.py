"""training/depth.py: the depth curriculum's stages by step, its checks, training at each stage's
depth and segments and evaluating at the configured ones, exact resume mid-stage, one compiled graph per stage."""
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import REPO, TINY_TRM, counting_backend
from dataset.common import PuzzleDatasetMetadata
from training.checkpointing import restore_resume_state, save_resume_state
from training.config import parse_config
from training.depth import DepthStage, depth_at
from training.resume_state import load_train_state
from training.state import init_train_state, train_batch
from utils.config import ConfigError
from utils.distributed import DistInfo
from utils.functions import unwrap_compiled

# 8 groups of 1 example, batches of 4, 4 epochs: total_steps = 8.
META = PuzzleDatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=6, seq_len=16, num_puzzle_identifiers=3,
                             total_groups=8, mean_puzzle_examples=1, sets=["all"])
# (1, 1) for steps 1-2, (2, 2) for steps 3-6, then the configured (3, 2) for steps 7-8.
SCHEDULE = "depth_schedule=[{until: 0.25, H_cycles: 1, L_cycles: 1}, {until: 0.75, H_cycles: 2, L_cycles: 2}]"
# L_level calls of one TRM segment: H_cycles * (L_cycles + 1) with one layer.
CALLS = {(1, 1): 2, (2, 2): 6, (3, 2): 9}


def tiny_config(*overrides, arch="trm"):
    tiny = [*TINY_TRM, "arch.H_cycles=3", "arch.L_cycles=2"] if arch == "trm" else []
    with initialize_config_dir(config_dir=str(REPO / "config"), version_base=None):
        cfg = compose("cfg_pretrain", overrides=[f"arch={arch}", *tiny, "evaluators=[]",
                                                 "global_batch_size=4", "epochs=4", "eval_interval=4", "lr_warmup_steps=1",
                                                 "compile=false", *overrides])
    return parse_config(OmegaConf.to_container(cfg, resolve=True))


def batches(n=8):
    g = torch.Generator().manual_seed(3)
    return [{"inputs": torch.randint(0, 6, (4, 16), generator=g, dtype=torch.int32),
             "labels": torch.randint(0, 6, (4, 16), generator=g, dtype=torch.int32),
             "puzzle_identifiers": torch.randint(0, 3, (4,), generator=g, dtype=torch.int32)} for _ in range(n)]


def new_state(config):
    torch.manual_seed(0)
    state = init_train_state(config, META, world_size=1, device="cpu")
    state.model.train()
    return state


def count_calls(state):
    """A list that gets one entry per L_level call of the state's model."""
    calls = []
    unwrap_compiled(state.model).model.inner.L_level.register_forward_hook(lambda *_: calls.append(1))
    return calls


def train_steps(config, state, data, calls):
    """Train on ``data`` from the state's step on; the L_level calls of each step."""
    per_step = []
    for batch in data[state.step:]:
        before = len(calls)
        train_batch(config, state, batch, 4, rank=0, world_size=1, log=False)
        per_step.append(len(calls) - before)
    return per_step


def test_stage_of_each_step():
    stages = [DepthStage(until=0.3, H_cycles=1, L_cycles=2), DepthStage(until=0.6, H_cycles=2, L_cycles=4)]
    assert [depth_at(stages, s, 10) for s in range(1, 11)] == [stages[0]] * 3 + [stages[1]] * 3 + [None] * 4
    assert depth_at(None, 1, 10) is None and depth_at([], 5, 10) is None
    last = [DepthStage(until=1.0, halt_max_steps=1)]
    assert depth_at(last, 10, 10) == last[0], "until=1 covers the last step"


@pytest.mark.parametrize("schedule, message", [
    ("[{until: 0.5, H_cycles: 1, L_cycles: 1}, {until: 0.5, H_cycles: 2, L_cycles: 2}]", r"depth_schedule\[1\]: until must increase"),
    ("[{until: 1.5, H_cycles: 1, L_cycles: 1}]", r"depth_schedule\[0\]: until must increase .* within \(0, 1\], got 1.5"),
    ("[{until: 0.5, H_cycles: 0, L_cycles: 1}]", r"depth_schedule\[0\]: H_cycles and L_cycles must be >= 1"),
    ("[{until: 0.5, H_cycles: 1, L_cycles: 3}]", r"depth_schedule\[0\]: .* deeper than the configured arch.H_cycles=3, arch.L_cycles=2"),
    ("[{until: 0.5, H_cycles: 1}]", r"depth_schedule\[0\]: give H_cycles and L_cycles together"),
    ("[{until: 0.5}]", r"depth_schedule\[0\]: sets nothing"),
    ("[{until: 0.5, halt_max_steps: 0}]", r"depth_schedule\[0\]: halt_max_steps must be in \[1, 2\] .*got 0"),
    ("[{until: 0.5, halt_max_steps: 3}]", r"depth_schedule\[0\]: halt_max_steps must be in \[1, 2\] .*got 3"),
    ("[{until: 0.5, H_cycle: 1, L_cycles: 1}]", r"depth_schedule.*H_cycle"),
])
def test_bad_schedules_are_one_line(schedule, message):
    with pytest.raises(ConfigError, match=message) as e:
        tiny_config(f"depth_schedule={schedule}")
    assert "\n" not in str(e.value)


def test_an_arch_without_recursion_depth_is_refused():
    with pytest.raises(ConfigError, match="depth_schedule: arch .*transformers_baseline.* has no H_cycles and L_cycles"):
        tiny_config("arch.hidden_size=32", "arch.num_heads=2", SCHEDULE, arch="transformers_baseline")


def test_training_runs_each_stage_and_evaluation_the_configured_depth():
    config = tiny_config(SCHEDULE)
    state = new_state(config)
    calls = count_calls(state)
    assert train_steps(config, state, batches(), calls) == [CALLS[(1, 1)]] * 2 + [CALLS[(2, 2)]] * 4 + [CALLS[(3, 2)]] * 2
    inner_config = unwrap_compiled(state.model).model.config
    assert (inner_config.H_cycles, inner_config.L_cycles) == (3, 2)

    state = new_state(config)
    calls = count_calls(state)
    train_steps(config, state, batches(3), calls)  # stopped in the second stage: evaluation is still at full depth
    state.model.eval()
    with torch.inference_mode():
        batch = batches(1)[0]
        before = len(calls)
        state.model(carry=state.model.initial_carry(batch), batch=batch, return_keys=[])
    assert len(calls) - before == CALLS[(3, 2)]

    plain = tiny_config()
    state = new_state(plain)
    assert train_steps(plain, state, batches(), count_calls(state)) == [CALLS[(3, 2)]] * 8, "no schedule: the configured depth"


def test_a_segment_cap_holds_in_its_stage_and_evaluation_runs_the_configured_segments():
    """``halt_max_steps`` in a stage: no training example runs more segments than the cap while
    the stage lasts (so examples enter the batch sooner), the configured number afterwards and in
    evaluation. An arch without recursion cycles may still cap its segments."""
    config = tiny_config("arch.halt_max_steps=4", "depth_schedule=[{until: 0.5, halt_max_steps: 1}]")
    state = new_state(config)
    longest = []
    for batch in batches():
        train_batch(config, state, batch, 4, rank=0, world_size=1, log=False)
        longest.append(int(state.carry[0].steps.max()))
    assert longest[:4] == [1, 1, 1, 1] and max(longest[4:]) > 1, longest
    act = unwrap_compiled(state.model).model
    assert act.config.halt_max_steps == 4
    state.model.eval()
    with torch.inference_mode():
        batch = batches(1)[0]
        carry = state.model.initial_carry(batch)
        for _ in range(4):
            carry, *_ = state.model(carry=carry, batch=batch, return_keys=[])
    assert carry.steps.tolist() == [4] * 4 and carry.halted.all()

    baseline = tiny_config("arch.hidden_size=32", "arch.num_heads=2", "depth_schedule=[{until: 0.5, halt_max_steps: 1}]",
                           arch="transformers_baseline")
    assert baseline.depth_schedule[0].halt_max_steps == 1


def test_resume_mid_stage_trains_as_the_uninterrupted_run(tmp_path):
    """Saved after step 4 (inside the second stage) and resumed from the files: the same depth at
    every later step and the same weights at the end, bit for bit."""
    config = tiny_config(SCHEDULE)
    data = batches()
    whole = new_state(config)
    whole_calls = train_steps(config, whole, data, count_calls(whole))

    first = new_state(config)
    train_steps(config, first, data[:4], count_calls(first))
    info = DistInfo(rank=0, world_size=1, device=torch.device("cpu"))
    save_resume_state(str(tmp_path), first, config.model_dump(), info)
    resumed = new_state(config)
    shared, own = load_train_state(str(tmp_path), 4, 0, "cpu")
    restore_resume_state(resumed, shared, own, "cpu")
    stage = depth_at(config.depth_schedule, 5, resumed.total_steps)
    assert resumed.step == 4 and (stage.H_cycles, stage.L_cycles) == (2, 2)
    assert train_steps(config, resumed, data, count_calls(resumed)) == whole_calls[4:]
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_compiled_model_builds_one_graph_per_stage():
    """Dynamo specialises on the depth ints: the two shallow stages and the configured depth give
    one training graph each, evaluation one more, and going through the steps recompiles nothing else."""
    config = tiny_config(SCHEDULE)
    state = new_state(config)
    counting, graphs = counting_backend()
    state.model = torch.compile(state.model, backend=counting, fullgraph=True, dynamic=False)
    seen = []
    for step, batch in enumerate(batches(), start=1):
        train_batch(config, state, batch, 4, rank=0, world_size=1, log=False)
        if step in (2, 4, 6, 8):  # an evaluation between steps, at the configured depth
            state.model.eval()
            with torch.inference_mode():
                state.model(carry=state.model.initial_carry(batch), batch=batch, return_keys=[])
            state.model.train()
        seen.append(len(graphs))
    assert seen == [1, 2, 3, 3, 3, 3, 4, 4]
