"""The papers' recipes as named experiments (``config/experiment/*.yaml``), and what each needs.

    python scripts/experiments.py              # one line per experiment: source hardware and result
    python scripts/experiments.py trm_maze_hard  # the dataset command and the training command of one

Train one with ``python pretrain.py +experiment=<name>`` (any override may follow, e.g.
``+experiment=trm_maze_hard lr=2e-4``). Each file's header comment records its source (paper or
original README), the source command line, the dataset build command, the hardware the source
used and the accuracy it reports; this script reads those lines.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Dict, List, Optional, Sequence

from utils.cli import ArgumentParser

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENT_DIR = os.path.join(REPO, "config", "experiment")
HEADER_FIELDS = ("source", "command", "dataset", "hardware", "reported", "launch")
_FIELD_LINE = re.compile(r"^#\s*(\w+):\s*(.*)$")


def read_header(path: str) -> Dict[str, str]:
    """The ``# key: value`` lines of an experiment file's header comment (plus ``title``, its first line)."""
    fields: Dict[str, str] = {}
    with open(path) as f:
        for line in f:
            if not line.startswith("#"):
                break
            if line.startswith("# @package"):
                continue
            m = _FIELD_LINE.match(line.rstrip("\n"))
            if m and m.group(1) in HEADER_FIELDS + ("note",):
                fields[m.group(1)] = m.group(2).strip()
            elif "title" not in fields:
                fields["title"] = line.lstrip("#").strip()
    return fields


def experiment_names() -> List[str]:
    return sorted(f[:-len(".yaml")] for f in os.listdir(EXPERIMENT_DIR) if f.endswith(".yaml"))


def experiments() -> Dict[str, Dict[str, str]]:
    """name -> header fields, for every file in ``config/experiment``."""
    return {n: read_header(os.path.join(EXPERIMENT_DIR, f"{n}.yaml")) for n in experiment_names()}


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", help="an experiment: print its dataset and training commands")
    args = p.parse_args(argv)
    all_exps = experiments()
    if args.name is None:
        width = max(map(len, all_exps))
        for name, h in all_exps.items():
            print(f"{name:<{width}}  {h.get('hardware', '?')}; reported: {h.get('reported', '?')}")
        print("\npython scripts/experiments.py <name> prints what to run; python pretrain.py +experiment=<name> trains it")
        return
    if args.name not in all_exps:
        print(f"error: no experiment {args.name!r}; known: {', '.join(all_exps)}", file=sys.stderr)
        sys.exit(2)
    h = all_exps[args.name]
    print(f"{args.name}: {h.get('title', '')}")
    print(f"  source:   {h.get('source', '?')}\n  hardware: {h.get('hardware', '?')}\n  reported: {h.get('reported', '?')}")
    if "note" in h:
        print(f"  note:     {h['note']}")
    print(f"\n# 1. build the dataset\n{h.get('dataset', '?')}\n\n# 2. train\n{h.get('launch', f'python pretrain.py +experiment={args.name}')}")
    print(f"\n# the source's own command line (same config)\n{h.get('command', '?')}")
    print(f"\n# estimated steps, memory and GPU hours\npython scripts/plan.py {args.name}")


if __name__ == "__main__":
    main()
