"""Open a trained checkpoint into a ready model: the one way in for every inference path.

:func:`open_checkpoint` reads ``all_config.yaml`` beside a ``step_N`` (or ``best``) weights file,
the run's dataset metadata (sizes, recorded task), builds the model (:func:`inference.model.build_model`)
and loads the weights through the safe loader (``utils/safe_io.load_weights``: nothing in the
file runs). A checkpoint may be ``hf://owner/name[@revision][/file]`` (``utils/hub.py``: fetched
into huggingface_hub's cache), and it stands alone: without its dataset, the copy of the metadata
its folder carries (``utils/dataset_metadata.py``) or, for ``predict.py``, the weights themselves
size the model (:func:`metadata_from_weights`). The returned :class:`OpenedCheckpoint` is what ``evaluate.py``, ``predict.py`` and
``scripts/analyze_checkpoint.py`` work with; run it with :func:`inference.segments.run_segments`.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from dataset.common import DatasetError, PuzzleDatasetMetadata, load_metadata
from inference.model import build_model
from inference.segments import act_model, check_halt_max_steps, trained_halt_max_steps
from tasks import CODECS, get_codec
from utils.compile import compile_model, should_compile
from utils.config import ConfigError, normalize_data_paths, read_run_yaml
from utils.dataset_metadata import carried_data_paths
from utils.functions import check_state_dict_fits, load_state_dict_flexible, strip_compile_prefix
from utils.hub import local_checkpoint
from utils.safe_io import load_weights

STEP_RE = re.compile(r"^step_(\d+)$")  # the original's weights file name


def step_of(path: str) -> Optional[int]:
    """N for a ``.../step_N`` weights file, else None."""
    m = STEP_RE.match(os.path.basename(path))
    return int(m.group(1)) if m else None


@dataclass
class OpenedCheckpoint:
    """A checkpoint loaded for inference (eval mode); see :func:`open_checkpoint`."""

    path: str
    run_config: Dict[str, Any]  # all_config.yaml as the run wrote it
    data_paths: List[str]  # the run's training datasets (or the folders of their carried metadata)
    metadata: PuzzleDatasetMetadata  # their train split (identifier counts merged), which sized the model
    task: Optional[str]  # the task dataset.json records (None for datasets of the original code)
    model: nn.Module  # the loss head (possibly compiled)
    device: torch.device
    batch_size: int
    sized_by: str = "dataset"  # what sized the model: "dataset", "carried" (metadata in the folder) or "weights"

    @property
    def step(self) -> int:
        """N of a ``step_N`` file (0 for other names, e.g. ``best``)."""
        return step_of(self.path) or 0

    @property
    def act_model(self) -> nn.Module:
        return act_model(self.model)

    @property
    def halt_max_steps(self) -> int:
        """The trained number of ACT segments (the default at test time)."""
        return trained_halt_max_steps(self.model)

    @property
    def folder(self) -> str:
        return os.path.dirname(os.path.abspath(self.path))


def read_run_config(checkpoint: str) -> Dict[str, Any]:
    """The training run's config (``all_config.yaml`` beside ``checkpoint``) as a dict."""
    if not os.path.isfile(checkpoint):
        raise ConfigError(f"checkpoint={checkpoint}: no such file (expected a step_N file of a run's checkpoint folder)")
    config_path = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "all_config.yaml")
    if not os.path.isfile(config_path):
        raise ConfigError(f"checkpoint={checkpoint}: no all_config.yaml next to it ({config_path}); "
                          "it holds the run's config, needed to rebuild the model")
    raw = read_run_yaml(config_path, "; it holds the run's config, needed to rebuild the model")
    if "arch" not in raw or not (raw.get("data_paths") or raw.get("data_path")):
        raise ConfigError(f"{config_path}: has no data_path(s) or arch; not a training run's config")
    return raw


def run_data_paths(run_config: Dict[str, Any]) -> List[str]:
    return normalize_data_paths(run_config.get("data_path"), run_config.get("data_paths"))


def dataset_metadata(data_paths: Sequence[str], split: str = "train") -> Tuple[PuzzleDatasetMetadata, Optional[str]]:
    """(``split`` metadata merged over the run's datasets as the loader merges identifier tables,
    the task recorded in dataset.json or None)."""
    metas = []
    for path in data_paths:
        try:
            metas.append(load_metadata(os.path.join(path, split)))
        except DatasetError as e:
            raise DatasetError(f"{e} (the checkpoint's dataset metadata: sizes, task, puzzle names)") from None
    meta = metas[0]
    task = next((m.task for m in metas if m.task is not None), None)
    if len(metas) > 1:  # identifier tables add up, as PuzzleDataset merges them
        meta = meta.model_copy(update={"num_puzzle_identifiers": sum(m.num_puzzle_identifiers for m in metas)})
    return meta, task


