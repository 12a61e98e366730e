"""Durable evaluation jobs: the queue in the challenge's own SQLite file, and the scheduler that runs it.

The public face is :mod:`base_runner.jobs`; this package is the runner's side:
:mod:`.table` (the table the runner owns), :mod:`.tasks` (what ``@jobs.task``
makes, and the checks on it), :mod:`.job` (the handle a task gets, a job's
record), :mod:`.enqueue` (the transactional insert), :mod:`.scheduler` (the
claim loop, its start and stop) with its parts :mod:`.base`, :mod:`.leases`,
:mod:`.attempts` and :mod:`.operators`, and :mod:`.routes` (the operators' HTTP API).
"""
