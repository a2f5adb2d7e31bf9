"""DAVIS evaluation: the official J and F measures and scoring of a results folder.

- :mod:`.metrics`: region similarity J, boundary F and their per-sequence statistics.
- :mod:`.davis`: reading a dataset in the DAVIS layout.
- :mod:`.scoring`: scoring a results folder and writing the official CSVs.
"""
from .metrics import Statistics, boundary_f, db_statistics, region_similarity
from .scoring import ObjectScores, ScoreResult, format_table, score_results, write_csvs

__all__ = [
    "ObjectScores",
    "ScoreResult",
    "Statistics",
    "boundary_f",
    "db_statistics",
    "format_table",
    "region_similarity",
    "score_results",
    "write_csvs",
]
