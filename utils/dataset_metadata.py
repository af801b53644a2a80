"""The dataset metadata a checkpoint folder carries, so that a copied folder answers puzzles anywhere.

``predict.py`` sizes the model and reads puzzles with the metadata of the run's datasets: each
split's ``dataset.json`` (sizes, task) and ``identifiers.json`` (ARC: the trained puzzle names).
A checkpoint folder (or a Hub repository) keeps copies of them under ``dataset/`` (one dataset)
or ``dataset/<i>/`` (the i-th of ``data_paths``), in the dataset's own layout::

    dataset/train/dataset.json  dataset/test/dataset.json  dataset/identifiers.json
"""
from __future__ import annotations

import os
from typing import Dict, List, Sequence

DATASET_METADATA_DIR = "dataset"
IDENTIFIERS_FILE = "identifiers.json"


def metadata_dirs(num_datasets: int) -> List[str]:
    """Folders, relative to a checkpoint folder, holding the metadata of a run's datasets (in order)."""
    if num_datasets == 1:
        return [DATASET_METADATA_DIR]
    return [f"{DATASET_METADATA_DIR}/{i}" for i in range(num_datasets)]


def metadata_files(data_paths: Sequence[str]) -> Dict[str, str]:
    """``{path inside a checkpoint folder: source file}`` for the metadata present in ``data_paths``."""
    files: Dict[str, str] = {}
    for rel, path in zip(metadata_dirs(len(data_paths)), data_paths):
        if not os.path.isdir(path):
            continue
        for split in sorted(os.listdir(path)):
            src = os.path.join(path, split, "dataset.json")
            if os.path.isfile(src):
                files[f"{rel}/{split}/dataset.json"] = src
        if os.path.isfile(os.path.join(path, IDENTIFIERS_FILE)):
            files[f"{rel}/{IDENTIFIERS_FILE}"] = os.path.join(path, IDENTIFIERS_FILE)
    return files


def carried_data_paths(folder: str, num_datasets: int) -> List[str]:
    """The carried metadata folders of a checkpoint folder, usable in place of the run's ``data_paths``;
    empty when the folder carries none (older runs, the original releases)."""
    dirs = [os.path.join(folder, d) for d in metadata_dirs(num_datasets)]
    return dirs if all(os.path.isfile(os.path.join(d, "train", "dataset.json")) for d in dirs) else []

