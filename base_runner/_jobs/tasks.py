"""What ``@jobs.task`` makes of an ``async def``, and the checks on it and on the arguments it is enqueued with."""

from __future__ import annotations

import inspect
import json
import math
import typing
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._core.errors import PluginError
from .._core.text import plural

if TYPE_CHECKING:
    from .._plugins.plugins import LoadedChallenge
    from .job import Job

#: Keyword arguments of :func:`~base_runner.jobs.enqueue` itself, so no task parameter may take these names.
ENQUEUE_OPTIONS = frozenset({"key", "delay", "priority"})
#: Characters a task's name or a job's key may hold at most.
MAX_NAME = 200


class TaskError(TypeError):
    """A task written, registered or enqueued in a way the runner cannot run; ``str()`` names it and the fix."""


class Permanent(Exception):  # noqa: N818 - the contract's name: ``raise jobs.Permanent("why")``
    """Raised by a task to fail its job now, without retrying it: the job ends ``dead`` with this message."""


@dataclass(frozen=True)
class Task:
    """An evaluation step the runner runs as durable jobs; made by :func:`task`, registered by ``register_tasks``.

    Calling it runs the function directly (``await evaluate(job, ...)``), as a unit test may.
    """

    function: Callable[..., Coroutine[Any, Any, Any]]
    #: The name jobs store; the function's name unless ``@jobs.task(name=...)`` says otherwise.
    name: str
    max_attempts: int
    #: Seconds an attempt may run before it is cancelled and counted as failed; ``None``: no limit.
    timeout: float | None
    #: Attempts of this task that may run at once; ``None``: only the runner's global limit.
    concurrency: int | None
    #: Seconds before the first retry; retry ``n`` waits ``backoff * 2**(n-1)``, with jitter.
    backoff: float

    def __call__(self, job: Job, **kwargs: Any) -> Coroutine[Any, Any, Any]:
        return self.function(job, **kwargs)

    def bind(self, kwargs: Mapping[str, Any]) -> str:
        """The arguments as the JSON a job stores; :class:`TaskError` when they do not fit the task or JSON."""
        try:
            inspect.signature(self.function).bind(None, **kwargs)
        except TypeError as exc:
            raise TaskError(f"task {self.name}: {exc}; it is {self.name}{_shown(self.function)}") from None
        for name, value in kwargs.items():
            problem = json_problem(value)
            if problem is not None:
                raise TaskError(
                    f"task {self.name}: argument {name} is not JSON ({problem}); enqueue ids and plain values, "
                    "and read the rest from the database in the task"
                )
        return json.dumps(kwargs, allow_nan=False, separators=(",", ":"))


def _shown(function: Callable[..., Any]) -> str:
    try:
        return str(inspect.signature(function))
    except (TypeError, ValueError):
        return "(...)"


def json_problem(value: Any, depth: int = 0) -> str | None:
    """Why ``value`` would not come back from JSON as itself, or ``None``: what a job's arguments must survive."""
    if depth > 64:
        return "nested deeper than 64 levels"
    if value is None or isinstance(value, bool | str):
        return None
    if isinstance(value, int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value} is not a finite number"
    if isinstance(value, list):
        return next((p for item in value if (p := json_problem(item, depth + 1)) is not None), None)
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"the key {key!r} is a {type(key).__name__}, and JSON keys are strings"
            problem = json_problem(item, depth + 1)
            if problem is not None:
                return problem
        return None
    return f"a {type(value).__name__}; JSON holds None, bool, int, float, str, list and dict with str keys"


def task(
    function: Callable[..., Coroutine[Any, Any, Any]] | None = None,
    *,
    max_attempts: int = 3,
    timeout: float | None = 600.0,
    concurrency: int | None = None,
    backoff: float = 5.0,
    name: str | None = None,
) -> Any:
    """Make ``function`` (an ``async def`` taking the job first) a task; see :mod:`base_runner.jobs`."""

    def make(function: Callable[..., Coroutine[Any, Any, Any]]) -> Task:
        made = Task(
            function=function,
            name=name if name is not None else getattr(function, "__name__", repr(function)),
            max_attempts=max_attempts,
            timeout=timeout,
            concurrency=concurrency,
            backoff=backoff,
        )
        problem = task_problem(made)
        if problem is not None:
            raise TaskError(problem)
        return made

    return make if function is None else make(function)


