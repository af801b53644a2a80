"""Checks that need an NVIDIA GPU (``make gpu-check`` runs them; skipped without CUDA): the
attention backends agree in bf16, compiled equals eager in bf16, and two NCCL processes train
the same weights as one."""
import pytest
import torch

from conftest import REPO, TINY_HRM, assert_same_training, load_weights, pretrain, subprocess_env, torchrun

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (torch.cuda.is_available() is False)")]


def _rel_err(actual, expected):
    return ((actual.float() - expected).abs().max() / expected.abs().max()).item()


def test_attention_backends_agree_in_bf16_forward_and_backward(monkeypatch):
    """FA3, FA2 (whichever import) and SDPA on the same bf16 inputs, eager and under torch.compile
    (FlashAttention then runs through the hrm::flash_attention custom op, in one graph), against
    float32 SDPA: outputs and the gradients of query, key and value."""
    from torch._dynamo.testing import CompileCounterWithBackend

    from models.layers import ATTENTION_BACKEND_ENV, _import_flash, attention
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, w = (torch.randn(4, 97, 8, 64, device="cuda", generator=g) for _ in range(4))  # [B, S, heads, head_dim], S as Sudoku + puzzle

    def run(fn, dtype):
        inputs = [t.to(dtype, copy=True).requires_grad_() for t in (q, k, v)]
        out = fn(*inputs)
        (out.float() * w).sum().backward()
        return out, [t.grad for t in inputs]

    def sdpa(q_, k_, v_):
        return torch.nn.functional.scaled_dot_product_attention(q_.transpose(1, 2), k_.transpose(1, 2), v_.transpose(1, 2)).transpose(1, 2)

    expected, expected_grads = run(sdpa, torch.float32)
    backends = ["sdpa"] + [b for b in ("fa3", "fa2") if _import_flash(b) is not None]
    for backend in backends:
        monkeypatch.setenv(ATTENTION_BACKEND_ENV, backend)
        for compiled in (False, True):
            torch._dynamo.reset()
            counter = CompileCounterWithBackend("inductor")
            fn = torch.compile(attention, backend=counter, fullgraph=True) if compiled else attention
            out, grads = run(fn, torch.bfloat16)
            what = f"{backend} {'compiled' if compiled else 'eager'}"
            assert out.dtype == torch.bfloat16 and out.shape == q.shape, what
            assert _rel_err(out, expected) < 2e-2, f"{what}: output"
            for name, grad, exp in zip("qkv", grads, expected_grads):
                assert _rel_err(grad, exp) < 3e-2, f"{what}: gradient of {name}"
            if compiled:
                assert counter.frame_count == 1, f"{what}: {counter.frame_count} graphs"
                if backend != "sdpa":
                    assert "hrm.flash_attention" in str(counter.graphs[0].code), f"{what}: the custom op is not in the graph"
    print(f"attention backends compared: {', '.join(backends)}")


