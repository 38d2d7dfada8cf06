"""Adaptive search: sampled trials of a train task, stopped early by a scheduler.

A task with a ``search:`` block (:mod:`mlcomp.search.spec`) becomes a virtual ``search`` task; the
supervisor's tick (:mod:`mlcomp.search.step`) samples trials through Optuna
(:mod:`mlcomp.search.sampler`) over the space (:mod:`mlcomp.search.space`), creates them as child
train tasks, pauses them at rungs (:mod:`mlcomp.search.pause`) and promotes them by exact resume
(ASHA, :mod:`mlcomp.search.asha`) or stops them (the median rule, :mod:`mlcomp.search.median`).
The store holds every trial and rung record (``search_trial``, ``search_rung``).

Importing this package imports nothing else (the worker reads :data:`PAUSED_EXIT_CODE`).
"""

PAUSED_EXIT_CODE = 76
"""Exit status of a task child that paused at a rung (75, ``EX_TEMPFAIL``, is a stop)."""

SEARCH_TYPE = "search"
"""The task type of a search (virtual: its trials are its child tasks)."""
