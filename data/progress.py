"""Progress bars: tqdm's console bar everywhere, with nothing printed about widgets in Jupyter.

`tqdm.auto` picks a notebook widget inside Jupyter, which needs ipywidgets (not a dependency of this project);
without it tqdm warns "IProgress not found" and falls back to the console bar anyway. The libraries import the
console bar (`from tqdm import tqdm`). Importing this module first also imports `tqdm.auto` once with that warning
silenced, so a module that still uses `tqdm.auto` prints nothing either (later imports reuse the loaded module):
`evaluation` and `models` import it before their modules load.
"""
from __future__ import annotations

import importlib
import warnings

from tqdm import TqdmWarning

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="IProgress not found", category=TqdmWarning)
    importlib.import_module("tqdm.auto")  # cached from here on: its fallback warning is never printed again
