"""The training run's config: its schema (``config/cfg_pretrain.yaml`` + ``config/arch/*.yaml``
with the command line's overrides), the checks that make a mistake one line, the default names,
and the config every rank agrees on (built on rank 0, where the random run name is drawn)."""
from __future__ import annotations

import contextlib
import os
from typing import Any, Dict, List, Literal, Optional

import pydantic

from training import validation
from training.depth import DepthStage, check_depth_schedule
from training.resume_state import resolve_resume
from training.runs import claim_run_folder, nothing_saved
from utils.compile import CompileSetting
from utils.config import ConfigError, check_batch_divisible, normalize_data_paths, read_run_yaml
from utils.distributed import DEFAULT_DIST_TIMEOUT_S, DistInfo, broadcast_object
from utils.functions import validation_error_line

DEFAULT_DATA_PATH = "data/arc-aug-1000"


class LossConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")
    name: str


class ArchConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")
    name: str
    loss: LossConfig


class EvaluatorConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")
    name: str


class PretrainConfig(pydantic.BaseModel):
    arch: ArchConfig
    # Data: HRM spelling `data_path`, TRM spelling `data_paths`; normalised so both are set.
    data_path: Optional[str] = None
    data_paths: List[str] = []
    data_paths_test: List[str] = []
    evaluators: List[EvaluatorConfig] = []

    global_batch_size: int
    epochs: int
    lr: float
    lr_min_ratio: float
    lr_warmup_steps: int
    weight_decay: float
    beta1: float
    beta2: float
    puzzle_emb_lr: float
    puzzle_emb_weight_decay: float

    project_name: Optional[str] = None
    run_name: Optional[str] = None
    load_checkpoint: Optional[str] = None
    checkpoint_path: Optional[str] = None

    seed: int = 0
    checkpoint_every_eval: bool = False
    eval_interval: Optional[int] = None
    min_eval_interval: Optional[int] = 0
    eval_save_outputs: List[str] = []
    ema: bool = False
    ema_rate: float = 0.999
    freeze_weights: bool = False

    # Added by this project.
    resume: Optional[str] = None
    checkpoint_interval_steps: int = 0
    log_interval: Optional[int] = None  # read train metrics back every N steps (all logged); null: 1 on CPU, 20 on CUDA
    # Steps per line of train_metrics.jsonl; default: about 200 lines per run.
    train_metrics_interval: Optional[int] = None
    wandb_group: Optional[str] = None
    compile: CompileSetting = "auto"  # torch.compile: auto (CUDA: whole model; CPU: regional in long runs), true, false, regional
    dist_timeout_s: float = DEFAULT_DIST_TIMEOUT_S
    # One GPU (docs/training.md "Training on one GPU"): micro-batches per optimizer step, best checkpoint and
    # early stopping, cheaper evaluation during training.
    gradient_accumulation_steps: int = 1
    best_metric: Optional[str] = None
    best_metric_mode: Literal["max", "min"] = "max"
    early_stop_patience: Optional[int] = None
    eval_max_examples: Optional[int] = None
    eval_full_at_end: bool = False
    eval_global_batch_size: Optional[int] = None
    # URM's (UbiquantAI/URM; Muon in utils/muon.py): the optimizer of the weights, and extra
    # evaluations at loops + delta segments.
    optimizer: Literal["adam_atan2", "muon"] = "adam_atan2"
    # Which weights Muon orthogonalises: URM's every 2-D weight (all_2d), or only the repeated
    # reasoning blocks' (hidden_layers; embeddings and heads then take Muon's AdamW branch).
    muon_params: Literal["all_2d", "hidden_layers"] = "all_2d"
    # Muon's momentum (URM's 0.95): the weight of past gradients in the update it orthogonalises.
    muon_momentum: float = 0.95
    loop_deltas: List[int] = []
    # URM's pretrain.py loop (docs/training.md, URM extras): update k at the schedule's
    # lr(k - 1), and on rank 0 the data order after its batch-counting pass. The URM recipes set it.
    urm_train_loop: bool = False
    # Wall-clock budget in seconds from process start (docs/performance.md "Speedrun"): training stops after the
    # step that reaches it, then evaluates and saves as at the end of a run. A resumed run counts
    # its own process's time only. None: no budget.
    max_train_seconds: Optional[float] = None
    # The clock of the LR decay: ``steps`` (the original's: the planned steps) or ``budget``: the
    # larger of the steps' progress and the budget's (seconds since start over max_train_seconds),
    # so the decay ends when the run does however many steps the machine gets through in time.
    # The warm-up counts steps either way. ``budget`` makes the LR depend on the wall clock.
    lr_schedule_clock: Literal["steps", "budget"] = "steps"
    # The shape of the LR after the warm-up: ``cosine`` (the original's decay to lr_min_ratio over
    # the run) or ``wsd`` (warm-up-stable-decay: the peak LR held, then a linear decay to
    # lr_min_ratio over the last ``lr_decay_fraction`` of the run). Either follows lr_schedule_clock.
    lr_schedule: Literal["cosine", "wsd"] = "cosine"
    lr_decay_fraction: float = 0.2
    # CGAR's training methods (docs/training.md, "Faster training"): the loss of ACT segment t
    # weighted by lambda^(t-1), normalised to mean 1 (None: off, the unweighted loss).
    segment_loss_decay: Optional[float] = None
    # Progressive depth curriculum: stages {until, H_cycles, L_cycles} of training progress; after
    # the last, and in every evaluation, the arch's configured depth. None: off.
    depth_schedule: Optional[List[DepthStage]] = None

    @pydantic.field_validator("data_paths", mode="before")
    @classmethod
    def _none_is_empty(cls, v):
        return [] if v is None else v

    @pydantic.field_validator("max_train_seconds", mode="before")
    @classmethod
    def _seconds_not_a_switch(cls, v):
        if isinstance(v, bool):  # pydantic would take true as 1 second
            raise ValueError(f"max_train_seconds={str(v).lower()}: expected a number of seconds (or null), not a switch")
        return v

    @pydantic.model_validator(mode="after")
    def _check(self):
        self.data_paths = normalize_data_paths(self.data_path, self.data_paths) or [DEFAULT_DATA_PATH]
        if self.data_path is None and len(self.data_paths) == 1:
            self.data_path = self.data_paths[0]
        for name in ("global_batch_size", "epochs", "log_interval"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.eval_interval is not None and (self.eval_interval <= 0 or self.epochs % self.eval_interval):
            raise ValueError(f"eval_interval ({self.eval_interval}) must be a positive divisor of epochs ({self.epochs})")
        if self.checkpoint_interval_steps < 0:
            raise ValueError(f"checkpoint_interval_steps must be >= 0, got {self.checkpoint_interval_steps}")
        if self.dist_timeout_s <= 0:
            raise ValueError(f"dist_timeout_s must be positive, got {self.dist_timeout_s}")
        validation.check_training_values(self)
        validation.check_save_outputs(self.eval_save_outputs, "eval_save_outputs")
        if self.gradient_accumulation_steps < 1:
            raise ValueError(f"gradient_accumulation_steps must be >= 1 (micro-batches per optimizer step), got {self.gradient_accumulation_steps}")
        if self.train_metrics_interval is not None and self.train_metrics_interval < 1:
            raise ValueError(f"train_metrics_interval must be a positive number of steps or null, got {self.train_metrics_interval}")
        for name in ("eval_max_examples", "eval_global_batch_size", "early_stop_patience"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive number or null, got {getattr(self, name)}")
        if self.max_train_seconds is not None and not self.max_train_seconds > 0:
            raise ValueError(f"max_train_seconds must be a positive number of seconds or null, got {self.max_train_seconds}")
        if self.lr_schedule_clock == "budget" and self.max_train_seconds is None:
            raise ValueError("lr_schedule_clock=budget decays the LR over the time budget: set max_train_seconds too")
        if not 0 < self.lr_decay_fraction <= 1:
            raise ValueError(f"lr_decay_fraction must be in (0, 1] (the share of the run that lr_schedule=wsd decays over), got {self.lr_decay_fraction}")
        if self.segment_loss_decay is not None and not 0 < self.segment_loss_decay < float("inf"):
            raise ValueError(f"segment_loss_decay must be a positive number (e.g. 0.7) or null, got {self.segment_loss_decay}")
        if not 0 <= self.muon_momentum < 1:
            raise ValueError(f"muon_momentum must be in [0, 1), got {self.muon_momentum}")
        if self.depth_schedule:
            check_depth_schedule(self.depth_schedule, {"name": self.arch.name, **(self.arch.__pydantic_extra__ or {})})
        if self.early_stop_patience is not None and self.best_metric is None:
            raise ValueError("early_stop_patience needs best_metric (the metric whose improvement it waits for), e.g. best_metric=all/exact_accuracy")
        return self


def check_pretrain_override(key: str, set_by: Dict[str, str], runner: str, own_options: str, example: str) -> None:
    """Check ``key`` of a ``key=value`` that a script running pretrain.py for the user (the speedrun,
    the ARC benchmark) passes through as a pretrain.py override: a one-line :class:`ConfigError` when
    the script sets that key itself (``set_by`` maps it to the script's own option that does) or when
    it is no pretrain.py config key (``own_options`` and ``example`` fill in what was expected)."""
    root = key.lstrip("+~").split(".")[0]
    if root in set_by:
        raise ConfigError(f"{key}= is set by the {runner} ({set_by[root]}); not an override")
    if root != "arch" and root not in PretrainConfig.model_fields:
        raise ConfigError(f"unknown option {key}=: expected {own_options} or a pretrain.py config key (e.g. {example})")


def parse_config(raw: Dict[str, Any]) -> PretrainConfig:
    """Validate a composed config dict; errors become one :class:`ConfigError` line."""
    try:
        validation.check_known_keys(raw, PretrainConfig.model_fields)
    except ValueError as e:
        raise ConfigError(str(e)) from None  # already says "config: ..."
    try:
        return PretrainConfig(**raw)
    except pydantic.ValidationError as e:
        raise ConfigError(f"config: {validation_error_line(e)}") from None
    except ValueError as e:
        raise ConfigError(f"config: {e}") from None


def fill_names(config: PretrainConfig) -> PretrainConfig:
    """Default project/run names and checkpoint folder, as the original names them."""
    import coolname

    if config.project_name is None:
        config.project_name = f"{os.path.basename(config.data_paths[0].rstrip('/')).capitalize()} ACT-torch"
    if config.run_name is None:
        config.run_name = f"{config.arch.name.split('@')[-1]} {coolname.generate_slug(2)}"
    if config.checkpoint_path is None:
        config.checkpoint_path = os.path.join("checkpoints", config.project_name, config.run_name)
    return config


def check_batch_split(config: PretrainConfig, world_size: int) -> None:
    """Every rank gets an equal share of the global batch, cut into equal micro-batches."""
    check_batch_divisible(config.global_batch_size, world_size)
    parts = world_size * config.gradient_accumulation_steps
    if config.global_batch_size % parts:
        raise ConfigError(f"global_batch_size ({config.global_batch_size}) is not divisible by processes ({world_size}) x "
                          f"gradient_accumulation_steps ({config.gradient_accumulation_steps}) = {parts}; "
                          "every micro-batch must hold the same number of examples")
    eval_batch = eval_batch_size(config)
    if eval_batch % world_size:
        raise ConfigError(f"eval_global_batch_size ({eval_batch}) is not divisible by the number of processes ({world_size})")


def eval_batch_size(config: PretrainConfig) -> int:
    return config.eval_global_batch_size or config.global_batch_size


# Keys that may differ between a run and its resumption.
RESUME_MAY_CHANGE = {"resume", "checkpoint_interval_steps", "log_interval", "eval_save_outputs", "load_checkpoint",
                     "checkpoint_path", "project_name", "run_name", "wandb_group", "compile", "dist_timeout_s",
                     "early_stop_patience", "eval_full_at_end", "eval_global_batch_size", "max_train_seconds"}


def check_resume_config(now: Dict[str, Any], saved: Dict[str, Any], defaults: Optional[Dict[str, Any]] = None) -> None:
    """Refuse to resume with settings that change the run (``now``/``saved``: config dicts).

    ``defaults``: values of keys added to the config after the saved run started (absent from ``saved``).
    """
    saved = {**{k: v for k, v in (defaults or {}).items() if k not in saved}, **saved}
    changed = sorted(k for k in set(now) | set(saved) if k not in RESUME_MAY_CHANGE and now.get(k) != saved.get(k))
    if changed:
        details = "; ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed[:6])
        raise ValueError(f"resume: config differs from the run being resumed ({details}); resume with the original settings")


def load_synced_config(raw: Dict[str, Any], info: DistInfo, held: contextlib.ExitStack) -> PretrainConfig:
    """Build the config on rank 0 (names are random) and give every rank the same one. Rank 0
    locks the run folder for the run's lifetime (``held`` releases it)."""
    payload: Any = None
    if info.rank == 0:
        try:
            config = parse_config(raw)
            check_batch_split(config, info.world_size)
            if config.resume is not None and nothing_saved(config.resume):
                print(f"resume={config.resume}: that run stopped before saving any weights or resume state; starting from step 0")
                config.checkpoint_path, config.resume = config.checkpoint_path or config.resume, None
            if config.resume is not None:
                folder, _step = resolve_resume(config.resume)
                saved = read_run_yaml(os.path.join(folder, "all_config.yaml"))
                # Same names and folder as the run being resumed unless given explicitly.
                for key in ("project_name", "run_name", "checkpoint_path"):
                    if getattr(config, key) is None:
                        setattr(config, key, saved.get(key))
                # Keys added to the config after the saved run started count as their defaults there.
                defaults = {k: f.default for k, f in PretrainConfig.model_fields.items() if not f.is_required()}
                check_resume_config(config.model_dump(), saved, defaults)
            payload = fill_names(config)
            lock, notices = claim_run_folder(config.checkpoint_path, config.resume)  # type: ignore[arg-type]
            held.callback(lock.release)
            print(*notices, sep="\n", end="\n" if notices else "")
        except (ConfigError, ValueError, OSError) as e:
            payload = ConfigError(str(e))
    payload = broadcast_object(payload, info)
    if isinstance(payload, Exception):
        raise payload
    return payload


def dist_timeout_from(raw_config: Dict[str, Any]) -> float:
    """``dist_timeout_s`` is needed to join the process group, before the config can be synced."""
    value = raw_config.get("dist_timeout_s", DEFAULT_DIST_TIMEOUT_S)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"config: dist_timeout_s must be a positive number of seconds, got {value!r}")
    return float(value)
