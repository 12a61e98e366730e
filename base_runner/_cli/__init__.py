"""The ``base-runner`` command line: one module per group of commands, shared options in :mod:`.options`."""
