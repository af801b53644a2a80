"""Build the dominoes dataset: pick the best move in a block-game position.

    python dataset/build_domino_dataset.py --output-dir data/domino-opt --num-games 2000 --num-aug 0

Each scenario comes from a real game: two players draw 7 tiles each from a shuffled double-six
set and play random legal moves (block game: no drawing, a player who cannot play passes)
until one goes out or both are stuck. One of the positions where the player to move had a
legal move is taken at random, so table lengths run from 0 to 13 and hand sizes from 7 to 1.
The label is the move the policy (``--policy``, default ``max-chain``) picks; see
``dataset/domino.py`` for the encoding and the policies.

Output: ``train/`` and ``test/`` (set ``all``), ``identifiers.json`` and ``domino.json``
(the policy and options, read by the inspector so it checks against the right policy).
Train scenarios each get ``--num-aug`` copies with the pips renamed by a random bijection of
0..6, whose labels are recomputed (a renaming changes pip sums, hence tie-breaks); a scenario
and its copies form one group. Test is never augmented and never shares a scenario with train.
"""
from __future__ import annotations

import collections
import json
import os
from typing import Dict, List, Literal, Optional, Sequence, Set

import numpy as np
import pydantic

from dataset.common import DatasetError, atomic_output_dir, parse_config, run_cli, save_identifiers, save_split
from dataset.domino import (HAND_MAX, POLICIES, POLICY_FILE, SEQ_LEN, VOCAB_SIZE, Scenario, choose_move, encode,
                            encode_label, full_set, legal_moves, play, relabel)
from utils.progress import progress_bar

# Games played per requested scenario before giving up (plus a few): distinct positions are
# plentiful, so the cap only stops a loop that cannot succeed.
GAMES_PER_SCENARIO, EXTRA_GAMES = 100, 1000
# Pip renamings tried per requested copy: two renamings coincide when they differ only on pips
# absent from the position.
RENAMINGS_PER_COPY = 5


class DominoBuildConfig(pydantic.BaseModel):
    """Options of the builder (one per command-line flag)."""

    output_dir: str = pydantic.Field("data/domino", description=(
        "dataset folder to write (replaced as a whole once the build succeeds)"))
    num_games: int = pydantic.Field(2000, ge=1, description="scenarios per split, one per random game")
    subsample_size: Optional[int] = pydantic.Field(None, ge=1, description=(
        "keep this many of the train scenarios (before augmentation)"))
    num_aug: int = pydantic.Field(0, ge=0, description="pip-relabelled copies per train scenario, labels recomputed")
    policy: Literal[tuple(POLICIES)] = pydantic.Field("max-chain", description=(  # type: ignore
        "which move is the label"))
    seed: int = pydantic.Field(0, description="same seed and options, same files")


# --------------------------------------------------------------------------------------------
# Scenarios from play


def random_game_position(rng: np.random.Generator) -> Scenario:
    """Play one random two-player block game and return one of its decision points at random."""
    tiles = full_set()
    order = rng.permutation(len(tiles))
    hands = [sorted(tiles[i] for i in order[:HAND_MAX]), sorted(tiles[i] for i in order[HAND_MAX:2 * HAND_MAX])]
    player = int(rng.integers(2))
    state = [Scenario(table=(), hand=tuple(hands[0])), Scenario(table=(), hand=tuple(hands[1]))]
    decisions: List[Scenario] = []
    passes = 0
    while passes < 2:
        me = state[player]
        moves = legal_moves(me.ends, me.hand)
        if moves:
            decisions.append(me)
            me = play(me, moves[int(rng.integers(len(moves)))])
            state[player] = me
            state[1 - player] = Scenario(table=me.table, hand=state[1 - player].hand)
            passes = 0
            if not me.hand:
                break
        else:
            passes += 1
        player = 1 - player
    return decisions[int(rng.integers(len(decisions)))]


def draw_scenarios(rng: np.random.Generator, count: int, exclude: Set[bytes], desc: str) -> List[Scenario]:
    """``count`` distinct scenarios from random games, none of whose encodings is in ``exclude``."""
    found: List[Scenario] = []
    seen = set(exclude)
    max_games = GAMES_PER_SCENARIO * count + EXTRA_GAMES
    games = 0
    with progress_bar(total=count, desc=desc, unit="scenario") as bar:
        while len(found) < count:
            if games >= max_games:
                raise DatasetError(f"found only {len(found)} distinct scenarios in {games} games; ask for fewer")
            games += 1
            scenario = random_game_position(rng)
            key = encode(scenario).tobytes()
            if key in seen:
                continue
            seen.add(key)
            found.append(scenario)
            bar.update(1)
    return found


