"""The master's Docker broker: ``POST /v1/docker/run``, ``/cleanup`` and ``/list``, as BASE's executor calls them.

BASE 3.1's broker (``base.master.docker_broker``) reads the slug from
``X-Base-Challenge-Slug`` and labels containers ``base.*``; the seed's master speaks
the same paths with ``X-Platform-Challenge-Slug`` and ``platform.*``. With
``CHALLENGE_DOCKER_BROKER_MASTER=auto`` the first request sends 3.1's header, and a
broker that answers it with 400 for a missing slug is asked again, and from then on,
with the seed's.

The token is read from its file at each request (the master may rotate it), sent
only in the ``Authorization`` header, and never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

from .._core.logs import never_log
from .._core.secrets import AuthFailure, read_secret_file
from .backend import Prepared, tail
from .policy import CheckedMount
from .spec import BackendError, BackendUnavailable, Limits, RunResult
from .transport import drained, encode_mount, restore

log = logging.getLogger("base_runner")

#: Seconds the broker may take beyond the run's own timeout, as the template allows it.
GRACE = 15
#: Seconds for ``/cleanup``, ``/list`` and ``/health``.
SHORT = 30
#: The slug header and label prefix of each master.
MASTERS = {"base": ("X-Base-Challenge-Slug", "base"), "platform": ("X-Platform-Challenge-Slug", "platform")}


class Broker:
    """The broker at ``url``, as the challenge ``slug``, with the token ``token()`` returns."""

    kind = "broker"

    def __init__(self, url: str, slug: str, *, token: str | None, token_file: Path, master: str = "auto") -> None:
        self._url = url.rstrip("/")
        self._slug = slug
        self._token_value = token
        self._token_file = token_file
        never_log(token)
        self._auto = master == "auto"
        self.master = "base" if self._auto else master
        self._http = httpx.AsyncClient(timeout=SHORT)
        self._told_lost = False

    def _relabel(self, labels: Mapping[str, str]) -> dict[str, str]:
        """The runner's ``base.*`` labels under this master's prefix (``platform.*`` for the seed's)."""
        prefix = MASTERS[self.master][1]
        return {(f"{prefix}.{key[5:]}" if key.startswith("base.") else key): value for key, value in labels.items()}

    def _token(self) -> str | None:
        if self._token_value:
            return self._token_value
        try:
            return read_secret_file(self._token_file, kind="docker broker token")
        except AuthFailure as exc:
            raise BackendUnavailable(str(exc)) from None

    async def _post(self, path: str, payload: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        token = self._token()
        if not token:
            raise BackendUnavailable(
                "the Docker broker's token is missing: CHALLENGE_DOCKER_BROKER_TOKEN_FILE names no readable, "
                "non-empty file (the master mounts it at /run/secrets/base/docker_broker_token)"
            )
        while True:
            header = MASTERS[self.master][0]
            if "labels" in payload:
                payload = {**payload, "labels": self._relabel(payload["labels"])}
            try:
                response = await self._http.post(
                    f"{self._url}{path}",
                    json=payload,
                    headers={"Authorization": f"Bearer {token}", header: self._slug},
                    timeout=timeout,
                )
            except httpx.TimeoutException:
                raise
            except httpx.HTTPError as exc:
                raise BackendUnavailable(f"the Docker broker at {self._url} does not answer: {exc}") from None
            if response.status_code == 400 and self._auto and self.master == "base" and _missing_slug(response):
                log.info("executor: the Docker broker wants the seed master's slug header; using it from now on")
                self.master = "platform"
                continue
            return _answer(response, path)

    async def run(self, prepared: Prepared) -> RunResult:
        spec, limits = prepared.spec, prepared.spec.limits
        mounts = await asyncio.to_thread(lambda: [encode_mount(m) for m in prepared.mounts])
        # The broker's job_id labels the container (base.job) and is what /cleanup removes: this run's name.
        payload = {
            "job_id": prepared.name,
            "task_id": prepared.labels.get("base.task"),
            "image": spec.image,
            "image_pull_policy": spec.image_pull_policy,
            "command": list(spec.command),
            "workdir": spec.workdir,
            "env": dict(spec.env),
            "labels": dict(prepared.labels),
            "limits": _limits(limits),
            "mounts": mounts,
            "timeout_seconds": math.ceil(prepared.timeout),
        }
        try:
            data = await self._post("/v1/docker/run", payload, timeout=math.ceil(prepared.timeout) + GRACE)
        except httpx.TimeoutException:
            await asyncio.shield(self._cleanup(prepared.name))
            return RunResult(124, "", "the Docker broker did not answer within the run's timeout", True, prepared.name)
        except asyncio.CancelledError:
            # The broker keeps running the container until its own timeout unless told: tell it.
            await asyncio.shield(self._cleanup(prepared.name))
            raise
        stdout = str(data.get("stdout") or "")
        archives, stdout = drained(stdout)
        if archives:
            await asyncio.to_thread(_restore, archives, prepared.mounts)
        lost = [m.target for i, m in enumerate(prepared.mounts) if not m.read_only and i not in archives]
        if lost and not self._told_lost:
            # 3.1's broker mounts a folder of its own, deleted after the run, unless it sent the job to
            # another node: a challenge that reads its result from the mount finds nothing, and must hear why.
            self._told_lost = True
            log.warning(
                "executor: the Docker broker sent back nothing of the writable mount %s (BASE 3.1's broker "
                "sends a writable mount back only for a job it runs on another node, a GPU job): print the "
                "result on stdout and read it from result.stdout",
                ", ".join(lost),
            )
        try:
            returncode = int(data.get("returncode", -1))
        except (TypeError, ValueError):
            raise BackendError(f"the Docker broker answered a returncode that is not a number: {data!r:.200}") from None
        return RunResult(
            returncode=returncode,
            stdout=tail(stdout, prepared.log_limit),
            stderr=tail(str(data.get("stderr") or ""), prepared.log_limit),
            timed_out=bool(data.get("timed_out")),
            container_name=str(data.get("container_name") or prepared.name),
        )

    async def _cleanup(self, job_id: str) -> None:
        try:
            await self._post("/v1/docker/cleanup", {"job_id": job_id}, timeout=SHORT)
        except Exception as exc:
            log.warning("executor: the Docker broker did not remove the containers of %s: %s", job_id, exc)

    async def remove_stale(self, labels: Mapping[str, str], instance_label: str, instance: str) -> int:
        data = await self._post("/v1/docker/list", {}, timeout=SHORT)
        labels, instance_label = self._relabel(labels), next(iter(self._relabel({instance_label: ""})))
        stale = {
            str(item.get("job_id") or "")
            for item in data.get("containers") or []
            if isinstance(item, dict)
            and all((item.get("labels") or {}).get(key) == value for key, value in labels.items())
            and (item.get("labels") or {}).get(instance_label) != instance
        }
        stale.discard("")
        for job_id in stale:
            await self._cleanup(job_id)
        return len(stale)

    async def problem(self) -> str | None:
        try:
            response = await self._http.get(f"{self._url}/health", timeout=5)
        except httpx.HTTPError as exc:
            return f"the Docker broker at {self._url} does not answer: {exc}"
        if response.status_code >= 500:
            return f"the Docker broker at {self._url} answers /health with {response.status_code}"
        return None

    async def close(self) -> None:
        await self._http.aclose()


def _limits(limits: Limits) -> dict[str, Any]:
    # Every field, as the broker's BrokerLimits names them; tuples as JSON arrays.
    return {name: list(value) if isinstance(value, tuple) else value for name, value in asdict(limits).items()}


def _missing_slug(response: httpx.Response) -> bool:
    with contextlib.suppress(ValueError):
        return "slug" in str(response.json().get("detail", "")).lower()
    return False


def _answer(response: httpx.Response, path: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = str(body.get("detail", "")) if isinstance(body, dict) else response.text[:300]
    if response.status_code == 401:
        raise BackendError(
            f"the Docker broker refused the token (401: {detail}); check CHALLENGE_DOCKER_BROKER_TOKEN_FILE and that "
            "the challenge is registered with the docker_executor capability"
        )
    if response.status_code == 429:
        raise BackendError(f"the Docker broker is at this challenge's concurrency limit (429: {detail}); retry later")
    if response.status_code != 200 or not isinstance(body, dict):
        raise BackendError(f"the Docker broker answered {path} with {response.status_code}: {detail}")
    return body


def _restore(archives: Mapping[int, bytes], mounts: tuple[CheckedMount, ...]) -> None:
    for index, archive in archives.items():
        if index < len(mounts) and not mounts[index].read_only:
            restore(archive, mounts[index].source)