def task_problem(candidate: Any) -> str | None:
    """Why ``candidate`` cannot be run as a task, naming it, or ``None``: the checks of registration and ``check``."""
    if not isinstance(candidate, Task):
        shown = getattr(candidate, "__qualname__", None) or type(candidate).__name__
        return f"{shown} is not a task: decorate it with @jobs.task (from base_runner import jobs)"
    name, function = candidate.name, candidate.function
    if not name or len(name) > MAX_NAME or not name.isprintable():
        return f"task name {name[:80]!r} must be 1 to {MAX_NAME} printable characters"
    if not inspect.iscoroutinefunction(function):
        return (
            f"task {name} is not async def: write it as `async def {name}(job, ...)`, "
            "and move blocking work to a thread"
        )
    if candidate.max_attempts < 1:
        return f"task {name}: max_attempts must be at least 1, got {candidate.max_attempts}"
    if candidate.timeout is not None and not (candidate.timeout > 0 and math.isfinite(candidate.timeout)):
        return f"task {name}: timeout must be a positive number of seconds or None, got {candidate.timeout}"
    if candidate.concurrency is not None and candidate.concurrency < 1:
        return f"task {name}: concurrency must be at least 1 or None, got {candidate.concurrency}"
    if not (candidate.backoff >= 0 and math.isfinite(candidate.backoff)):
        return f"task {name}: backoff must be a number of seconds >= 0, got {candidate.backoff}"
    parameters = list(inspect.signature(function).parameters.values())
    if not parameters or parameters[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        return f"task {name} must take the job as its first parameter: `async def {name}(job, ...)`"
    for parameter in parameters[1:]:
        if parameter.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.VAR_POSITIONAL):
            return f"task {name}: parameter {parameter.name} must be passable by keyword (jobs store keyword arguments)"
        if parameter.name in ENQUEUE_OPTIONS:
            return f"task {name}: parameter {parameter.name} clashes with enqueue's own {parameter.name}=; rename it"
    return None


def task_hints_problem(task: Task) -> str | None:
    """Why the task's annotations do not resolve (a name its module never imports), or ``None``: ``check``'s."""
    try:
        typing.get_type_hints(task.function)
    except Exception as exc:
        return f"task {task.name}: its annotations do not resolve ({type(exc).__name__}: {exc}); import what they name"
    return None


def describe_task(task: Task) -> str:
    """The task as ``check`` lists it: its signature and options."""
    timeout = "no timeout" if task.timeout is None else f"timeout {task.timeout:g}s"
    concurrency = "" if task.concurrency is None else f", concurrency {task.concurrency}"
    return (
        f"{task.name}{_shown(task.function)}: {plural(task.max_attempts, 'attempt')}, {timeout}{concurrency}, "
        f"backoff {task.backoff:g}s"
    )


def registry(found: Iterable[Any]) -> dict[str, Task]:
    """The tasks ``register_tasks`` returned, by name; :class:`TaskError` names the first that cannot be run."""
    tasks: dict[str, Task] = {}
    for candidate in found:
        problem = task_problem(candidate)
        if problem is not None:
            raise TaskError(f"register_tasks: {problem}")
        if candidate.name in tasks and tasks[candidate.name] is not candidate:
            raise TaskError(
                f"register_tasks: two tasks are named {candidate.name}; give one another name with @jobs.task(name=...)"
            )
        tasks[candidate.name] = candidate
    return tasks


def tasks_of(loaded: LoadedChallenge) -> dict[str, Task]:
    """The challenge's registered tasks, by name; :class:`~base_runner.errors.PluginError` names a bad one."""
    found: list[Any] = []
    for result in loaded.pm.hook.register_tasks():
        if result is None:
            continue
        found.extend(result if isinstance(result, list | tuple) else [result])
    try:
        return registry(found)
    except TaskError as exc:
        raise PluginError(f"challenge {loaded.challenge.describe()}: {exc}") from None
