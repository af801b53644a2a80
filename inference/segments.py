"""The ACT segments of one evaluation batch, with the extra records the analyses need.

Evaluation runs every row for exactly ``halt_max_steps`` segments (the original's behaviour; the
reported metrics do not change). On request this also records

- ``steps``: the segments each row would have used under the training-time halting rule (the
  first segment whose halt signal fires, ``halt_max_steps`` if none does), as ``int32 [B]``;
- ``trace``: the prediction after every segment, ``int32 [B, T, S]``, ``trace_q_halt_logits``
  ``float32 [B, T]``, the halt logit after every segment, and ``trace_halt_confidence``
  ``float32 [B, T]``, the halt confidence after every segment;
- ``halt_confidence``: the confidence of the halting rule the model uses after the last segment,
  ``float32 [B]``: sigmoid(q_halt - q_continue) for HRM, sigmoid(q_halt) where the model halts
  on q_halt alone (TRM's ``no_ACT_continue``); it reaches 0.5 exactly where the rule fires, so
  ``steps`` is the first segment whose confidence is above 0.5;

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
SEGMENT_OUTPUTS = ("steps", "trace", "trace_q_halt_logits", "trace_halt_confidence", "halt_confidence")
# The most ACT segments a command line may ask for: the largest published test-time budget
# (1024). A larger value is a typo far more often than an experiment, and would run for hours.
MAX_HALT_MAX_STEPS = 1024


def check_halt_max_steps(value: Optional[int], option: str = "halt_max_steps") -> None:
    """``ValueError`` (one line) unless ``value`` is None or 1..MAX_HALT_MAX_STEPS."""
    if value is not None and not 1 <= value <= MAX_HALT_MAX_STEPS:
        raise ValueError(f"{option}={value}: expected 1 to {MAX_HALT_MAX_STEPS} ACT segments "
                         f"({MAX_HALT_MAX_STEPS} is the largest published test-time budget)")


@dataclass
class RunOptions:
    """How :func:`run_segments` runs a batch: the test-time options of every inference path
    (evaluate.py, predict.py, the analyses, the evaluation during training).

    ``halt_max_steps`` / ``act_inference``: None keeps the trained value; they reach the model as
    arguments of each segment, the model's config is never changed. ``identifier_map``: each
    puzzle identifier is looked up in this table before the model sees it (identifier ablation).
    ``steps`` / ``trace``: the extra records listed in the module docstring.
    """

    halt_max_steps: Optional[int] = None
    act_inference: Optional[bool] = None
    identifier_map: Optional[torch.Tensor] = None  # [num_puzzle_identifiers] -> identifier the model sees
    steps: bool = False
    trace: bool = False

    @classmethod
    def from_outputs(cls, names, **options) -> "RunOptions":
        """Options recording what the output ``names`` ask for (``steps``, ``trace*``)."""
        names = set(names)
        return cls(steps="steps" in names, trace=bool(names & {"trace", "trace_q_halt_logits", "trace_halt_confidence"}), **options)


def act_model(model: nn.Module) -> nn.Module:
    """The ACT model inside a (possibly compiled) loss head."""
    return unwrap_compiled(model).model  # type: ignore[return-value]


def trained_halt_max_steps(model: nn.Module) -> int:
    return int(act_model(model).config.halt_max_steps)  # type: ignore[union-attr]


def _halt_signal(model: nn.Module):
    inner = getattr(unwrap_compiled(model), "model", None)
    return getattr(inner, "halt_signal", lambda q_halt, q_continue: q_halt > q_continue)


def halt_confidence(model: nn.Module, q_halt_logits: torch.Tensor, q_continue_logits: Optional[torch.Tensor]) -> torch.Tensor:
    """float32 sigmoid of the model's halting rule (``halt_logit``: q_halt - q_continue for HRM,
    q_halt alone for TRM with ``no_ACT_continue``); q_halt alone when there is no q_continue."""
    inner = getattr(unwrap_compiled(model), "model", None)
    if q_continue_logits is None:
        return torch.sigmoid(q_halt_logits.to(torch.float32))
    rule = getattr(inner, "halt_logit", lambda q_halt, q_continue: q_halt - q_continue)
    return torch.sigmoid(rule(q_halt_logits.to(torch.float32), q_continue_logits.to(torch.float32)))


def run_segments(model: nn.Module, batch: Dict[str, torch.Tensor], return_keys: Set[str],
                 options: Optional[RunOptions] = None) -> Tuple[Any, Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """Run one batch from a fresh carry until every row halted; returns ``(carry, metrics, outputs)``.

    ``outputs`` holds the requested model outputs of the last segment plus, per ``options``,
    ``steps`` and ``halt_fired`` (whether the halt signal fired at all, ``bool [B]``) /
    ``trace`` / ``trace_q_halt_logits``. Only the final check of ``all_finish`` syncs with the
    device.
    """
    options = options or RunOptions()
    halt_max_steps = options.halt_max_steps or trained_halt_max_steps(model)
    segment_kwargs: Dict[str, Any] = {}
    if options.halt_max_steps is not None:
        segment_kwargs["halt_max_steps"] = halt_max_steps
    if options.act_inference is not None:
        segment_kwargs["act_inference"] = options.act_inference
    model_batch = batch
    if options.identifier_map is not None:
        ids = batch["puzzle_identifiers"]
        model_batch = dict(batch, puzzle_identifiers=options.identifier_map.to(ids.device)[ids.long()].to(ids.dtype))
    keys = set(return_keys) - {"halt_confidence"}
    if options.steps or options.trace or "halt_confidence" in return_keys:
        keys |= {"preds", "q_halt_logits", "q_continue_logits"}
    halt_signal = _halt_signal(model)

    carry = model.initial_carry(model_batch)  # type: ignore[operator]
    steps = halted = None
    trace, trace_q, trace_confidence = [], [], []
    segment = 0

    def one_segment():
        nonlocal carry, steps, halted, segment
        carry, _, metrics, preds, all_finish = model(carry=carry, batch=model_batch, return_keys=keys, **segment_kwargs)
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
            trace_confidence.append(halt_confidence(model, preds["q_halt_logits"], preds.get("q_continue_logits")))
        return metrics, preds, all_finish

    # Eval rows halt exactly at halt_max_steps: run that many segments, check once. A model that halts
    # adaptively in evaluation (transformers_baseline with act_inference) may finish earlier: check each segment.
    adaptive = getattr(act_model(model), "halts_adaptively", lambda act_inference=None: False)(options.act_inference)
    for _ in range(1 if adaptive else halt_max_steps):
        metrics, preds, all_finish = one_segment()
    while not bool(all_finish):
        metrics, preds, all_finish = one_segment()

    out = {k: v for k, v in preds.items() if k in return_keys}
    if options.steps:
        out["steps"] = steps
        out["halt_fired"] = halted
    if options.trace:
        out["trace"] = torch.stack(trace, dim=1)
        out["trace_q_halt_logits"] = torch.stack(trace_q, dim=1)
        out["trace_halt_confidence"] = torch.stack(trace_confidence, dim=1)
    if "halt_confidence" in return_keys:
        out["halt_confidence"] = halt_confidence(model, preds["q_halt_logits"], preds.get("q_continue_logits"))
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