def test_compiled_equals_eager_in_bf16():
    """A few HRM training steps and an evaluation on the GPU, eager and inductor-compiled (bf16)."""
    import torch._inductor.config as inductor_config

    from models.hrm.hrm_act_v1 import HierarchicalReasoningModel_ACTV1
    from models.losses import ACTLossHead
    from utils.adam_atan2 import AdamATan2

    cfg = dict(batch_size=32, seq_len=81, puzzle_emb_ndim=128, num_puzzle_identifiers=8, vocab_size=11, H_cycles=2, L_cycles=2,
               H_layers=2, L_layers=2, hidden_size=128, expansion=4, num_heads=2, pos_encodings="rope", halt_max_steps=4,
               halt_exploration_prob=0.1, forward_dtype="bfloat16")
    g = torch.Generator().manual_seed(0)
    batch = {"inputs": torch.randint(1, 11, (32, 81), generator=g, dtype=torch.int32),
             "labels": torch.randint(2, 11, (32, 81), generator=g, dtype=torch.int32),
             "puzzle_identifiers": torch.randint(0, 8, (32,), generator=g, dtype=torch.int32)}
    batch = {k: v.cuda() for k, v in batch.items()}

    def run(compiled):
        torch.manual_seed(0)
        with torch.device("cuda"):
            model = ACTLossHead(HierarchicalReasoningModel_ACTV1(cfg), "stablemax_cross_entropy")
        torch._dynamo.reset()
        runner = torch.compile(model, dynamic=False) if compiled else model
        opt = AdamATan2(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
        carry, losses = model.initial_carry(batch), []
        for _ in range(3):
            carry, loss, _, _, _ = runner(carry=carry, batch=batch, return_keys=[])
            (loss / 32).backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.detach().float())
        model.eval()
        with torch.inference_mode():
            c = model.initial_carry(batch)
            for _ in range(cfg["halt_max_steps"]):
                c, _, _, preds, _ = runner(carry=c, batch=batch, return_keys=["logits"])
        return torch.stack(losses), preds["logits"].float()

    with inductor_config.patch(fallback_random=True):
        (loss_e, logits_e), (loss_c, logits_c) = run(False), run(True)
    torch.testing.assert_close(loss_c, loss_e, rtol=2e-2, atol=1e-2)
    torch.testing.assert_close(logits_c, logits_e, rtol=5e-2, atol=5e-2)


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL with 2 processes needs 2 GPUs")
def test_two_nccl_processes_match_one(sudoku4, tmp_path):
    args = [f"data_path={sudoku4}", "epochs=2", "eval_interval=1", "global_batch_size=8", "evaluators=[]", "lr=3e-3",
            "lr_warmup_steps=1", *TINY_HRM, "arch.halt_exploration_prob=0", "arch.H_cycles=2", "compile=false", "+run_name=n"]
    pretrain(*args, f"checkpoint_path={tmp_path / 'one'}", env=subprocess_env(cuda=True))
    torchrun("--nproc-per-node", "2", str(REPO / "pretrain.py"), *args, f"checkpoint_path={tmp_path / 'two'}",
             env=subprocess_env(cuda=True, OMP_NUM_THREADS="1"))
    # lr 3e-3 (puzzle embedding 1e-2), 12 steps: a sign flipped by a near-zero gradient is at most 2 x 12 x 1e-2 apart.
    assert_same_training(load_weights(tmp_path / "one" / "step_12"), load_weights(tmp_path / "two" / "step_12"), rtol=1e-4, step_bound=0.25)


def test_sparse_embedding_row_sums_are_deterministic_on_cuda():
    """Many rows of one id (Sudoku's single puzzle identifier): the same bits on every run, so a
    resumed run repeats the uninterrupted one, and the same bits as on the CPU (the order of the
    additions is fixed by construction)."""
    from models.sparse_embedding import sum_rows_by_id
    g = torch.Generator(device="cuda").manual_seed(0)
    values = torch.randn(6144, 512, device="cuda", generator=g)
    inverse = torch.randint(0, 3, (6144,), device="cuda", generator=g)
    first = sum_rows_by_id(values, inverse, 3)
    for _ in range(10):
        assert torch.equal(sum_rows_by_id(values, inverse, 3), first)
    assert torch.equal(first.cpu(), sum_rows_by_id(values.cpu(), inverse.cpu(), 3))


def test_adam_atan2_step_count_lives_where_its_path_reads_it():
    """A state loaded with map_location=cuda (resume) puts ``step`` on the GPU; the built-in path
    keeps it on the CPU (reading a GPU step syncs once per parameter), the CUDA kernel on the GPU."""
    from utils.adam_atan2 import AdamATan2, _cuda_backend
    params = [torch.nn.Parameter(torch.randn(8, 8, device="cuda")) for _ in range(3)]
    opt = AdamATan2(params, lr=1e-3)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    saved = opt.state_dict()
    for state in saved["state"].values():
        state["step"] = state["step"].cuda() if _cuda_backend() is None else state["step"].cpu()  # the other place
    opt.load_state_dict(saved)
    opt.step()
    expected = "cuda" if _cuda_backend() is not None else "cpu"
    assert all(opt.state[p]["step"].device.type == expected and float(opt.state[p]["step"]) == 2 for p in params)
