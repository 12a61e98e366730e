"""A challenge whose get_weights does what the test asks, through a module global."""

import asyncio
import time

from base_runner import hookimpl

#: What get_weights does next: a value to return, an exception to raise, or ("sleep", seconds).
BEHAVIOUR: object = {"5Lab": 1.0}
CALLS = 0


@hookimpl
async def get_weights():
    global CALLS
    CALLS += 1
    behaviour = BEHAVIOUR
    if isinstance(behaviour, BaseException):
        raise behaviour
    if isinstance(behaviour, tuple) and behaviour[0] == "sleep":
        await asyncio.sleep(behaviour[1])
        return {"slow": 1.0}
    if isinstance(behaviour, tuple) and behaviour[0] == "block":
        time.sleep(behaviour[1])
        return {"slow": 1.0}
    return behaviour
