"""Exponential moving average of a model's trainable parameters (used by TRM).

After each optimizer step: ``shadow = (1 - mu) * param + mu * shadow``. Evaluation and saved
checkpoints use the shadow weights when ``ema=True``.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Dict, Iterator

import torch
from torch import nn


def _unwrap(module: nn.Module) -> nn.Module:
    module = getattr(module, "module", module)  # DataParallel / DDP
    return getattr(module, "_orig_mod", module)  # torch.compile


class EMAHelper:
    def __init__(self, mu: float = 0.999):
        self.mu = mu
        self.shadow: Dict[str, torch.Tensor] = {}

    def _trainable(self, module: nn.Module):
        return [(name, p) for name, p in _unwrap(module).named_parameters() if p.requires_grad]

    def register(self, module: nn.Module) -> None:
        """Start the average at the module's current weights."""
        self.shadow = {name: p.detach().clone() for name, p in self._trainable(module)}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        params = self._trainable(module)
        shadow = [self.shadow[name] for name, _ in params]
        # lerp(shadow, p, 1 - mu) = mu * shadow + (1 - mu) * p, one fused pass per tensor list.
        torch._foreach_lerp_(shadow, [p.detach() for _, p in params], 1.0 - self.mu)

    @torch.no_grad()
    def ema(self, module: nn.Module) -> None:
        """Overwrite the module's trainable weights with the averages."""
        for name, p in self._trainable(module):
            p.copy_(self.shadow[name])

    def ema_copy(self, module: nn.Module) -> nn.Module:
        """A deep copy of ``module`` carrying the averaged weights; ``module`` is untouched."""
        module_copy = copy.deepcopy(module)
        self.ema(module_copy)
        return module_copy

    @contextlib.contextmanager
    def applied(self, module: nn.Module) -> Iterator[nn.Module]:
        """Swap the averages into ``module`` for the duration of the block, then restore its weights."""
        params = self._trainable(module)
        backup = [p.detach().clone() for _, p in params]
        self.ema(module)
        try:
            yield module
        finally:
            with torch.no_grad():
                for (_, p), saved in zip(params, backup):
                    p.copy_(saved)

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state_dict: Dict[str, torch.Tensor]) -> None:
        self.shadow = state_dict
