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
The store holds every trial and rung record (``search_trial``, ``search_rung``). A trial paused
at a rung ends :class:`mlcomp.outcome.Paused` (its exit code is in :data:`mlcomp.outcome.EXIT_CODES`).

Importing this package imports nothing else.
"""