def augmentations(rng: np.random.Generator, scenario: Scenario, num_aug: int, exclude: Set[bytes]) -> List[Scenario]:
    """Up to ``num_aug`` distinct pip renamings of ``scenario``, none equal to it or in ``exclude``."""
    seen = {encode(scenario).tobytes()}
    copies: List[Scenario] = []
    for _ in range(RENAMINGS_PER_COPY * num_aug):
        if len(copies) == num_aug:
            break
        perm = rng.permutation(7)
        copy = relabel(scenario, perm.tolist())
        key = encode(copy).tobytes()
        if key not in seen and key not in exclude:
            seen.add(key)
            copies.append(copy)
    return copies


# --------------------------------------------------------------------------------------------
# Writing


def split_arrays(groups: Sequence[Sequence[Scenario]], policy: str, desc: str) -> Dict[str, np.ndarray]:
    """Encode the scenarios (each inner list a group) with policy labels: inputs, labels, group_indices."""
    inputs, labels = [], []
    group_indices = [0]
    with progress_bar(total=sum(len(g) for g in groups), desc=desc, unit="example") as bar:
        for group in groups:
            for scenario in group:
                inputs.append(encode(scenario))
                labels.append(encode_label(choose_move(scenario, policy)))
                bar.update(1)
            group_indices.append(len(inputs))
    return {
        "inputs": np.stack(inputs).astype(np.uint8),
        "labels": np.stack(labels).astype(np.uint8),
        "group_indices": np.array(group_indices, dtype=np.int32),
    }


def distribution(scenarios: Sequence[Scenario]) -> Dict[str, Dict[int, int]]:
    """Counts of table lengths and hand sizes, for the build summary."""
    return {
        "table_length": dict(sorted(collections.Counter(len(s.table) for s in scenarios).items())),
        "hand_size": dict(sorted(collections.Counter(len(s.hand) for s in scenarios).items())),
    }


def build_domino_dataset(config: DominoBuildConfig) -> Dict[str, Dict[str, Dict[int, int]]]:
    """Generate both splits and write the dataset; returns the per-split distributions."""
    summary = {}
    # at most num_games * (1 + num_aug) train and num_games test examples: inputs, labels, 3 int32 indices
    needed = config.num_games * (2 + config.num_aug) * (2 * SEQ_LEN + 12)
    with atomic_output_dir(config.output_dir, needed_bytes=needed) as tmp:
        # Separate streams per split: the test set does not change when train options do.
        test = draw_scenarios(np.random.default_rng([config.seed, 1]), config.num_games, set(), "test scenarios")
        test_keys = {encode(s).tobytes() for s in test}
        train = draw_scenarios(np.random.default_rng([config.seed, 0]), config.num_games, test_keys, "train scenarios")
        if config.subsample_size is not None and config.subsample_size < len(train):
            keep = np.random.default_rng([config.seed, 2]).choice(len(train), config.subsample_size, replace=False)
            train = [train[i] for i in np.sort(keep)]

        aug_rng = np.random.default_rng([config.seed, 3])
        splits = {
            # A renamed copy may equal a test scenario: those copies are skipped, so no test input is seen in training.
            "train": [[s] + augmentations(aug_rng, s, config.num_aug, test_keys) for s in train],
            "test": [[s] for s in test],
        }
        for split, groups in splits.items():
            arrays = split_arrays(groups, config.policy, f"{split} labels ({config.policy})")
            save_split(os.path.join(tmp, split), arrays["inputs"], arrays["labels"],
                       group_indices=arrays["group_indices"], vocab_size=VOCAB_SIZE, task="domino")
            summary[split] = distribution([s for g in groups for s in g])
        save_identifiers(tmp, ["<blank>"])
        with open(os.path.join(tmp, POLICY_FILE), "w") as f:
            json.dump(config.model_dump(exclude={"output_dir"}), f, indent=1)
    return summary


# --------------------------------------------------------------------------------------------
# Command line


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Build the dataset the command line asks for and print the table/hand distributions."""
    config = parse_config(DominoBuildConfig, argv, description=__doc__)
    summary = build_domino_dataset(config)
    print(f"wrote {config.output_dir} (policy {config.policy})")
    for split, dist in summary.items():
        for name, counts in dist.items():
            print(f"  {split} {name}: " + " ".join(f"{k}:{v}" for k, v in counts.items()))


# Names of the first version, still used by tests/test_puzzle_visualizer.py.
DominoDatasetConfig = DominoBuildConfig
build = build_domino_dataset


if __name__ == "__main__":
    run_cli(main)