def pick_device(device: Optional[str] = None) -> torch.device:
    """``device`` (e.g. cpu, cuda:1), by default the GPU when there is one."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device={device}: not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device}: no CUDA GPU is available here")
    return dev


def dataset_missing_error(run_config: Dict[str, Any], missing: str, needs: str) -> DatasetError:
    """The run's dataset is not at its recorded path: one line naming the override to give."""
    option = "data_path=<the dataset folder>" if run_config.get("data_path") or len(run_data_paths(run_config)) == 1 \
        else "data_paths=[<folder>,...] (one per dataset of the run)"
    return DatasetError(f"{os.path.join(missing, 'train', 'dataset.json')}: missing: the run's dataset is not at the path "
                        f"all_config.yaml records; {needs} give {option}")


def metadata_from_weights(state_dict: Dict[str, torch.Tensor], task: str, seq_len: Optional[int]) -> PuzzleDatasetMetadata:
    """The sizes of a checkpoint whose dataset is not at hand: vocabulary from the token embedding,
    puzzle identifiers from the puzzle embedding, sequence length from ``seq_len`` or the task
    (``TaskCodec.standalone_seq_len``); PAD, ignored label and blank identifier 0, as every builder writes them."""
    weights = strip_compile_prefix(state_dict)
    tokens = weights.get("model.inner.embed_tokens.embedding_weight")
    if tokens is None:
        raise ConfigError("checkpoint: the weights hold no token embedding (model.inner.embed_tokens.embedding_weight); "
                          "without its dataset the model cannot be sized: give data_path=<the dataset folder>")
    vocab_size = int(tokens.shape[0])
    puzzle_emb = weights.get("model.inner.puzzle_emb.weights")
    if seq_len is None:
        seq_len = get_codec(task).standalone_seq_len(vocab_size)
        if seq_len is None:
            raise ConfigError(f"task={task}: the sequence length of this checkpoint cannot be told without its dataset; give seq_len=N")
    return PuzzleDatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=vocab_size, seq_len=seq_len,
                                 num_puzzle_identifiers=int(puzzle_emb.shape[0]) if puzzle_emb is not None else 1,
                                 total_groups=0, mean_puzzle_examples=0.0, sets=[], task=task)


def model_metadata(path: str, run_config: Dict[str, Any], state_dict: Dict[str, torch.Tensor],
                   data_paths: Optional[Sequence[str]] = None, standalone: bool = False, task: Optional[str] = None,
                   seq_len: Optional[int] = None) -> Tuple[List[str], PuzzleDatasetMetadata, Optional[str], str]:
    """``(data paths, train metadata, recorded task, sized_by)`` of the checkpoint ``path``: the
    metadata of ``data_paths``, else of the run's datasets at their recorded paths, else of the
    copy its folder carries, else (``standalone``) of the weights with ``task`` and ``seq_len``."""
    if data_paths:
        return list(data_paths), *dataset_metadata(data_paths), "dataset"
    recorded = run_data_paths(run_config)
    missing = [p for p in recorded if not os.path.isfile(os.path.join(p, "train", "dataset.json"))]
    if not missing:
        return recorded, *dataset_metadata(recorded), "dataset"
    carried = carried_data_paths(os.path.dirname(os.path.abspath(path)), len(recorded))
    if carried:
        return carried, *dataset_metadata(carried), "carried"
    if not standalone:
        raise dataset_missing_error(run_config, missing[0], "the checkpoint carries no copy of its metadata (dataset/):")
    if task is None:
        raise ConfigError(f"{os.path.join(missing[0], 'train', 'dataset.json')}: missing, and the checkpoint carries no copy of "
                          f"its dataset's metadata: say which task it solves with task={'|'.join(sorted(CODECS))} (its sizes "
                          "then come from the weights), or give data_path=<the dataset folder>")
    return recorded, metadata_from_weights(state_dict, task, seq_len), None, "weights"


# The recurrence counts of a segment (HRM's and TRM's cycles, URM's inner loops) that a checkpoint's
# config may set: far above any published setting (at most 16), far below a segment that never ends.
RECURRENCE_KEYS = ("H_cycles", "L_cycles")
MAX_RECURRENCE = 256


