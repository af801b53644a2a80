"""Losses and the ACT loss head (``losses@ACTLossHead``) that wraps HRM or TRM."""
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_LABEL_ID = -100
# Weight of the ACT Q-head losses (halt + continue) next to the language-model loss, as the original.
Q_LOSS_WEIGHT = 0.5


def s(x: torch.Tensor, epsilon: float = 1e-30) -> torch.Tensor:
    """Stablemax's replacement for exp: ``1/(1-x)`` below 0, ``x+1`` above."""
    return torch.where(x < 0, 1 / (1 - x + epsilon), x + 1)


def log_stablemax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    s_x = s(x)
    return torch.log(s_x / torch.sum(s_x, dim=dim, keepdim=True))


def stablemax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_LABEL_ID) -> torch.Tensor:
    """Per-position cross entropy under stablemax, in float64; 0 where ``labels == ignore_index``."""
    logprobs = log_stablemax(logits.to(torch.float64), dim=-1)
    valid_mask = labels != ignore_index
    safe_labels = torch.where(valid_mask, labels, 0).to(torch.long)
    prediction_logprobs = torch.gather(logprobs, index=safe_labels.unsqueeze(-1), dim=-1).squeeze(-1)
    return -torch.where(valid_mask, prediction_logprobs, 0)


def softmax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_LABEL_ID) -> torch.Tensor:
    """Per-position softmax cross entropy in float32; 0 where ignored. Accepts non-contiguous logits."""
    flat = logits.to(torch.float32).reshape(-1, logits.shape[-1])
    return F.cross_entropy(flat, labels.to(torch.long).reshape(-1), ignore_index=ignore_index, reduction="none").view(labels.shape)


LOSS_FUNCTIONS = {"stablemax_cross_entropy": stablemax_cross_entropy, "softmax_cross_entropy": softmax_cross_entropy}


def segment_weights(steps: torch.Tensor, decay: float, num_segments: int) -> torch.Tensor:
    """Per-row weight of the loss of ACT segment ``t = steps`` (1 for the first segment):
    ``lambda^(t-1) / Z`` with ``Z = sum_{s=1..N} lambda^(s-1) / N`` over ``N = num_segments``
    (CGAR's hierarchical supervision weighting, Qasim & Zhang, arXiv 2511.08653).

    CGAR's ``Z`` makes the N weights sum to 1; the extra factor N makes them average 1, so that the
    loss keeps its usual scale (and ``lambda = 1`` weighs every segment 1, today's loss).
    """
    z = sum(decay ** s for s in range(num_segments)) / num_segments
    return decay ** (steps - 1).to(torch.float32) / z


class ACTLossHead(nn.Module):
    """Runs one ACT segment of the wrapped model and computes losses and metric sums.

    Metrics are sums over rows that halted this segment and have at least one label ("valid");
    the training loop divides them by ``count`` (or the global batch size for losses).

    ``segment_loss_decay`` (lambda; None: off) weighs each row's loss by the segment it is at,
    :func:`segment_weights`; the logged losses stay unweighted, comparable across lambdas.
    """

    def __init__(self, model: nn.Module, loss_type: str, segment_loss_decay: Optional[float] = None):
        super().__init__()
        if loss_type not in LOSS_FUNCTIONS:
            raise ValueError(f"loss_type {loss_type!r}: expected one of {', '.join(LOSS_FUNCTIONS)}")
        if segment_loss_decay is not None and not (0 < segment_loss_decay < float("inf")):
            raise ValueError(f"segment_loss_decay must be a positive number (or null: off), got {segment_loss_decay}")
        self.model = model
        self.loss_fn = LOSS_FUNCTIONS[loss_type]
        # lambda = 1 weighs every segment 1: the unweighted sums below, bit for bit.
        self.segment_loss_decay = None if segment_loss_decay == 1 else segment_loss_decay

    def initial_carry(self, *args, **kwargs):
        return self.model.initial_carry(*args, **kwargs)  # type: ignore[operator]

    def forward(self, return_keys: Sequence[str], **model_kwargs) -> Tuple[Any, torch.Tensor, Dict[str, torch.Tensor], Dict[str, torch.Tensor], torch.Tensor]:
        new_carry, outputs = self.model(**model_kwargs)
        labels = new_carry.current_data["labels"]

        with torch.no_grad():
            outputs["preds"] = torch.argmax(outputs["logits"], dim=-1)

            mask = labels != IGNORE_LABEL_ID
            loss_counts = mask.sum(-1)
            loss_divisor = loss_counts.clamp_min(1).unsqueeze(-1)

            is_correct = mask & (outputs["preds"] == labels)
            seq_is_correct = is_correct.sum(-1) == loss_counts

            valid_metrics = new_carry.halted & (loss_counts > 0)
            metrics = {
                "count": valid_metrics.sum(),
                "accuracy": torch.where(valid_metrics, (is_correct.to(torch.float32) / loss_divisor).sum(-1), 0).sum(),
                "exact_accuracy": (valid_metrics & seq_is_correct).sum(),
                "q_halt_accuracy": (valid_metrics & ((outputs["q_halt_logits"] >= 0) == seq_is_correct)).sum(),
                "steps": torch.where(valid_metrics, new_carry.steps, 0).sum(),
            }

        token_losses = self.loss_fn(outputs["logits"], labels, ignore_index=IGNORE_LABEL_ID) / loss_divisor
        q_halt_target = seq_is_correct.to(outputs["q_halt_logits"].dtype)
        if self.segment_loss_decay is None:
            lm_loss = token_losses.sum()
            q_halt_loss = F.binary_cross_entropy_with_logits(outputs["q_halt_logits"], q_halt_target, reduction="sum")
        else:
            lm_rows = token_losses.sum(-1)
            q_halt_rows = F.binary_cross_entropy_with_logits(outputs["q_halt_logits"], q_halt_target, reduction="none")
            lm_loss, q_halt_loss = lm_rows.sum(), q_halt_rows.sum()
            with torch.no_grad():
                weights = segment_weights(new_carry.steps, self.segment_loss_decay, self.model.config.halt_max_steps)
        metrics.update({"lm_loss": lm_loss.detach(), "q_halt_loss": q_halt_loss.detach()})

        q_continue_loss = 0
        q_continue_rows = 0
        if "target_q_continue" in outputs:
            if self.segment_loss_decay is None:
                q_continue_loss = F.binary_cross_entropy_with_logits(outputs["q_continue_logits"], outputs["target_q_continue"], reduction="sum")
            else:
                q_continue_rows = F.binary_cross_entropy_with_logits(outputs["q_continue_logits"], outputs["target_q_continue"], reduction="none")
                q_continue_loss = q_continue_rows.sum()
            metrics["q_continue_loss"] = q_continue_loss.detach()

        if self.segment_loss_decay is None:
            loss = lm_loss + Q_LOSS_WEIGHT * (q_halt_loss + q_continue_loss)
        else:
            # The whole loss of a row's segment (tokens and Q head) carries the segment's weight.
            loss = (weights * (lm_rows + Q_LOSS_WEIGHT * (q_halt_rows + q_continue_rows))).sum()

        detached_outputs = {k: outputs[k].detach() for k in return_keys if k in outputs}
        return new_carry, loss, metrics, detached_outputs, new_carry.halted.all()
