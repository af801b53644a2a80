"""Solve your own puzzles with a trained checkpoint.

    python predict.py checkpoint=checkpoints/<project>/<run>/step_N puzzle=".2.4..1..3..4.1."
    python predict.py checkpoint=.../step_N puzzle_file=puzzles.txt output=answers.json
    python predict.py checkpoint=.../step_N puzzle=... trace=true picture=steps.gif
    python predict.py checkpoint=.../step_N puzzle_file=my_arc_task.json adapt=full adapt_steps=100
    python predict.py checkpoint=hf://sapientinc/HRM-checkpoint-sudoku-extreme task=sudoku puzzle=<81 cells>

The model is rebuilt from the checkpoint and its dataset's metadata (or the weights and ``task=``
alone; ``inference.predictor.load_predictor``); the checkpoint may be ``hf://owner/name[@rev][/file]``.
Puzzles in the task's notation (``tasks/``) run for ``halt_max_steps`` ACT segments as in
``evaluate.py``; the answers are printed (``output=`` writes them as JSON). Options:

    task=sudoku|maze|arc|domino|custom  needed only when the dataset does not record its task
    seq_len=N                    without dataset metadata, for tasks whose length is not fixed
    data_path=<folder>           the checkpoint's dataset, when it is not at the recorded path
    halt_max_steps=N             test-time compute (default: the trained value)
    trace=true                   the answer and halt confidence after every segment
    picture=x.png|x.gif          the input, each segment's answer (changes outlined), the truth
    batch_size=N                 puzzles per forward pass (default: the checkpoint's)
    device=cpu|cuda              (default: cuda when available)
    adapt=embedding|full         ARC: first train on the tasks' demonstrations for adapt_steps=N (alone: adapt=embedding);
                                 adapt_lr=, adapt_batch=, adapt_seed=, adapt_save=<new folder> (docs/using-a-model.md)
    unseen=blank                 ARC: run an unseen task with the blank identifier instead
    num_aug=N                    ARC, unseen tasks: augmented versions (default: as in training)
    samples=N                    test-time scaling (docs/evaluation.md): N samples per puzzle, one answer
                                 chosen; sampling=augment|noise|both, noise_std=, select=vote|q_halt,
                                 sampling_seed=; checkpoint="[a,b]" pools checkpoints

From Python: ``inference.predictor.load_predictor(".../step_N").predict([".2.4..1..3..4.1."])``.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List, Literal, Optional, Sequence, Union

import pydantic

from inference.adaptation import AdaptOptions
from inference.predictor import PredictError, Predictor, check_adaptable, describe, load_predictor, read_puzzle_file  # noqa: F401
from inference.sampling import SamplingOptions
from inference.segments import check_halt_max_steps
from utils.cli import parse_config, run_config_cli
from utils.paths import check_output_file, write_together

# Options kept as typed: a Sudoku of digits, a custom task's list or grid, ARC JSON, file names.
LITERAL_OPTIONS = ("puzzle", "puzzle_file", "output", "picture", "data_path", "adapt_save")


class PredictConfig(SamplingOptions, AdaptOptions):
    model_config = pydantic.ConfigDict(extra="forbid")

    checkpoint: Union[str, List[str]]
    puzzle: Optional[str] = None
    puzzle_file: Optional[str] = None
    task: Optional[str] = None
    seq_len: Optional[int] = pydantic.Field(None, ge=1)
    data_path: Optional[str] = None
    halt_max_steps: Optional[int] = None  # 1..MAX_HALT_MAX_STEPS (checked below)
    output: Optional[str] = None
    picture: Optional[str] = None
    trace: bool = False
    device: Optional[str] = None
    batch_size: Optional[int] = pydantic.Field(None, ge=1)
    unseen: Literal["error", "blank"] = "error"
    num_aug: Optional[int] = pydantic.Field(None, ge=0)
    seed: Optional[int] = None  # the earlier name of adapt_seed

    @pydantic.model_validator(mode="after")
    def _check(self):
        if (self.puzzle is None) == (self.puzzle_file is None):
            raise ValueError("give exactly one of puzzle=<text> or puzzle_file=<path>")
        if self.picture is not None and os.path.splitext(self.picture)[1].lower() not in (".png", ".gif"):
            raise ValueError(f"picture={self.picture}: expected a .png or .gif file name")
        check_halt_max_steps(self.halt_max_steps)
        for option in ("output", "picture"):  # checked before the model loads: a failed command writes nothing
            if getattr(self, option) is not None:
                check_output_file(getattr(self, option), option)
        if self.output is not None and self.picture is not None and os.path.realpath(self.output) == os.path.realpath(self.picture):
            raise ValueError(f"output={self.output} and picture={self.picture} name the same file")
        self.adapt_seed = self.seed if self.seed is not None and "adapt_seed" not in self.model_fields_set else self.adapt_seed
        return self


def parse_cli(argv: Sequence[str]) -> PredictConfig:
    """The command line's ``key=value`` arguments (``checkpoint="[a,b]"``: an ensemble)."""
    return parse_config(PredictConfig, argv, LITERAL_OPTIONS)


