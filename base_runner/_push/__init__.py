"""Pushing weights to BASE 3.1's master: the wire protocol, the durable ledger, the pusher."""
