"""Per-puzzle embedding trained sparsely with SignSGD.

Only the rows used by the current batch receive a gradient, so the table is a buffer (AdamATan2
never sees it) and the batch's rows are copied into a small ``local_weights`` tensor that does
require grad. Its optimizer (``utils/sign_sgd.py``, beside the other optimizers) then writes the
update back into those rows only; it is importable from here too, where the original HRM code has it.
"""
import torch
from torch import nn

from models.common import trunc_normal_init_
from utils.sign_sgd import CastedSparseEmbeddingSignSGD_Distributed, sum_rows_by_id  # noqa: F401 (the original's import path)


class CastedSparseEmbedding(nn.Module):
    def __init__(self, num_embeddings: int, embedding_dim: int, batch_size: int, init_std: float, cast_to: torch.dtype):
        super().__init__()
        self.cast_to = cast_to
        self.weights = nn.Buffer(trunc_normal_init_(torch.empty((num_embeddings, embedding_dim)), std=init_std), persistent=True)
        # Rows of the current batch (with gradient) and their ids; rebuilt every step, not saved.
        self.local_weights = nn.Buffer(torch.zeros(batch_size, embedding_dim, requires_grad=True), persistent=False)
        self.local_ids = nn.Buffer(torch.zeros(batch_size, dtype=torch.int32), persistent=False)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.weights[inputs].to(self.cast_to)
        with torch.no_grad():
            self.local_weights.copy_(self.weights[inputs])
            self.local_ids.copy_(inputs)
        return self.local_weights.to(self.cast_to)