def run(cfg: PredictConfig) -> Dict[str, Any]:
    """Everything ``predict.py`` does for one command line; returns the output JSON object.

    Every input and output location and option is checked before the model loads (the output
    files by :class:`PredictConfig`), and the output files are written together at the end: a
    command that fails writes nothing."""
    for note in cfg.unused_options(len(cfg.checkpoint) if isinstance(cfg.checkpoint, list) else 1):
        print(note, file=sys.stderr)
    text = read_puzzle_file(cfg.puzzle_file) if cfg.puzzle_file is not None else None
    adapting, option = cfg.adapt_settings, f"adapt={cfg.adapt}" if cfg.adapt else f"adapt_steps={cfg.adapt_steps}"
    if adapting:
        check_adaptable(cfg.checkpoint, cfg.task, option)
    predictor = load_predictor(cfg.checkpoint, task=cfg.task, device=cfg.device, batch_size=cfg.batch_size, seq_len=cfg.seq_len,
                               data_path=cfg.data_path)
    puzzles = predictor.read(text, cfg.puzzle_file) if text is not None else predictor.read(cfg.puzzle)  # type: ignore[arg-type]
    if text is None:
        for i, p in enumerate(puzzles):
            p.where = f"puzzle {i + 1}"  # errors above named the option (puzzle=); results name the puzzle
    scaling = f", {cfg.samples} sample(s) x {1 + len(predictor.ensemble)} checkpoint(s)" if cfg.samples > 1 or predictor.ensemble else ""
    print(f"{len(puzzles)} {predictor.task} puzzle(s), {cfg.halt_max_steps or predictor.halt_max_steps} ACT segments{scaling}, "
          f"checkpoint {cfg.checkpoint}, device {predictor.device}", file=sys.stderr)
    adapted = predictor.adapt(puzzles, adapting.steps, lr=adapting.lr, num_aug=cfg.num_aug, seed=adapting.seed, mode=adapting.mode,
                              batch=adapting.batch, option=option, save=cfg.adapt_save) if adapting else {}
    if adapted:
        print(predictor.last_adaptation.line() + (f"; saved as {adapted['saved']}" if cfg.adapt_save else ""), file=sys.stderr)  # type: ignore[union-attr]
    results = predictor.predict(puzzles, cfg.halt_max_steps, trace=cfg.trace, unseen=cfg.unseen, num_aug=cfg.num_aug,
                                samples=cfg.samples, sampling=cfg.sampling, noise_std=cfg.noise_std, select=cfg.select,
                                sampling_seed=cfg.sampling_seed)
    document: Dict[str, Any] = {"checkpoint": cfg.checkpoint, "task": predictor.task, "results": results,
                                **({"adapted": adapted} if adapted else {})}
    submission = predictor.codec.submission(results)
    if submission is not None:
        document["submission"] = submission

    for result in results:
        print(describe(result))
    files: Dict[str, bytes] = {}
    if cfg.output is not None:
        files[cfg.output] = json.dumps(document, indent=1).encode()
    if cfg.picture is not None:
        from tasks.pictures import encode_picture
        files[cfg.picture] = encode_picture(cfg.picture, predictor.picture_panels(trace=cfg.trace or cfg.picture.lower().endswith(".gif")))
    try:
        write_together(files)
    except OSError as e:
        raise PredictError(f"cannot write {e.filename or ', '.join(files)} ({e.strerror or e}); nothing was written") from None
    if cfg.output is not None:
        print(f"wrote {cfg.output}", file=sys.stderr)
    if cfg.picture is not None:
        print(f"picture: {cfg.picture}", file=sys.stderr)
    return document


def main(argv: Optional[Sequence[str]] = None) -> None:
    run_config_cli(PredictConfig, run, argv, doc=__doc__, literal=LITERAL_OPTIONS)


if __name__ == "__main__":
    main()
