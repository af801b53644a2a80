"""The ACT segments of one evaluation batch, with the extra records the analyses need.

Evaluation runs every row for exactly ``halt_max_steps`` segments (the original's behaviour; the
reported metrics do not change). On request this also records

- ``steps``: the segments each row would have used under the training-time halting rule (the
  first segment whose halt signal fires, ``halt_max_steps`` if none does), as ``int32 [B]``;
- ``trace``: the prediction after every segment, ``int32 [B, T, S]``, and ``trace_q_halt_logits``
  ``float32 [B, T]``, the halt logit after every segment;

and can hide the puzzle identifiers from the model (``identifier_map``: each identifier is looked
up in this table before the model sees it), while evaluators and saved outputs keep the real ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Set, Tuple

import torch
from torch import nn

from utils.functions import unwrap_compiled

# Names that can be asked for in ``eval_save_outputs`` besides the model's own outputs.
SEGMENT_OUTPUTS = ("steps", "trace", "trace_q_halt_logits")


@dataclass
class SegmentOptions:
    """What :func:`run_eval_segments` records or changes besides running the model."""

    steps: bool = False
    trace: bool = False
    identifier_map: Optional[torch.Tensor] = None  # [num_puzzle_identifiers] -> identifier the model sees

    @classmethod
    def from_outputs(cls, names, identifier_map: Optional[torch.Tensor] = None) -> "SegmentOptions":
        names = set(names)
        return cls(steps="steps" in names, trace=bool(names & {"trace", "trace_q_halt_logits"}), identifier_map=identifier_map)


def _halt_signal(model: nn.Module):
    inner = getattr(unwrap_compiled(model), "model", None)
    return getattr(inner, "halt_signal", lambda q_halt, q_continue: q_halt > q_continue)


def run_eval_segments(model: nn.Module, batch: Dict[str, torch.Tensor], return_keys: Set[str], halt_max_steps: int,
                      options: Optional[SegmentOptions] = None) -> Tuple[Any, Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """Run one test batch from a fresh carry until every row halted; returns ``(carry, metrics, preds)``.

    ``preds`` holds the requested model outputs of the last segment plus, per ``options``,
    ``steps`` / ``trace`` / ``trace_q_halt_logits``. Only the final check of ``all_finish`` syncs
    with the device, as before.
    """
    options = options or SegmentOptions()
    model_batch = batch
    if options.identifier_map is not None:
        ids = batch["puzzle_identifiers"]
        model_batch = dict(batch, puzzle_identifiers=options.identifier_map.to(ids.device)[ids.long()].to(ids.dtype))
    keys = set(return_keys)
    if options.steps or options.trace:
        keys |= {"preds", "q_halt_logits", "q_continue_logits"}
    halt_signal = _halt_signal(model)

    carry = model.initial_carry(model_batch)  # type: ignore[operator]
    steps = halted = None
    trace, trace_q = [], []
    segment = 0

    def one_segment():
        nonlocal carry, steps, halted, segment
        carry, _, metrics, preds, all_finish = model(carry=carry, batch=model_batch, return_keys=keys)
        segment += 1
        if options.steps:
            fires = halt_signal(preds["q_halt_logits"], preds.get("q_continue_logits", preds["q_halt_logits"]))
            if steps is None:
                steps = torch.full_like(fires, halt_max_steps, dtype=torch.int32)
                halted = torch.zeros_like(fires)
            steps = torch.where(fires & ~halted, torch.full_like(steps, segment), steps)
            halted = halted | fires
        if options.trace:
            trace.append(preds["preds"].to(torch.int32))
            trace_q.append(preds["q_halt_logits"].to(torch.float32))
        return metrics, preds, all_finish

    # Eval rows halt exactly at halt_max_steps: run that many segments, check once. A model that halts
    # adaptively in evaluation (transformers_baseline with act_inference) may finish earlier: check each segment.
    adaptive = getattr(getattr(unwrap_compiled(model), "model", None), "halts_adaptively", lambda: False)()
    for _ in range(1 if adaptive else halt_max_steps):
        metrics, preds, all_finish = one_segment()
    while not bool(all_finish):
        metrics, preds, all_finish = one_segment()

    out = {k: v for k, v in preds.items() if k in return_keys}
    if options.steps:
        out["steps"] = steps
    if options.trace:
        out["trace"] = torch.stack(trace, dim=1)
        out["trace_q_halt_logits"] = torch.stack(trace_q, dim=1)
    return carry, metrics, out


def puzzle_id_ablation_map(mode: str, num_identifiers: int, blank_id: int, seed: int) -> Optional[torch.Tensor]:
    """Identifier table for ``puzzle_id_ablation``: ``none`` -> None; ``blank`` -> every identifier
    becomes ``blank_id``; ``random`` -> each identifier becomes a different, randomly drawn non-blank
    one (seeded, so the same on every rank and run; the blank one if there is no other)."""
    if mode == "none":
        return None
    if mode == "blank":
        return torch.full((num_identifiers,), blank_id, dtype=torch.int64)
    if mode != "random":
        raise ValueError(f"puzzle_id_ablation must be none, blank or random, got {mode!r}")
    g = torch.Generator().manual_seed(seed)
    candidates = torch.tensor([i for i in range(num_identifiers) if i != blank_id], dtype=torch.int64)
    k = len(candidates)
    out = torch.full((num_identifiers,), blank_id, dtype=torch.int64)
    if k == 0:
        return out
    ids = torch.arange(num_identifiers)
    is_blank = ids == blank_id
    # A non-blank identifier draws among the k-1 others: index r over them, stepping over itself.
    own_pos = torch.searchsorted(candidates, ids)
    draws = (torch.rand(num_identifiers, generator=g, dtype=torch.float64) * torch.where(is_blank, k, k - 1)).long()
    draws = torch.where(~is_blank & (draws >= own_pos), draws + 1, draws).clamp_max(k - 1)
    out = candidates[draws]
    if k == 1:  # the only non-blank identifier has no other to take
        out[~is_blank] = blank_id
    return out
