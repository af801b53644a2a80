"""Cost of test-time scaling: views (samples) per second at samples=1 and samples=16.

    python scripts/benchmark_sampling.py checkpoint=demo_run/checkpoints/hrm-sudoku-4x4/step_625
    python scripts/benchmark_sampling.py checkpoint=... samples="[1,4,16]" max_examples=512 sampling=both

Evaluates the first ``max_examples`` test examples of the checkpoint's run once per value of
``samples`` (each sample an extra row of the same batches, as ``evaluate.py samples=N`` runs
them) after one warm-up pass, and prints per value: seconds, views per second, puzzles per
second and exact accuracy of the chosen answer. One process, on the GPU when there is one.
"""
from __future__ import annotations

import json
import time
from typing import List, Optional

import pydantic

from dataset.common import DatasetError
from utils.cli import run_config_cli
from utils.config import ConfigError
from utils.safe_io import CheckpointError


class BenchmarkConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    checkpoint: str
    samples: List[int] = [1, 16]
    max_examples: Optional[int] = pydantic.Field(1000, ge=1)
    sampling: str = "augment"
    noise_std: float = 0.5
    select: str = "vote"
    sampling_seed: int = 0


def benchmark(cfg: BenchmarkConfig):
    """Run the benchmark; returns one result dict per value of ``samples``."""
    from inference.evaluation import evaluate, load_evaluation
    from inference.sampling import SamplingConfig, check_views, open_codec
    from utils.distributed import cleanup, init_distributed

    info = init_distributed()
    try:
        ev = load_evaluation(cfg.checkpoint, info)
        loader, metadata = ev.loader("test", cfg.max_examples)
        codec = open_codec(ev.opened)
        results = []
        for i, n in enumerate([cfg.samples[0]] + list(cfg.samples)):  # the first run warms up
            sampling = SamplingConfig(samples=n, sampling=cfg.sampling, noise_std=cfg.noise_std, select=cfg.select,
                                      seed=cfg.sampling_seed)
            check_views(codec, sampling)
            start = time.perf_counter()
            metrics = evaluate(ev.model, loader, metadata, sampling=sampling, codec=codec, rank=info.rank, world_size=info.world_size)
            seconds = time.perf_counter() - start
            if i == 0:
                continue
            examples = loader.dataset.num_examples
            m = metrics[metadata.sets[0]]
            results.append({"samples": n, "seconds": round(seconds, 3), "views_per_second": round(examples * n / seconds, 1),
                            "puzzles_per_second": round(examples / seconds, 1), "exact_accuracy": round(m["exact_accuracy"], 4),
                            "forward_segments": m["forward_segments"]})
            print(json.dumps(results[-1]))
        print(f"device {info.device}, {loader.dataset.num_examples} examples, batch {ev.opened.run_config['global_batch_size']} examples")
        return results
    finally:
        cleanup()


def main(argv=None) -> None:
    run_config_cli(BenchmarkConfig, benchmark, argv, user_errors=(ValueError,))


if __name__ == "__main__":
    main()
