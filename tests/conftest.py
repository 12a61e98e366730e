"""Real plugin packages, installed for real, and real runner processes.

Each plugin package is pip-installed once per session into a folder of its
own; a test chooses which challenges a ``base-runner`` process can see by
putting those folders on its ``PYTHONPATH``. The test process itself sees
all of them, for the in-process fixtures of ``base_runner.testing``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from filelock import FileLock

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {
    "example": ROOT / "plugins" / "example",
    "testbed": ROOT / "tests" / "plugins" / "testbed",
    "twin": ROOT / "tests" / "plugins" / "twin",
    "bounty": ROOT / "plugins" / "bounty",
}
IN_PROCESS = ("example", "testbed", "bounty")
#: The ``base-runner`` the tests run: set by :func:`_isolated_runner` to one that sees no installed challenge.
BASE_RUNNER = str(Path(sys.executable).with_name("base-runner"))
# Variables a developer's shell may hold that would change what the runner under test does.
_OUTSIDE = ("CHALLENGE_", "BASE_", "PLATFORM_", "PYTHONPATH")


#: Set to 1 to skip the image test (tests/test_image.py): it needs root, docker.io and debootstrap,
#: and leaves a cached Debian base behind (README.md, "Install and run the tests").
SKIP_IMAGE_TESTS = "BASE_RUNNER_SKIP_IMAGE_TESTS"


#: The modules that took longest (``--durations``), longest first. Under xdist each module runs on
#: one worker (``--dist loadscope``: a module's fixtures are made once), and modules start in this
#: order, then the rest: a long module started last would leave the other workers idle at the end.
#: A stale entry costs only time.
LONGEST_FIRST = (
    "test_image.py",
    "test_powercut.py",
    "test_plugins.py",
    "test_executor.py",
    "test_fuzz.py",
    "test_shutdown.py",
    "test_db_concurrency.py",
    "test_push_serve.py",
)


def _start_order(item: pytest.Item) -> int:
    name = item.path.name
    return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.environ.get(SKIP_IMAGE_TESTS, "") not in ("", "0"):
        # A skipif, placed first: pytest weighs every skipif before any skip, and the image
        # module's own skipif (no docker.io) would otherwise give its reason instead.
        skip = pytest.mark.skipif(True, reason=f"{SKIP_IMAGE_TESTS} is set")
        for item in items:
            if item.path.name == "test_image.py":
                item.add_marker(skip, append=False)
    # Stable: each module's tests stay together and in their order (--no-loadscope-reorder keeps it).
    items.sort(key=_start_order)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[Any]:
    """One private Docker engine for the whole session (each xdist worker has its own), started on first use.

    Skipped, with the reason, where dockerd or root is missing: .ci/install-image-tools installs docker.io.
    """
    from image_helpers import DOCKER, DOCKERD, engine

    missing = [tool for tool in (DOCKER, DOCKERD) if not os.access(tool, os.X_OK)]
    if missing or os.geteuid() != 0:
        pytest.skip(f"needs root and {', '.join(missing) or 'nothing else'} (.ci/install-image-tools installs them)")
    with engine() as started:
        yield started


def install(source: Path, target: Path) -> Path:
    """pip-install the package at ``source`` into the folder ``target``, as a real wheel install."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    return target


def made_once(factory: pytest.TempPathFactory, name: str, make: Callable[[Path], None]) -> Path:
    """The folder ``name``, filled by ``make`` once per test run, whatever the number of xdist workers.

    Each xdist worker has a base temp folder of its own under the run's: the first worker to take
    the lock makes the folder there, and the others wait for it and use it as it is.
    """
    if "PYTEST_XDIST_WORKER" not in os.environ:
        folder = factory.mktemp(name)
        make(folder)
        return folder
    run = factory.getbasetemp().parent
    folder, made = run / name, run / f"{name}.made"
    with FileLock(run / f"{name}.lock"):
        if not made.exists():
            # What a worker that failed half-way left.
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            made.touch()
    return folder


def _install_all(root: Path) -> None:
    # Installs build in the package's own folder (setuptools' build/): never two of the same package at once.
    with ThreadPoolExecutor(max_workers=len(PACKAGES)) as pool:
        list(pool.map(lambda name: install(PACKAGES[name], root / name), PACKAGES))


#: Where a pytest run that a test starts (tests/test_plugins.py) finds the packages its parent installed.
SITES_FROM = "BASE_RUNNER_TEST_SITES"


@pytest.fixture(scope="session")
def sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each test plugin package installed into a site folder of its own, once per run."""
    given = os.environ.get(SITES_FROM)
    root = Path(given) if given else made_once(tmp_path_factory, "sites", _install_all)
    return {name: root / name for name in PACKAGES}


def _challenge_files(site: Path) -> set[str]:
    """The top-level names in ``site`` that belong to distributions declaring a challenge."""
    owned = set()
    for dist in importlib.metadata.distributions(path=[str(site)]):
        if not dist.entry_points.select(group="base_runner"):
            continue
        owned.update(Path(file).parts[0] for file in dist.files or [] if not str(file).startswith(".."))
    return owned


def linked_venv(venv: Path) -> tuple[Path, Path]:
    """A venv at ``venv`` that sees this interpreter's packages, but the installed challenges.

    Its site-packages links to every entry of ours except the challenges' files.

    :returns: its python and its site-packages folder.
    """
    ours = Path(sysconfig.get_paths()["purelib"])
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    where = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    theirs = Path(subprocess.check_output([python, "-c", where], text=True).strip())
    hidden = _challenge_files(ours)
    for entry in ours.iterdir():
        if entry.name not in hidden:
            (theirs / entry.name).symlink_to(entry)
    return python, theirs


@pytest.fixture(scope="session", autouse=True)
def _isolated_runner(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Run the runner from an interpreter that sees this one's packages but no installed challenge.

    A challenge installed into the test environment (the README's first command puts the example
    there) would otherwise be visible to every runner process, whatever ``sites`` a test passes.
    """
    global BASE_RUNNER
    venv = tmp_path_factory.mktemp("runner") / "venv"
    python, _site = linked_venv(venv)
    script = venv / "bin" / "base-runner"
    # As pip writes console scripts: a process spawned by multiprocessing (uvicorn's reloader) imports it too.
    script.write_text(
        f"#!{python}\nimport sys\n\nfrom base_runner._cli.cli import main\n\n"
        "if __name__ == '__main__':\n    sys.exit(main())\n"
    )
    script.chmod(0o755)
    BASE_RUNNER = str(script)


