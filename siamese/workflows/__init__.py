"""Run orchestration: each workflow a function a notebook can call as the command line does: train a run
(``training_run``), cross-validate and compare recipes (``crossval``), the leakage experiment (``leakage``).

Named ``workflows`` rather than ``experiments``: the repository's top-level ``experiments/`` folder holds
scripts that call these functions, and one name for both would leave a reader guessing which is meant.
"""
