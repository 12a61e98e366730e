"""Bounty: the owner posts projects, miners submit GitHub work, the owner reviews it and sets each hotkey's emission.

A port of PlatformNetwork/bounty-challenge (the Python service) to base-runner:
the runner serves, stores and authenticates; this package is the challenge.
"""
