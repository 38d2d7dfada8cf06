"""Adaptive search: sampled trials of a train task, stopped early by a scheduler.

A task with a ``search:`` block (:mod:`mlcomp.search.spec`) becomes a virtual ``search`` task; the
supervisor's tick (:mod:`mlcomp.search.step`) samples trials through Optuna
(:mod:`mlcomp.search.sampler`) over the space (:mod:`mlcomp.search.space`), creates them as child
train tasks, pauses them at rungs (the train executor's :mod:`executors.pause`) and promotes them by exact resume
(ASHA, :mod:`mlcomp.search.asha`) or stops them (the median rule, :mod:`mlcomp.search.median`).
The store holds every trial and rung record (``search_trial``, ``search_rung``).

Importing this package imports only :mod:`mlcomp.errors` (its exit status,
``PAUSED_EXIT_CODE``, is ``mlcomp.errors.EXIT_PAUSED``).
"""

from mlcomp.errors import EXIT_PAUSED as PAUSED_EXIT_CODE  # noqa: F401  (the number's home: mlcomp.errors)

SEARCH_TYPE = "search"
"""The task type of a search (virtual: its trials are its child tasks)."""
