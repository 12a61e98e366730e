"""Miner code in a Docker sandbox: the rules, the local Engine and the master's broker, the runner's bookkeeping.

Challenge code uses :mod:`base_runner.executor`; the runner builds one
:class:`~.service.Executor` from its settings when it starts (:func:`.setup.build`).
"""