def check_config_against_weights(path: str, run_config: Dict[str, Any], metadata: PuzzleDatasetMetadata, batch_size: int,
                                  state_dict: Dict[str, torch.Tensor]) -> None:
    """Before anything is allocated: the ``all_config.yaml`` beside ``path`` asks for a test-time
    budget within bounds (``halt_max_steps``, the cycles of a segment) and for a model whose weights have the shapes the file holds. The model
    is first built on the meta device (shapes only, no memory), so a config saying
    ``hidden_size: 1e9`` is one line instead of gigabytes allocated."""
    config_path = os.path.join(os.path.dirname(os.path.abspath(path)), "all_config.yaml")
    arch = run_config["arch"]
    if not isinstance(arch, dict):
        raise ConfigError(f"{config_path}: arch is not a mapping of settings")
    for key in ("halt_max_steps", "loops"):  # URM calls its ACT segments loops
        halt = arch.get(key)
        if halt is None:
            continue
        if not isinstance(halt, int) or isinstance(halt, bool):
            raise ConfigError(f"{config_path}: arch.{key}={halt!r}: expected a whole number of ACT segments")
        try:
            check_halt_max_steps(halt, f"arch.{key}")
        except ValueError as e:
            raise ConfigError(f"{config_path}: {e}") from None
    for key in RECURRENCE_KEYS:  # not in the weights: a huge value would run a segment for ever
        value = arch.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_RECURRENCE):
            raise ConfigError(f"{config_path}: arch.{key}={value!r}: expected a whole number from 1 to {MAX_RECURRENCE}")
    try:
        with torch.random.fork_rng(devices=[]):  # building draws initial weights: the global RNG stays as it was
            shapes = build_model(arch, metadata, batch_size, "meta").state_dict()
        check_state_dict_fits(shapes, strip_compile_prefix(state_dict), f"checkpoint={path}")
    except ConfigError as e:
        raise ConfigError(f"{config_path}: {e}") from None
    except ValueError as e:
        raise ConfigError(f"{e} (the sizes come from {config_path} and the dataset metadata)") from None
    except (RuntimeError, OverflowError, MemoryError) as e:
        detail = " ".join(str(e).split())[:120]
        raise ConfigError(f"{config_path}: the model it describes cannot be built ({detail}); "
                          "its arch sizes do not match this checkpoint's weights") from None


def open_checkpoint(path: str, device=None, batch_size: Optional[int] = None, data_paths: Optional[Sequence[str]] = None,
                    compile: Any = False, standalone: bool = False, task: Optional[str] = None,
                    seq_len: Optional[int] = None) -> OpenedCheckpoint:
    """Load ``path`` (a run's weights file) into a ready model in eval mode.

    ``batch_size``: rows per forward pass (default: the run's ``global_batch_size``);
    ``data_paths``: datasets that size the model instead of the run's (same shapes);
    ``compile``: a ``compile`` setting (``auto``: on CUDA) for a model that only evaluates;
    ``standalone``: without any dataset metadata, size the model from its weights for ``task``
    (``seq_len`` where the task does not fix it); see :func:`model_metadata`.
    ``path`` may be an ``hf://`` URI; :attr:`OpenedCheckpoint.path` is then the cached file.
    Bad input (no such file, a file that is not a checkpoint, weights of another model) is one
    :class:`ConfigError` / ``CheckpointError`` / ``DatasetError`` line.
    """
    path = local_checkpoint(path)
    run_config = read_run_config(path)
    device = pick_device(device) if device is None or isinstance(device, str) else torch.device(device)
    # Read (safely) before building anything: a file that is not a checkpoint stops here.
    state_dict = load_weights(path, "checkpoint", map_location=device)
    paths, metadata, recorded_task, sized_by = model_metadata(path, run_config, state_dict, data_paths, standalone, task, seq_len)
    batch_size = batch_size or int(run_config.get("global_batch_size", 1))
    check_config_against_weights(path, run_config, metadata, batch_size, state_dict)
    model = build_model(run_config["arch"], metadata, batch_size, device)
    try:
        load_state_dict_flexible(model, state_dict, source=f"checkpoint={path}")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    model.eval()
    if compile is not False and should_compile(compile, device, None):
        model = compile_model(model)
    return OpenedCheckpoint(path=path, run_config=run_config, data_paths=paths, metadata=metadata, task=recorded_task, model=model,
                            device=device, batch_size=batch_size, sized_by=sized_by)