@pytest.fixture(scope="session", autouse=True)
def _visible_in_process(sites: dict[str, Path]) -> None:
    # Not the twin: its slug clashes with the example's on purpose.
    for name in IN_PROCESS:
        if str(sites[name]) not in sys.path:
            sys.path.insert(0, str(sites[name]))
    importlib.invalidate_caches()


@pytest.fixture
def challenge_slug() -> str:
    return "example"


def clean_env(sites: list[Path] | None = None, **extra: str) -> dict[str, str]:
    """The environment for a runner process that sees exactly ``sites``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OUTSIDE)}
    env["PYTHONPATH"] = os.pathsep.join(str(s) for s in sites or [])
    env.update(extra)
    return env


def run_cli(
    *args: str, sites: list[Path] | None = None, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BASE_RUNNER, *args], env=clean_env(sites, **env), capture_output=True, text=True, timeout=timeout
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: One line of a runner's log: its JSON object, or the line itself when it is not one.
LogRecord = dict[str, Any] | str
#: The levels of a record that says something went wrong (``JsonFormatter`` writes ``levelname``).
ALARM_LEVELS = frozenset({"ERROR", "CRITICAL"})


def log_records(text: str) -> list[LogRecord]:
    """Each line of ``text`` (a runner's stderr, JSON off a terminal) parsed.

    A line that is not a JSON object stays a string: a raw traceback printed
    outside the logging setup, or the CLI's one-line error, is still seen.
    """
    records: list[LogRecord] = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        records.append(record if isinstance(record, dict) else line)
    return records


def logged(records: list[LogRecord], text: str, level: str | None = None) -> list[dict[str, Any]]:
    """The records whose message contains ``text``, only those at ``level`` when it is given."""
    return [
        r for r in records if isinstance(r, dict) and text in r["message"] and (level is None or r["level"] == level)
    ]


def tracebacks(records: list[LogRecord]) -> list[LogRecord]:
    """Every traceback: a record's ``exception`` or one in its message, or a raw one outside the log."""
    return [
        r
        for r in records
        if (isinstance(r, str) and "Traceback" in r)
        or (isinstance(r, dict) and ("exception" in r or "Traceback (most recent call last)" in r["message"]))
    ]


def alarms(records: list[LogRecord]) -> list[LogRecord]:
    """What says something went wrong: a record at ERROR or above or with a traceback, a line that is not JSON."""
    return [r for r in records if isinstance(r, str) or r["level"] in ALARM_LEVELS or "exception" in r]


def eventually(check: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    """``check()``'s first true result, polled until ``timeout`` seconds have passed; then an AssertionError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Served:
    """A running ``base-runner serve`` process."""

    proc: subprocess.Popen[str]
    url: str
    log: Path

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, **kwargs)  # type: ignore[arg-type]

    def output(self) -> str:
        return self.log.read_text()

    def records(self) -> list[LogRecord]:
        """Its log so far, line by line, as :func:`log_records` parses it."""
        return log_records(self.output())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


#: The master token ``start_server`` configures unless the test configures its own.
SERVE_TOKEN = "serve-test-token"


def start_server(args: list[str], sites: list[Path], log: Path, wait: bool = True, **env: str) -> Served:
    """Start ``base-runner serve`` on a free loopback port; by default wait for ``/health``.

    Without a token of the test's own (``CHALLENGE_SHARED_TOKEN[_FILE]``) it
    gets :data:`SERVE_TOKEN`, as the master always mounts one.
    """
    if "CHALLENGE_SHARED_TOKEN" not in env and "CHALLENGE_SHARED_TOKEN_FILE" not in env:
        env["CHALLENGE_SHARED_TOKEN"] = SERVE_TOKEN
    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [BASE_RUNNER, "serve", "--host", "127.0.0.1", "--port", str(port), *args],
            env=clean_env(sites, **env),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    served = Served(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 30
    while wait:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited with {proc.returncode}:\n{served.output()}")
        try:
            if httpx.get(served.url + "/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            served.stop(signal.SIGKILL)
            raise AssertionError(f"serve did not answer /health in 30 s:\n{served.output()}")
        time.sleep(0.05)
    return served


@pytest.fixture
def server(tmp_path: Path) -> Iterator[object]:
    """Start servers with ``server(args, sites, **env)``; every one still running is killed at the end."""
    started: list[Served] = []

    def start(args: list[str], sites: list[Path], wait: bool = True, **env: str) -> Served:
        served = start_server(args, sites, tmp_path / f"serve-{len(started)}.log", wait, **env)
        started.append(served)
        return served

    yield start
    for served in started:
        if served.proc.poll() is None:
            served.proc.kill()
            served.proc.wait()
