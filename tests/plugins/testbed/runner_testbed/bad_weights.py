"""A challenge whose get_weights returns entries the master must never get."""

from base_runner import hookimpl


@hookimpl
def get_weights():
    return {"5Good": 1.0, "5NaN": float("nan"), "5Negative": -2.0}
