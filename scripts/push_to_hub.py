"""Publish a checkpoint on the Hugging Face Hub, or write the folder that would be published.

    python scripts/push_to_hub.py checkpoint=checkpoints/<project>/<run>/step_N repo_id=<owner>/<name>
    python scripts/push_to_hub.py checkpoint=.../step_N repo_id=me/hrm-sudoku private=true
    python scripts/push_to_hub.py checkpoint=.../step_N repo_id=me/hrm-sudoku local_dir=release/  # writes only

One repository (one commit: an interrupted upload leaves nothing behind) holds:

- ``all_config.yaml``: the run's config, as training wrote it; ``config.json``: the same as JSON
  (the file name huggingface_hub's ``PyTorchModelHubMixin`` uses, and by which the Hub counts downloads);
- ``checkpoint``: the weights in the original releases' layout (``torch.save``, keys prefixed
  ``_orig_mod.``), loadable by the original ``evaluate.py``;
- ``model.safetensors``: the same tensors, without the prefix (the Hub's weights file);
- ``dataset/``: the datasets' metadata (each split's ``dataset.json``, ``identifiers.json``), so
  ``predict.py checkpoint=hf://<owner>/<name>`` needs no dataset; ``eval_metrics.jsonl`` when the run logged one;
- ``README.md``: a model card: YAML front matter (``library_name``, ``tags``, ``datasets``,
  ``metrics`` and the checkpoint's evaluation as ``model-index``) and how to train, evaluate and use it.

Options: ``private=true`` (a new repository is private), ``local_dir=<folder>`` (write the
folder, upload nothing), ``data_path=`` / ``data_paths=`` (where the dataset is, when not at the
recorded path), ``task=`` (for datasets that do not record it), ``dataset=<hub dataset id>`` (the
card's dataset), ``license=``, ``commit_message=``. Uploading needs a token (``hf auth login`` or
``HF_TOKEN``) and network; without them it stops before writing anything, in one line.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
from typing import Any, Dict, List, Optional, Sequence

import pydantic
import torch
import yaml

from inference.checkpoint import step_of
from utils import dataset_metadata
from utils.cli import run_config_cli
from utils.config import ConfigError, normalize_data_paths
from utils.functions import COMPILE_PREFIX, strip_compile_prefix
from utils.hub import RELEASE_WEIGHTS, SAFETENSORS_WEIGHTS, parse_hub_uri
from utils.paths import check_output_folder, make_folder, remove_if_empty
from utils.safe_io import is_disk_full, load_weights

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBRARY_NAME = "hrm-trm"  # this project's package name (pyproject.toml)
PAPERS = {
    "HRM": ("Hierarchical Reasoning Model", "https://arxiv.org/abs/2506.21734"),
    "TRM": ("Less is More: Recursive Reasoning with Tiny Networks", "https://arxiv.org/abs/2510.04871"),
    "URM": ("Universal Reasoning Model", "https://arxiv.org/abs/2512.14693"),
}
# Model family of an arch (its ``name``'s module): (family, what the card calls it, tag, papers cited).
FAMILIES = {
    "hrm.": ("HRM", "Hierarchical Reasoning Model", "hierarchical-reasoning-model", ("HRM",)),
    "recursive_reasoning.hrm@": ("HRM", "Hierarchical Reasoning Model", "hierarchical-reasoning-model", ("HRM",)),
    "recursive_reasoning.transformers_baseline@": ("TRM", "Transformer baseline of the TRM paper", "tiny-recursive-model", ("TRM",)),
    "recursive_reasoning.": ("TRM", "Tiny Recursive Model", "tiny-recursive-model", ("TRM", "HRM")),
    "urm.": ("URM", "Universal Reasoning Model", "universal-reasoning-model", ("URM",)),
}
# Hub datasets the builders read by default (dataset/build_*_dataset.py --source-repo).
KNOWN_SOURCES = {"sudoku-extreme": "sapientinc/sudoku-extreme", "maze-30x30-hard": "sapientinc/maze-30x30-hard-1k"}
# Keys of a run's config that name the run, not what it learned: left out of the training command.
NOT_IN_COMMAND = {"checkpoint_path", "project_name", "run_name", "resume", "wandb_group", "data_paths"}
EXAMPLE_PUZZLES = {
    "sudoku": 'puzzle="..3.2.6..9..3.5..1..18.64....81.29..7.......8..67.82....26.95..8..2.3..9..5.1.3.."',
    "maze": "puzzle_file=mazes.txt",
    "arc": "puzzle_file=my_task.json",
    "domino": 'puzzle="table: [0|3][3|4][4|0] hand: [0|6] [3|6]"',
}


class PushConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    checkpoint: str
    repo_id: str
    private: bool = False
    local_dir: Optional[str] = None
    data_path: Optional[str] = None
    data_paths: Optional[List[str]] = None
    task: Optional[str] = None
    dataset: Optional[str] = None
    license: Optional[str] = None
    commit_message: Optional[str] = None


# ---------------------------------------------------------------------------------------------
# Reading the checkpoint


def read_checkpoint(cfg: PushConfig) -> Dict[str, Any]:
    """Weights (without the compile prefix), run config, dataset metadata files and metrics of ``cfg.checkpoint``."""
    path = cfg.checkpoint
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if step_of(n) is not None or n in ("best", RELEASE_WEIGHTS))
        raise ConfigError(f"checkpoint={path}: a folder; give its weights file ({', '.join(names[-4:]) or 'e.g. step_N'})")
    if not os.path.isfile(path):
        raise ConfigError(f"checkpoint={path}: no such file (expected <run folder>/step_N)")
    folder = os.path.dirname(os.path.abspath(path))
    config_path = os.path.join(folder, "all_config.yaml")
    if not os.path.isfile(config_path):
        raise ConfigError(f"checkpoint={path}: no all_config.yaml beside it; the repository must hold the run's config")
    with open(config_path) as f:
        config_text = f.read()
    config = yaml.safe_load(config_text)
    if not isinstance(config, dict) or "arch" not in config:
        raise ConfigError(f"{config_path}: not a training run's config (no arch)")
    weights = strip_compile_prefix(load_weights(path, "checkpoint"))

    recorded = normalize_data_paths(config.get("data_path"), config.get("data_paths"))
    given = normalize_data_paths(cfg.data_path, cfg.data_paths) if (cfg.data_path or cfg.data_paths) else None
    data_paths = given or recorded
    if given is not None and len(given) != len(recorded):
        raise ConfigError(f"data_path(s)={given}: the run trained on {len(recorded)} dataset(s) ({recorded}); give as many")
    files = dataset_metadata.metadata_files(data_paths)
    carried = dataset_metadata.carried_data_paths(folder, len(recorded))
    if not any(rel.endswith("train/dataset.json") for rel in files) and carried and given is None:
        files = dataset_metadata.metadata_files(carried)  # a folder that carries its metadata
    missing = [p for rel, p in zip(dataset_metadata.metadata_dirs(len(data_paths)), data_paths) if f"{rel}/train/dataset.json" not in files]
    if missing:
        raise ConfigError(f"{os.path.join(missing[0], 'train', 'dataset.json')}: missing; the repository carries the dataset's "
                          "metadata: give data_path=<the dataset folder> (data_paths=[...] for several)")

    step = step_of(path)
    best_info = os.path.join(folder, "best.json")
    if step is None and os.path.basename(path) == "best" and os.path.isfile(best_info):
        with open(best_info) as f:
            step = json.load(f).get("step")
    metrics_path = os.path.join(folder, "eval_metrics.jsonl")
    metrics = metrics_of_step(metrics_path, step)
    with open(files[f"{dataset_metadata.metadata_dirs(len(data_paths))[0]}/train/dataset.json"]) as f:
        train_meta = json.load(f)
    recorded_task = train_meta.get("task")
    if cfg.task is not None and recorded_task is not None and cfg.task != recorded_task:
        raise ConfigError(f"task={cfg.task}: the dataset records task {recorded_task}")
    return dict(weights=weights, config=config, config_text=config_text, metadata_files=files, step=step, metrics=metrics,
                metrics_path=metrics_path if os.path.isfile(metrics_path) else None,
                task=cfg.task or recorded_task or guess_task(recorded), data_paths=recorded, seq_len=train_meta.get("seq_len"))


def metrics_of_step(path: str, step: Optional[int]) -> Dict[str, float]:
    """Flat metrics (``all/exact_accuracy``, ``ARC/pass@2``, ...) logged at ``step`` in ``eval_metrics.jsonl``; {} when none."""
    if step is None or not os.path.isfile(path):
        return {}
    found: Dict[str, Any] = {}
    with open(path) as f:
        for line in f:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut off by a killed run
            if isinstance(entry, dict) and entry.get("step") == step:
                found = entry  # the last evaluation at that step (a resumed run may log it again)
    flat: Dict[str, float] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}/{k}" if prefix else str(k), v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[prefix] = float(value)

    walk("", {k: v for k, v in found.items() if k != "step"})
    return flat


def guess_task(data_paths: Sequence[str]) -> Optional[str]:
    """The task of a dataset that does not record it (original builders), from its folder name."""
    name = os.path.basename(os.path.normpath(data_paths[0])).lower() if data_paths else ""
    for task in ("sudoku", "maze", "arc", "domino"):
        if task in name:
            return task
    return None


# ---------------------------------------------------------------------------------------------
# The model card


def training_command(config: Dict[str, Any]) -> str:
    """``python pretrain.py ...`` with the keys where the run differs from the defaults of its arch."""
    from omegaconf import OmegaConf

    defaults = OmegaConf.load(os.path.join(REPO_ROOT, "config", "cfg_pretrain.yaml"))
    base = {k: v for k, v in OmegaConf.to_container(defaults).items() if k not in ("defaults", "hydra")}  # type: ignore[union-attr]
    arch_name, arch_defaults = _arch_defaults(config["arch"])
    args = [f"arch={arch_name}"] if arch_name and arch_name != "hrm_v1" else []
    for key, value in config.items():
        if key in NOT_IN_COMMAND or key == "arch" or (key == "data_path" and value is None):
            continue
        if key not in base:
            if value is not None:
                args.append(f"+{key}={_override_value(value)}")
        elif value != base[key] and not (isinstance(value, list) and not value and base[key] is None):
            args.append(f"{key}={_override_value(value)}")
    if config.get("data_path") is None and config.get("data_paths"):
        args.append(f"data_paths={_override_value(config['data_paths'])}")
    for key, value in config["arch"].items():
        if key not in arch_defaults:
            args.append(f"+arch.{key}={_override_value(value)}")
        elif value != arch_defaults[key]:
            args.append(f"arch.{key}={_override_value(value)}")
    return " ".join(["python pretrain.py"] + [shlex.quote(a) for a in args])


def _arch_defaults(arch: Dict[str, Any]):
    """(name, resolved config) of the ``config/arch/*.yaml`` closest to ``arch`` (same model, fewest differences)."""
    from omegaconf import OmegaConf

    best = (None, {}, None)
    folder = os.path.join(REPO_ROOT, "config", "arch")
    for file in sorted(os.listdir(folder)):
        if not file.endswith(".yaml"):
            continue
        defaults = OmegaConf.load(os.path.join(folder, file))
        if defaults.get("name") != arch.get("name"):
            continue
        # A default that follows another key (puzzle_emb_ndim: ${.hidden_size}) follows the run's value of it.
        follows = {k for k in defaults if OmegaConf.is_interpolation(defaults, k)}
        with_run = OmegaConf.merge(defaults, {k: v for k, v in arch.items() if k in defaults and k not in follows})
        plain, followed = OmegaConf.to_container(defaults, resolve=True), OmegaConf.to_container(with_run, resolve=True)
        values = {k: (followed[k] if k in follows else v) for k, v in plain.items()}  # type: ignore[union-attr,index]
        differences = sum(values.get(k) != v for k, v in arch.items()) + sum(k not in arch for k in values)
        if best[2] is None or differences < best[2]:
            best = (file[:-len(".yaml")], values, differences)
    return best[0], best[1]


def _override_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_override_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_override_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def model_family(arch_name: str):
    """(family, name, tag, papers) of an arch name such as ``urm.urm@URM``; an unknown module counts as HRM."""
    return next((v for prefix, v in FAMILIES.items() if arch_name.startswith(prefix)), FAMILIES["hrm."])


def model_card(repo_id: str, info: Dict[str, Any], dataset: Optional[str] = None, license: Optional[str] = None) -> str:
    """``README.md`` of the repository: YAML front matter (huggingface_hub's ``ModelCardData`` fields) + Markdown."""
    from huggingface_hub import EvalResult, ModelCardData

    config, task, metrics, step = info["config"], info["task"], info["metrics"], info["step"]
    arch_name = str(config["arch"]["name"])
    family, description, long_name, papers = model_family(arch_name)
    data_name = os.path.basename(os.path.normpath(info["data_paths"][0])) if info["data_paths"] else "dataset"
    dataset = dataset or next((hub for key, hub in KNOWN_SOURCES.items() if key in data_name), None)
    uri = f"hf://{repo_id}"
    params = sum(t.numel() for t in info["weights"].values())
    # model-index holds evaluation results only: the training averages logged beside them stay out.
    scores = {name: value for name, value in metrics.items()
              if not name.startswith("train/") and (name.endswith("accuracy") or "pass@" in name)}
    eval_results = [EvalResult(task_type=task or "puzzle-solving", task_name=f"{task or 'puzzle'} solving",
                               dataset_type=dataset or data_name, dataset_name=data_name, dataset_split="test",
                               metric_type=name.split("/")[-1], metric_name=name, metric_value=round(value, 6))
                    for name, value in scores.items()]
    card_data = ModelCardData(library_name=LIBRARY_NAME, license=license, model_name=repo_id.split("/")[-1],
                              tags=[family.lower(), long_name, "reasoning", *([task] if task else []), "pytorch"],
                              datasets=[dataset] if dataset else None, metrics=sorted({r.metric_type for r in eval_results}) or None,
                              eval_results=eval_results or None)

    task_arg = f" task={task}" if task else ""
    puzzle = EXAMPLE_PUZZLES.get(task or "", "puzzle_file=puzzles.txt")
    if task == "sudoku" and info["seq_len"] != 81:  # the example is a 9x9 grid
        puzzle = "puzzle_file=puzzles.txt"
    lines = [
        "---", card_data.to_yaml(), "---", "",
        f"# {repo_id.split('/')[-1]}", "",
        f"A {description} ({family}, `{arch_name}`, {params / 1e6:.1f}M parameters) "
        f"trained on `{data_name}`{f' ({task} puzzles)' if task else ''}" + (f", step {step}." if step is not None else "."),
        "",
    ]
    if metrics:
        lines += [f"## Evaluation (test split, step {step})", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {name} | {value:.4f} |" for name, value in metrics.items() if not name.startswith(("eval/", "train/"))]
        lines += [""]
    lines += [
        "## Use", "",
        f"With this project's code (`{LIBRARY_NAME}`: the original HRM/TRM command lines, installed in one command, on CPU or GPU):", "",
        "```bash",
        f"python predict.py checkpoint={uri}{task_arg} {puzzle}",
        f"python evaluate.py checkpoint={uri} data_path=data/{data_name}",
        "```", "",
        "`predict.py` needs no dataset: the repository carries the dataset metadata. `evaluate.py` needs the "
        f"dataset `{data_name}` built by the project's builder (`data_path=` where it is). The files:", "",
        "- `all_config.yaml` (the run's config; `config.json` is the same as JSON),",
        f"- `{RELEASE_WEIGHTS}`: the weights in the original releases' layout (`torch.save`, keys prefixed `{COMPILE_PREFIX}`), "
        "loadable by the original `evaluate.py`,",
        f"- `{SAFETENSORS_WEIGHTS}`: the same tensors (keys without the prefix),",
        "- `dataset/`: each split's `dataset.json` and `identifiers.json` of the training data.", "",
        "## Training", "",
        "```bash", training_command(config), "```", "",
        "## Papers", "",
    ]
    for key in papers:
        lines.append(f"- {PAPERS[key][0]}: {PAPERS[key][1]}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Writing and uploading


def write_repo_folder(folder: str, info: Dict[str, Any], card: str) -> List[str]:
    """Every file of the repository into ``folder`` (which exists and is empty); returns their paths."""
    mode = 0o666 & ~_umask()

    def put(rel: str, write) -> None:
        dst = os.path.join(folder, *rel.split("/"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        write(dst)
        os.chmod(dst, mode)  # one mode for every file (safetensors writes its file owner-only)
        written.append(rel)

    written: List[str] = []
    weights = {k: v.detach().cpu().contiguous() for k, v in info["weights"].items()}
    put("all_config.yaml", lambda p: _write_text(p, info["config_text"]))
    put("config.json", lambda p: _write_text(p, json.dumps(info["config"], indent=2) + "\n"))
    put(RELEASE_WEIGHTS, lambda p: torch.save({COMPILE_PREFIX + k: v for k, v in weights.items()}, p))
    put(SAFETENSORS_WEIGHTS, lambda p: _save_safetensors(weights, p))
    for rel, src in info["metadata_files"].items():
        put(rel, lambda p, src=src: shutil.copyfile(src, p))
    if info["metrics_path"]:
        put("eval_metrics.jsonl", lambda p: shutil.copyfile(info["metrics_path"], p))
    put("README.md", lambda p: _write_text(p, card))
    return written


def _write_text(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _save_safetensors(weights: Dict[str, torch.Tensor], path: str) -> None:
    from safetensors.torch import save_file

    # Tensors sharing memory cannot be written twice by safetensors; copies keep every key.
    seen, own = set(), {}
    for k, v in weights.items():
        ptr = v.untyped_storage().data_ptr() if v.numel() else None
        own[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    save_file(own, path, metadata={"format": "pt"})


def check_local_dir(local_dir: str) -> None:
    """``local_dir`` can become the repository folder: a new path, or an empty folder (not a
    link, not the current folder), in a folder that can be written. Checked before any work."""
    real = os.path.abspath(local_dir)
    if os.path.islink(local_dir):
        raise ConfigError(f"local_dir={local_dir}: a symbolic link; give the path of a new folder")
    if os.path.exists(local_dir) and (not os.path.isdir(local_dir) or os.listdir(local_dir)):
        raise ConfigError(f"local_dir={local_dir}: exists and is not an empty folder; choose a new one")
    cwd, target = os.path.realpath(os.getcwd()), os.path.realpath(real)
    if cwd == target or cwd.startswith(target.rstrip(os.sep) + os.sep):
        raise ConfigError(f"local_dir={local_dir}: the current folder or one above it; give the path of a new folder")
    if os.path.ismount(real):
        raise ConfigError(f"local_dir={local_dir}: a mount point, which cannot be replaced; give a new folder inside it")
    try:
        check_output_folder(os.path.dirname(real), "local_dir")
    except ValueError as e:
        raise ConfigError(str(e).replace(f"local_dir={os.path.dirname(real)}", f"local_dir={local_dir}", 1)) from None


def write_local_dir(local_dir: str, info: Dict[str, Any], card: str) -> List[str]:
    """The repository as a folder, made under a temporary name and renamed into place; a failure
    (a full disk) is one line and leaves nothing behind."""
    check_local_dir(local_dir)
    parent = os.path.dirname(os.path.abspath(local_dir))
    made, tmp = "", None
    try:
        made = make_folder(parent)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(local_dir))}.", dir=parent)
        written = write_repo_folder(tmp, info, card)
        os.chmod(tmp, 0o777 & ~_umask())
        if os.path.isdir(local_dir):
            os.rmdir(local_dir)
        os.replace(tmp, local_dir)
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError
        if not isinstance(e, OSError) and not is_disk_full(e, parent, 0):
            raise
        reason = "No space left on device" if is_disk_full(e, parent, 0) else (e.strerror or str(e))
        cause: Optional[BaseException] = e
        while cause is not None:  # the tracebacks hold the failed writer's open file: dropped, the space is freed now
            cause.__traceback__, cause = None, cause.__context__
        raise ConfigError(f"local_dir={local_dir}: cannot write the folder ({reason}); nothing was written") from None
    finally:
        if tmp is not None and os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.isdir(local_dir):
            remove_if_empty(parent, made)
    return written


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_can_upload(repo_id: str) -> None:
    """Offline or without a token, say so before anything is written or sent."""
    from huggingface_hub import constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise ConfigError(f"repo_id={repo_id}: HF_HUB_OFFLINE=1 forbids uploading; unset it, or write the folder only with local_dir=<folder>")
    if get_token() is None:
        raise ConfigError(f"repo_id={repo_id}: no Hugging Face token; run `hf auth login` or set HF_TOKEN (a token with write "
                          "access), or write the folder only with local_dir=<folder>")


def upload(cfg: PushConfig, info: Dict[str, Any], card: str) -> str:
    """Create the repository if needed and upload everything in one commit; returns the repository's URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    message = cfg.commit_message or f"Upload {os.path.basename(cfg.checkpoint)} ({info['config']['arch']['name']})"
    with tempfile.TemporaryDirectory(prefix="push_to_hub.") as tmp:
        write_repo_folder(tmp, info, card)
        try:
            url = api.create_repo(cfg.repo_id, private=cfg.private, exist_ok=True)
            api.upload_folder(repo_id=cfg.repo_id, folder_path=tmp, commit_message=message)
        except HfHubHTTPError as e:
            status = getattr(getattr(e, "response", None), "status_code", None)
            if status in (401, 403):
                raise ConfigError(f"repo_id={cfg.repo_id}: the Hub refused ({status}): the token cannot write there; nothing was uploaded") from None
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"repo_id={cfg.repo_id}: the Hub answered {status or 'an error'} ({first[:160]}); nothing was uploaded") from None
        except ValueError as e:  # huggingface_hub's verdict on README.md's front matter, before the commit
            if "Invalid metadata" not in str(e):
                raise
            reasons = "; ".join(line.lstrip("- ").strip() for line in str(e).splitlines()[1:] if line.strip()) or str(e)
            raise ConfigError(f"repo_id={cfg.repo_id}: the Hub refused the model card's metadata ({reasons[:200]}); nothing was uploaded") from None
        except (OSError, ConnectionError) as e:
            raise ConfigError(f"repo_id={cfg.repo_id}: the Hub cannot be reached ({type(e).__name__}); nothing was uploaded") from None
        except Exception as e:  # noqa: BLE001 - httpx/requests connection errors are not OSErrors
            if type(e).__module__.split(".")[0] in ("httpx", "httpx2", "requests", "urllib3"):
                raise ConfigError(f"repo_id={cfg.repo_id}: the Hub cannot be reached ({type(e).__name__}); nothing was uploaded") from None
            raise
    return str(url)


def push(cfg: PushConfig) -> str:
    """Everything one command line does; returns where the repository went (URL or folder)."""
    parse_hub_uri(f"hf://{cfg.repo_id}", "repo_id")  # owner/name, checked before any work
    if "@" in cfg.repo_id or cfg.repo_id.count("/") != 1:
        raise ConfigError(f"repo_id={cfg.repo_id}: expected <owner>/<name>")
    if cfg.local_dir is None:
        check_can_upload(cfg.repo_id)
    else:
        check_local_dir(cfg.local_dir)  # before reading the checkpoint
    info = read_checkpoint(cfg)
    card = model_card(cfg.repo_id, info, dataset=cfg.dataset, license=cfg.license)
    if cfg.local_dir is not None:
        written = write_local_dir(cfg.local_dir, info, card)
        print(f"wrote {len(written)} files to {cfg.local_dir} (nothing uploaded): {', '.join(written)}")
        return cfg.local_dir
    url = upload(cfg, info, card)
    print(f"uploaded {os.path.basename(cfg.checkpoint)} to {url}  (use: predict.py checkpoint=hf://{cfg.repo_id} ...)")
    return url


def main(argv: Optional[Sequence[str]] = None) -> None:
    run_config_cli(PushConfig, push, argv, doc=__doc__)


if __name__ == "__main__":
    main()
