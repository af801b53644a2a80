"""Saved evaluation outputs: ``step_N_all_preds.<rank>`` (a ``torch.save`` dict of tensors per rank).

Ranks hold interleaved slices of every test batch: rank r the rows ``[r * local, (r + 1) * local)``
of each global batch. The padding rows that fill the last batch are not saved (files written
before they were dropped hold them, with all labels ignored: :func:`load_outputs` drops those).
:func:`load_outputs` concatenates the ranks; :func:`join_ranks` puts the rows back in the order
of the split and takes the fields a file lacks (``inputs``, ``labels``, ...) from the split, so
that a file of ``preds`` alone can be read (``puzzle_dataset.test_pass_rows`` gives the order).

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
from typing import Any, Dict, List, Optional

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


def _load_output_file(path: str) -> Dict[str, Any]:
    """One ``step_N_all_preds.<rank>`` file through the safe loader: a file that is not one is a
    ``CheckpointError`` line, and a crafted pickle runs nothing."""
    from utils.safe_io import CheckpointError, safe_load

    data = safe_load(path, "outputs")
    if not isinstance(data, dict):
        raise CheckpointError(f"outputs={path}: not a step_N_all_preds file (got {type(data).__name__})")
    return data


def load_outputs(folder: str, step: Optional[int] = None, drop_padding: bool = True) -> Dict[str, np.ndarray]:
    """All ranks' outputs of one step as numpy arrays (rank after rank); padding rows dropped."""
    files = output_files(folder, step)
    if not files:
        raise FileNotFoundError(f"{folder}: no step_N_all_preds.<rank> files" + (f" for step {step}" if step is not None else ""))
    parts = [_load_output_file(f) for f in files]
    keys = set(parts[0])
    for f, p in zip(files, parts):
        if set(p) != keys:
            raise ValueError(f"{f}: keys {sorted(p)} differ from {files[0]}'s {sorted(keys)}")
    out = {k: torch.cat([p[k] for p in parts]).numpy() for k in keys}
    if drop_padding and "labels" in out:
        keep = (out["labels"] != IGNORE_LABEL_ID).any(axis=-1)
        out = {k: v[keep] for k, v in out.items()}
    return out


def load_rank_files(files: List[str]) -> List[Dict[str, np.ndarray]]:
    """Every rank file as ``{key: array}`` (bfloat16 as float32)."""
    parts = []
    for f in files:
        data = _load_output_file(f)
        parts.append({k: (v.float() if v.dtype == torch.bfloat16 else v).numpy() for k, v in data.items() if torch.is_tensor(v)})
    return parts


def join_ranks(parts: List[Dict[str, np.ndarray]], positions: List[np.ndarray], examples: Dict[str, np.ndarray],
               names: Optional[List[str]] = None) -> Dict[str, np.ndarray]:
    """The rank files' rows in split order, with the split's ``examples`` fields they did not save.

    ``positions[r]`` are the places of rank r's rows among the ``examples`` walked (see
    ``puzzle_dataset.test_pass_rows``); a file whose row count differs is not an output of that
    pass (another split, batch size or number of processes, or a file saved with its padding rows)
    and raises ValueError naming it (``names``, default ``rank <r>``)."""
    if len(parts) != len(positions):
        raise ValueError(f"{len(parts)} rank files, but the pass was split over {len(positions)} processes")
    total = len(next(iter(examples.values()))) if examples else 0
    used = sum(len(p) for p in positions)
    out: Dict[str, np.ndarray] = {}
    for r, (part, where) in enumerate(zip(parts, positions)):
        name = names[r] if names else f"rank {r}"
        for key, value in part.items():
            if len(value) != len(where):
                raise ValueError(f"{name}: {len(value)} rows of '{key}', but rank {r} of this pass evaluated {len(where)} "
                                 f"of its {total} examples: saved from another split, batch size or number of processes, "
                                 "or with its padding rows")
            if key not in out:
                out[key] = np.zeros((used,) + value.shape[1:], dtype=value.dtype)
            out[key][where] = value
    for key, value in examples.items():
        out.setdefault(key, value[:used])
    return out


def export_npy(path: str) -> List[str]:
    """Write ``<path>.<key>.npy`` for every saved key but ``logits`` (see module docstring)."""
    from utils.safe_io import atomic_write

    data = _load_output_file(path)
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
