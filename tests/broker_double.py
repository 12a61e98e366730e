"""A stand-in for the master's Docker broker, written from BASE 3.1's ``base.master.docker_broker``, over real HTTP.

``POST /v1/docker/run``, ``/v1/docker/cleanup``, ``/v1/docker/list`` and ``GET /health``:
the bearer token compared in constant time (401), the slug header (400 when missing),
the hardening the broker demands (403 for privileged, 400 for the rest), its image
allowlist, mount archives unpacked with their members checked, containers run on a
real engine with ``docker run`` as the broker runs them and labelled
``<prefix>.challenge`` and ``<prefix>.job``, output tails of 64,000 bytes, 124 on a
timeout, and, for a job with ``gpu_count`` only, each writable mount drained back into stdout
between the sentinels of BASE's ``mount_transport``: 3.1's broker sends GPU jobs to another node
and drains them (``SwarmBrokerService._is_cross_node``); a CPU job's writable mount is a folder of
the broker's that it deletes after the run, so nothing of it comes back. ``flavor="platform"`` is the
seed master's broker: ``X-Platform-Challenge-Slug`` and ``platform.*`` labels.

It records every request (path, headers, body), and :meth:`BrokerDouble.refuse_next`
makes the next run answer a status of the test's choosing (401, 429, ...).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import io
import json
import os
import subprocess
import tarfile
import tempfile
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from master_double import Refused, _Server

DOCKER = "/usr/bin/docker"
LOG_LIMIT = 64_000
FLAVORS = {"base": "X-Base-Challenge-Slug", "platform": "X-Platform-Challenge-Slug"}


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class BrokerDouble:
    def __init__(
        self, engine_env: Mapping[str, str], tokens: Mapping[str, str], allowed_images: tuple[str, ...], flavor: str
    ) -> None:
        self.env = dict(engine_env)
        self.tokens = dict(tokens)
        self.allowed = allowed_images
        self.prefix = flavor
        self.header = FLAVORS[flavor]
        self.requests: list[Request] = []
        self._refusals: deque[tuple[int, str]] = deque()
        self._server: _Server | None = None
        self.workspace = Path(tempfile.mkdtemp(prefix="broker-double-"))

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def refuse_next(self, status: int, detail: str) -> None:
        self._refusals.append((status, detail))

    def start(self) -> BrokerDouble:
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._send(200, {"status": "ok"} if self.path == "/health" else {"detail": "Not Found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    self._send(422, {"detail": "invalid JSON"})
                    return
                double.requests.append(Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                try:
                    slug = double._authenticate(self.headers.get(double.header), self.headers.get("authorization"))
                    if self.path == "/v1/docker/run":
                        answer = double._run(slug, body)
                    elif self.path == "/v1/docker/cleanup":
                        answer = double._cleanup(slug, str(body["job_id"]))
                    elif self.path == "/v1/docker/list":
                        answer = double._list(slug, body.get("job_id"))
                    else:
                        raise Refused(404, "Not Found")
                except Refused as refused:
                    self._send(refused.status, {"detail": refused.detail})
                    return
                self._send(200, answer)

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass

        self._server = _Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for container in self._docker("ps", "-aq", "--filter", f"label={self.prefix}.challenge").stdout.split():
            self._docker("rm", "-f", container)
        subprocess.run(["rm", "-rf", str(self.workspace)], check=False)

    # -- the broker ---------------------------------------------------------------------------------

    def _authenticate(self, slug: str | None, authorization: str | None) -> str:
        if not slug:
            raise Refused(400, "missing challenge slug")
        expected = self.tokens.get(slug)
        if not expected:
            raise Refused(401, "unknown challenge")
        if authorization is None or not hmac.compare_digest(authorization, f"Bearer {expected}"):
            raise Refused(401, "invalid broker token")
        return slug

    def _run(self, slug: str, request: dict[str, Any]) -> dict[str, Any]:
        if self._refusals:
            raise Refused(*self._refusals.popleft())
        limits = request.get("limits") or {}
        if limits.get("privileged"):
            raise Refused(403, "privileged broker jobs require the allowlisted escape hatch")
        if limits.get("read_only") is not True or limits.get("init") is not True:
            raise Refused(400, "broker Docker jobs require a read-only root filesystem and Docker init")
        if "ALL" not in limits.get("cap_drop", ()) or not any(
            opt.startswith("no-new-privileges") for opt in limits.get("security_opt", ())
        ):
            raise Refused(400, "broker Docker jobs must drop all Linux capabilities and set no-new-privileges")
        image = request["image"]
        if not any(image == item or image.startswith(item.rstrip("*")) for item in self.allowed):
            raise Refused(400, f"Docker image is not allowed: {image}")
        job_id = str(request["job_id"])
        with tempfile.TemporaryDirectory(dir=self.workspace) as workspace:
            mounts = [self._materialize(Path(workspace), index, m) for index, m in enumerate(request.get("mounts", []))]
            name = f"{slug}-{job_id}"[:120]
            labels = {**request.get("labels", {}), f"{self.prefix}.challenge": slug, f"{self.prefix}.job": job_id}
            command = [DOCKER, "run", "--rm", "--name", name, "--network", limits["network"]]
            command += ["--cpus", str(limits["cpus"]), "--memory", limits["memory"]]
            command += ["--pids-limit", str(limits["pids_limit"]), "--init", "--read-only"]
            if limits.get("memory_swap"):
                command += ["--memory-swap", limits["memory_swap"]]
            for option, values in (("--cap-drop", "cap_drop"), ("--security-opt", "security_opt")):
                for value in limits[values]:
                    command += [option, value]
            for option, values in (("--tmpfs", "tmpfs"), ("--ulimit", "ulimits")):
                for value in limits[values]:
                    command += [option, value]
            for source, target, read_only in mounts:
                command += ["-v", f"{source}:{target}:{'ro' if read_only else 'rw'}"]
            if request.get("workdir"):
                command += ["-w", request["workdir"]]
            for key, value in request.get("env", {}).items():
                command += ["-e", f"{key}={value}"]
            for key, value in labels.items():
                command += ["--label", f"{key}={value}"]
            command += [image, *request["command"]]
            try:
                done = subprocess.run(
                    command, env=self.env, capture_output=True, timeout=request["timeout_seconds"], check=False
                )
                out, err, code, timed_out = done.stdout, done.stderr, done.returncode, False
            except subprocess.TimeoutExpired as expired:
                out, err, code, timed_out = expired.stdout or b"", expired.stderr or b"", 124, True
            finally:
                self._docker("rm", "-f", name)
            stdout = out[-LOG_LIMIT:].decode(errors="replace")
            if limits.get("gpu_count"):
                for index, (source, _, read_only) in enumerate(mounts):
                    if not read_only:
                        stdout += _drain_section(index, source)
        return {
            "container_name": name,
            "stdout": stdout,
            "stderr": err[-LOG_LIMIT:].decode(errors="replace"),
            "returncode": code,
            "timed_out": timed_out,
        }

    def _materialize(self, root: Path, index: int, mount: dict[str, Any]) -> tuple[Path, str, bool]:
        mount_root = root / f"mount-{index}"
        mount_root.mkdir()
        try:
            archive = base64.b64decode(mount["archive_b64"], validate=True)
            with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
                for member in tar.getmembers():
                    path = Path(member.name)
                    if path.is_absolute() or ".." in path.parts or member.issym() or member.islnk() or member.isdev():
                        raise Refused(400, "unsafe mount archive")
                tar.extractall(mount_root, filter="data")
        except (binascii.Error, tarfile.TarError, ValueError, OSError):
            raise Refused(400, "invalid mount archive") from None
        read_only = bool(mount.get("read_only", True))
        if mount.get("source_type") == "file":
            return mount_root / mount["source_name"], mount["target"], read_only
        if not read_only:
            os.chmod(mount_root, 0o1777)
        return mount_root, mount["target"], read_only

    def _cleanup(self, slug: str, job_id: str) -> dict[str, Any]:
        filters = ["--filter", f"label={self.prefix}.challenge={slug}", "--filter", f"label={self.prefix}.job={job_id}"]
        for container in self._docker("ps", "-aq", *filters).stdout.split():
            self._docker("rm", "-f", container)
        return {"status": "ok"}

    def _list(self, slug: str, job_id: str | None) -> dict[str, Any]:
        filters = ["--filter", f"label={self.prefix}.challenge={slug}"]
        if job_id:
            filters += ["--filter", f"label={self.prefix}.job={job_id}"]
        listed = self._docker("ps", "-a", *filters, "--format", "{{json .}}").stdout.splitlines()
        containers = []
        for line in listed:
            item = json.loads(line)
            labels = dict(pair.split("=", 1) for pair in item["Labels"].split(",") if "=" in pair)
            containers.append(
                {
                    "container_id": item["ID"],
                    "container_name": item["Names"],
                    "image": item["Image"],
                    "status": item["Status"],
                    "job_id": labels.get(f"{self.prefix}.job"),
                    "labels": {k: v for k, v in labels.items() if k.startswith(f"{self.prefix}.")},
                }
            )
        return {"containers": containers}

    def _docker(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([DOCKER, *args], env=self.env, capture_output=True, text=True, timeout=60, check=False)


def _drain_section(index: int, folder: Path) -> str:
    """What the broker's bootstrap prints for a writable mount: ``tar -czf - -C <target> . | base64`` in sentinels."""
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w:gz") as tar:
        tar.add(folder, arcname=".")
    body = base64.encodebytes(stream.getvalue()).decode("ascii")
    return f"@@BASE_BROKER_MOUNT_OUT[{index}]:BEGIN@@\n{body}@@BASE_BROKER_MOUNT_OUT[{index}]:END@@\n"
