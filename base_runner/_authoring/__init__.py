"""Tools for challenge authors: ``base-runner new``, ``check`` and the release names."""
