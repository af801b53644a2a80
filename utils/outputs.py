"""Saved evaluation outputs: ``step_N_all_preds.<rank>`` (a ``torch.save`` dict of tensors per rank).

Ranks hold interleaved slices of every test batch, and the last batch is padded with rows whose
labels are all ignored; :func:`load_outputs` concatenates the ranks and drops those rows.

:func:`export_npy` writes the same outputs as plain ``.npy`` files that the browser page
``puzzle_visualizer.html`` reads: ``step_N_all_preds.<rank>.<key>.npy`` next to the original,
one per key, except ``logits`` (large; ``preds`` = their argmax is written when ``preds`` was not
saved). For outputs saved without ``save_npy=true``::

    python -m utils.outputs checkpoints/<project>/<run>/step_N_all_preds.*
"""
from __future__ import annotations

import glob
import os
import re
import sys
from typing import Dict, List, Optional

import numpy as np
import torch

IGNORE_LABEL_ID = -100
_OUTPUT_NAME = re.compile(r"^step_(\d+)_all_preds\.(\d+)$")


def output_files(folder: str, step: Optional[int] = None) -> List[str]:
    """The rank files ``step_N_all_preds.<rank>`` of one step in ``folder`` (the newest step when
    ``step`` is None), in rank order; [] when there are none."""
    found = {}
    for path in glob.glob(os.path.join(folder, "step_*_all_preds.*")):
        m = _OUTPUT_NAME.match(os.path.basename(path))
        if m:
            found.setdefault(int(m.group(1)), {})[int(m.group(2))] = path
    if not found:
        return []
    ranks = found.get(max(found) if step is None else step, {})
    return [ranks[r] for r in sorted(ranks)]


def load_outputs(folder: str, step: Optional[int] = None, drop_padding: bool = True) -> Dict[str, np.ndarray]:
    """All ranks' outputs of one step as numpy arrays (rank after rank); padding rows dropped."""
    files = output_files(folder, step)
    if not files:
        raise FileNotFoundError(f"{folder}: no step_N_all_preds.<rank> files" + (f" for step {step}" if step is not None else ""))
    parts = [torch.load(f, map_location="cpu", weights_only=True) for f in files]
    keys = set(parts[0])
    for f, p in zip(files, parts):
        if set(p) != keys:
            raise ValueError(f"{f}: keys {sorted(p)} differ from {files[0]}'s {sorted(keys)}")
    out = {k: torch.cat([p[k] for p in parts]).numpy() for k in keys}
    if drop_padding and "labels" in out:
        keep = (out["labels"] != IGNORE_LABEL_ID).any(axis=-1)
        out = {k: v[keep] for k, v in out.items()}
    return out


def export_npy(path: str) -> List[str]:
    """Write ``<path>.<key>.npy`` for every saved key but ``logits`` (see module docstring)."""
    from utils.checkpoint import atomic_write

    data = torch.load(path, map_location="cpu", weights_only=True)
    if "preds" not in data and "logits" in data:
        data["preds"] = data["logits"].argmax(-1)
    written = []
    for key, value in data.items():
        if key == "logits" or not torch.is_tensor(value):
            continue
        array = value.numpy() if value.dtype != torch.bfloat16 else value.float().numpy()
        target = f"{path}.{key}.npy"
        atomic_write(target, lambda tmp, a=array: _save_npy(tmp, a))
        written.append(target)
    return written


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a temporary name
        np.save(f, array)


def main(argv=None) -> None:
    paths = list(sys.argv[1:] if argv is None else argv)
    paths = [p for p in paths if _OUTPUT_NAME.match(os.path.basename(p))]
    if not paths:
        print("usage: python -m utils.outputs <folder>/step_N_all_preds.<rank> ...", file=sys.stderr)
        sys.exit(2)
    for p in paths:
        for written in export_npy(p):
            print(written)


if __name__ == "__main__":
    main()
