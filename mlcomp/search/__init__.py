"""Adaptive search: sampled trials of a train task, stopped early by a scheduler.

This package holds grid search and adaptive search alike, the two composite task kinds
(:class:`mlcomp.kinds.TaskKind`) whose parents run no process: grid expansion
(:mod:`mlcomp.search.grid`), a grid's stored config, ranking and roll-up (:mod:`mlcomp.search.rollup`),
and the supervisor's driver of each kind (:mod:`mlcomp.search.drivers`).

A task with a ``search:`` block (:mod:`mlcomp.search.spec`) becomes a composite ``search`` task; the
supervisor's tick (:mod:`mlcomp.search.step`) samples trials through Optuna
(:mod:`mlcomp.search.sampler`) over the space (:mod:`mlcomp.search.space`), creates them as child
train tasks, pauses them at rungs (the train executor's :mod:`executors.pause`) and promotes them by exact resume
(ASHA, :mod:`mlcomp.search.asha`) or stops them (the median rule, :mod:`mlcomp.search.median`).
The store holds every trial and rung record (``search_trial``, ``search_rung``).

Importing this package imports only :mod:`mlcomp.errors` (its exit status,
``PAUSED_EXIT_CODE``, is ``mlcomp.errors.EXIT_PAUSED``).
"""

from mlcomp.errors import EXIT_PAUSED as PAUSED_EXIT_CODE  # noqa: F401  (the number's home: mlcomp.errors)
