"""Scoring: classification metrics, the reference models every run and fold is scored beside, the
patient-context (ugly-duckling) read-out, statistics over seeds and the tables they are printed in.

Above ``training`` (a reference model may train a network) and below the workflows that call it."""
