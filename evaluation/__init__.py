"""How edits are scored and shown: STGAN's protocol, judge-based success / preservation / ground truth, reports, figures.

Why a library folder of its own: scoring needs the judge (models), the directions (attributes), the data (and its
procedural counterfactuals) and a run's artifacts; none of those libraries should depend on the others' evaluation,
and a notebook should reproduce every number without importing a command-line script.
"""
from evaluation.edits import EvalConfig, evaluate_edits, evaluate_run
from evaluation.figures import FiguresConfig, direction_figures, edit_figures
from evaluation.protocol import CONFLICTS, HAIR_COLOURS, STGAN_ATTRIBUTES, eval_rows, flip_changes, flip_many
from evaluation.report import headline_lines, headline_means, write_evaluation

__all__ = [
    "CONFLICTS",
    "EvalConfig",
    "FiguresConfig",
    "HAIR_COLOURS",
    "STGAN_ATTRIBUTES",
    "direction_figures",
    "edit_figures",
    "eval_rows",
    "evaluate_edits",
    "evaluate_run",
    "flip_changes",
    "flip_many",
    "headline_lines",
    "headline_means",
    "write_evaluation",
]
