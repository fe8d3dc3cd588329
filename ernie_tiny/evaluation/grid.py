"""Grid points: the finetuning runs one task needs, from the config's grid and the task card.

Paper appendix A.7: batch {16, 32, 64} x learning rate {1e-5, 2e-5, 3e-5, 5e-5}, dropout 0.1,
epochs from Table 6. A card may widen the grid for its task (PaddleNLP's CLUE protocol:
dropout {0.0, 0.1} for IFLYTEK and CLUEWSC, an extra batch size 8 for CLUEWSC); with
``Grid.card_overrides: false`` only the config's grid is used (a quick run at one point).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import List, Sequence, Tuple, TypeVar

from ernie_tiny.evaluation.schema import GridSection, EvalTaskEntry
from ernie_tiny.tasks.card import TaskCard

T = TypeVar("T")


@dataclass(frozen=True)
class GridPoint:
    task: str
    batch_size: int
    learning_rate: float
    dropout: float
    seed: int
    epochs: int

    @property
    def hyperparameters(self) -> Tuple[int, float, float, int]:
        """What a point shares with its other seeds: scores are averaged over seeds per this."""
        return self.batch_size, self.learning_rate, self.dropout, self.epochs

    @property
    def name(self) -> str:
        return f"bs{self.batch_size}_lr{self.learning_rate:g}_dropout{self.dropout:g}_ep{self.epochs}_seed{self.seed}"

    def as_dict(self) -> dict:
        return asdict(self)


def _unique(values: Sequence[T]) -> List[T]:
    return list(dict.fromkeys(values))


def task_points(card: TaskCard, entry: EvalTaskEntry, grid: GridSection) -> List[GridPoint]:
    """Every (batch size, learning rate, dropout, seed) of one task, seeds innermost."""
    batch_sizes = _unique(grid.batch_sizes + (card.batch_sizes if grid.card_overrides else []))
    dropouts = _unique(card.dropout if grid.card_overrides else grid.dropouts)
    epochs = entry.epochs or grid.epochs or card.epochs
    return [GridPoint(card.name, bs, lr, p, seed, epochs)
            for bs in batch_sizes for lr in grid.learning_rates for p in dropouts for seed in grid.seeds]


def for_rank(items: Sequence[T], rank: int, world_size: int) -> List[T]:
    """Round-robin share of ``items`` for one process: each grid point runs whole on one device."""
    return [item for i, item in enumerate(items) if i % world_size == rank]
