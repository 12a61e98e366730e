"""Whether the runner is ready: the checks that change on their own, re-run when asked, and the write gate."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from starlette.responses import Response

from .._core.auth import MasterAuth, token_problem
from .._core.errors import describe
from .._core.runtime import Runtime
from .._core.wire import error_response
from .._storage import schema

if TYPE_CHECKING:
    from .._storage.db import Database
    from .._storage.dbfile import DatabaseFile

log = logging.getLogger("base_runner")

#: Seconds a health probe waits for the database before calling it unhealthy.
PROBE_TIMEOUT = 3.0
#: A write refused for not being ready probes again at most this often, in seconds.
GATE_REPROBE_INTERVAL = 1.0


class Readiness:
    """The runtime's checks of the database, its file, the schema and the master's token, brought up to date."""

    def __init__(self, runtime: Runtime, db: Database, dbfile: DatabaseFile, auth: MasterAuth) -> None:
        self._runtime = runtime
        self._db = db
        self._dbfile = dbfile
        self._last_gate_probe = 0.0
        runtime.probes["disk:file"] = self._file_problem
        runtime.probes["disk:space"] = dbfile.space_problem
        runtime.probes["auth:token"] = lambda: token_problem(auth)
        # Without its token the master cannot pull: not ready for it, but no reason to refuse a miner's write.
        runtime.declare("auth", guards_writes=False)

    def _file_problem(self) -> str | None:
        reason = self._dbfile.identity_problem()
        if reason is not None and self._runtime.fatal is None:
            self._db.refusal = f"{reason}; the runner takes no more writes and stops"
            self._runtime.fail(reason)
        return reason

    async def watch_disk(self, interval: float) -> None:
        """Probe every ``interval`` seconds, so that a lost or full disk is seen without a request."""
        while True:
            await asyncio.sleep(interval)
            self._runtime.probe()

    async def check_schema(self, at_startup: bool) -> None:
        """Compare the tables with the models; at startup, log each drift."""
        runtime = self._runtime
        runtime.report("schema", None)
        for number, drift in enumerate(await schema.check(self._db.read_engine)):
            if drift.blocking:
                runtime.report("schema", drift.line, key=str(number))
            if at_startup:
                log.log(logging.ERROR if drift.blocking else logging.WARNING, "schema drift: %s", drift.line)
        drifted = any(key.startswith("schema:") for key in runtime.problems)
        runtime.mark("schema", "drift" if drifted else "ok", ok=not drifted)

    async def probe(self) -> None:
        """Bring the checks that can change on their own up to date: the parts' probes, schema drift, the database."""
        runtime = self._runtime
        runtime.probe()
        if runtime.failing("schema"):
            await self.check_schema(at_startup=False)  # the operator may have applied the fix since
        try:
            await asyncio.wait_for(self._db.ping(), PROBE_TIMEOUT)
        except Exception as exc:
            shown = f"no answer in {PROBE_TIMEOUT:g} s" if isinstance(exc, TimeoutError) else describe(exc)
            runtime.report("database", f"the database does not answer: {shown}")
        else:
            runtime.report("database", None)

    async def write_gate(self) -> Response | None:
        """The refusal of a request that may write while the runner is not ready; ``None`` lets it through."""
        runtime = self._runtime
        blockers = runtime.write_blockers()
        if blockers and time.monotonic() - self._last_gate_probe >= GATE_REPROBE_INTERVAL:
            self._last_gate_probe = time.monotonic()
            await self.probe()
            blockers = runtime.write_blockers()
        if not blockers:
            return None
        return error_response(
            503,
            "runtime_not_ready",
            f"challenge {runtime.challenge} is not ready ({', '.join(blockers)}), so it takes no writes; "
            "GET /ready says when it is",
            headers={"Retry-After": "5"},
        )
