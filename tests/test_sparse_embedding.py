"""Sparse puzzle embedding and its SignSGD optimizer."""
import torch

from models.sparse_embedding import CastedSparseEmbedding
from utils.sign_sgd import CastedSparseEmbeddingSignSGD_Distributed


def make(num=6, dim=4, batch=5):
    torch.manual_seed(0)
    emb = CastedSparseEmbedding(num, dim, batch_size=batch, init_std=1.0, cast_to=torch.float32)
    return emb, CastedSparseEmbeddingSignSGD_Distributed(emb.buffers(), world_size=1, lr=0.1, weight_decay=0.5)


def test_weights_is_a_buffer_and_locals_are_not_saved():
    emb, _ = make()
    assert list(emb.parameters()) == []
    assert set(emb.state_dict()) == {"weights"}


def test_eval_reads_table_train_routes_grad_to_local_weights():
    emb, _ = make()
    ids = torch.tensor([1, 3, 3, 0, 5], dtype=torch.int32)
    emb.eval()
    assert torch.equal(emb(ids), emb.weights[ids])
    emb.train()
    out = emb(ids)
    assert torch.equal(out, emb.weights[ids]) and torch.equal(emb.local_ids, ids)
    out.sum().backward()
    assert torch.equal(emb.local_weights.grad, torch.ones(5, 4))


def test_signsgd_updates_only_batch_rows_and_sums_duplicates_before_sign():
    emb, opt = make()
    before = emb.weights.clone()
    ids = torch.tensor([1, 3, 3, 0, 0], dtype=torch.int32)
    emb.train()
    emb(ids)
    # id 3 appears twice with gradients +1 and -3 in column 0: the sum is -2, so sign is -1.
    # Taking signs first and summing would give 0 (no move) for that element.
    grad = torch.zeros(5, 4)
    grad[1, 0], grad[2, 0] = 1.0, -3.0
    grad[0] = torch.tensor([0.5, -0.5, 0.0, 2.0])
    grad[3, 1], grad[4, 1] = 2.0, -2.0  # id 0: cancels to exactly 0 -> only decay
    emb.local_weights.grad = grad
    opt.step()

    lr, wd = 0.1, 0.5
    expected = before.clone()
    summed = {1: grad[0], 3: grad[1] + grad[2], 0: grad[3] + grad[4]}
    for row, g in summed.items():
        expected[row] = before[row] * (1 - lr * wd) - lr * torch.sign(g)
    torch.testing.assert_close(emb.weights, expected)
    for untouched in (2, 4, 5):
        assert torch.equal(emb.weights[untouched], before[untouched]), "rows not in the batch must not decay"
    assert emb.weights[3, 0] > before[3, 0] * (1 - lr * wd)  # moved up: sign of the summed gradient


def test_accumulated_micro_batches_step_like_one_batch():
    """Two micro-batches, one row in both: after ``accumulate`` the step equals one step on the whole batch."""
    ids = torch.tensor([1, 3, 3, 0], dtype=torch.int32)
    grad = torch.tensor([[0.5, -1.0, 0.0, 2.0], [1.0, 1.0, -1.0, 0.0], [-3.0, 0.5, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0]])

    whole, whole_opt = make(batch=4)
    whole.train()
    whole(ids)
    whole.local_weights.grad = grad.clone()
    whole_opt.step()

    micro, micro_opt = make(batch=2)
    micro.train()
    for half in (slice(0, 2), slice(2, 4)):
        micro(ids[half])
        micro.local_weights.grad = grad[half].clone()
        if half.start == 0:
            micro_opt.accumulate()
            assert micro.local_weights.grad is None
    micro_opt.step()
    # Row 1 is only in the first micro-batch; row 3's column 2 moves by sign(-1 + 0) only if both halves are summed.
    assert torch.equal(micro.weights, whole.weights)
    assert micro_opt._pending == {}


def pairwise_tree_sum(rows):
    """The order ``sum_rows_by_id`` promises, written plainly: ((r0 + r1) + (r2 + r3)) + ..."""
    while len(rows) > 1:
        rows = [rows[i] + rows[i + 1] if i + 1 < len(rows) else rows[i] for i in range(0, len(rows), 2)]
    return rows[0]


def test_sum_rows_by_id_adds_each_ids_rows_in_a_fixed_order():
    from utils.sign_sgd import sum_rows_by_id
    g = torch.Generator().manual_seed(0)
    for n, num_ids in [(64, 7), (768, 1), (5, 9), (1, 1)]:  # 768 rows of one id: a Sudoku batch (one puzzle identifier)
        values, inverse = torch.randn(n, 5, generator=g), torch.randint(0, num_ids, (n,), generator=g)
        out = sum_rows_by_id(values, inverse, num_ids)
        # The sums, to float32 rounding: a pairwise sum of m terms errs by at most ceil(log2 m) * eps * sum |terms|.
        for i in range(num_ids):
            rows = values[inverse == i]
            bound = max(1, (len(rows) - 1).bit_length()) * torch.finfo(torch.float32).eps * rows.abs().sum(0).double()
            assert ((out[i].double() - rows.double().sum(0)).abs() <= bound).all()
            # ... in exactly the promised order (batch order within an id, added as a pairwise tree), so the
            # bits do not depend on a kernel, thread count or device; ids without rows are 0.
            assert torch.equal(out[i], pairwise_tree_sum(list(rows)) if len(rows) else torch.zeros(5))
    # Up to three rows per id the tree is the row-order sum of the original's scatter_add_: same bits.
    inverse = torch.tensor([1, 3, 3, 0, 3, 2])
    values = torch.randn(6, 5, generator=g)
    assert torch.equal(sum_rows_by_id(values, inverse, 5), torch.zeros(5, 5).scatter_add_(0, inverse.unsqueeze(-1).expand(-1, 5), values))


def test_the_optimizer_is_importable_where_the_original_has_it():
    """Scripts written for the original HRM code import SignSGD from models.sparse_embedding."""
    import models.sparse_embedding as original_path
    import utils.sign_sgd
    assert original_path.CastedSparseEmbeddingSignSGD_Distributed is utils.sign_sgd.CastedSparseEmbeddingSignSGD_Distributed
