"""A power cut loses nothing the runner acknowledged: real ``serve`` processes on a filesystem that forgets.

The data dir is a FUSE mount that keeps only what was fsynced (its model:
tests/forgetfs.py; the model itself: tests/test_forgetfs.py). Clients upload
entries to the ``powercut`` test challenge (a file under ``uploads/`` and a
row each), the runner pushes the weights they make to the master double, and
the power is cut: the runner is killed (SIGKILL), every unsynced change is
dropped, and what survived is mounted again. Then every acknowledged row,
file and push (the ledger holds the bytes the master acknowledged) must be
there, ``PRAGMA integrity_check`` must pass, the runner's record must be
readable, and the runner must start again on it.

Cuts fall at random points (the seed is in every failure message): in the
first seconds of fresh data dirs, and over one data dir carried across cuts.
The control, ``synchronous=NORMAL``, shows the filesystem is strict enough to
make a runner lose acknowledged rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx
import pytest
from conftest import Served, eventually, logged, run_cli, start_server
from forgetfs import ForgetfulFs, forgetful_fs, unavailable
from master_double import MasterDouble

from base_runner import executor, storage
from base_runner._storage.datadir import DataDirLock

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=unavailable() or "")

SLUG = "powercut"
TOKEN = "powercut-master-token"
RECORD = ".base-runner-db.json"
#: 20 cuts in all, each at a random point; a few minutes on two busy cores, mostly the runner starting.
FRESH_CUTS = 8
CARRIED_CUTS = 12
SEED = int(os.environ.get("BASE_RUNNER_POWERCUT_SEED", random.randrange(1 << 32)))


@dataclass
class Acknowledged:
    """What the runner answered 2xx for: entries by (hotkey, number), with their file's SHA-256."""

    entries: dict[tuple[str, int], str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Clients:
    """Threads that upload entries to a runner until stopped, each under a hotkey of its own."""

    def __init__(self, url: str, acknowledged: Acknowledged, count: int, rng: random.Random, first: int) -> None:
        self.url = url
        self.acknowledged = acknowledged
        self.stopping = threading.Event()
        self.rng = random.Random(rng.random())
        self._threads = [
            threading.Thread(target=self._run, args=(f"5Hk{chr(ord('A') + n)}", first), daemon=True)
            for n in range(count)
        ]

    def __enter__(self) -> Clients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join(15)

    def _run(self, hotkey: str, number: int) -> None:
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while not self.stopping.is_set():
                number += 1  # a number the cut may have left half-written is never reused
                data = os.urandom(self.rng.randrange(1, 48 * 1024))
                try:
                    response = client.post(f"/entries/{hotkey}/{number}", files={"artifact": ("a.bin", data)})
                except httpx.TransportError:
                    time.sleep(0.05)  # not up yet, or killed
                    continue
                if response.status_code == 201:
                    with self.acknowledged.lock:
                        self.acknowledged.entries[(hotkey, number)] = hashlib.sha256(data).hexdigest()


@dataclass
class Survey:
    """What one cut lost, by kind."""

    entries_lost: list[tuple[str, int]] = field(default_factory=list)
    rows_lost: list[tuple[str, int]] = field(default_factory=list)
    files_lost: list[tuple[str, int]] = field(default_factory=list)
    jobs_lost: list[tuple[str, int]] = field(default_factory=list)
    #: Entries graded by their job, whose result file is missing.
    results_lost: list[tuple[str, int]] = field(default_factory=list)
    pushes_lost: list[tuple[int, int]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def copied(mount: Path, name: str, into: Path) -> Path | None:
    """A copy of the SQLite file ``name`` on the mount with its WAL, read without touching the original."""
    if not (mount / name).exists():
        return None
    into.mkdir(parents=True, exist_ok=True)
    target = into / Path(name).name
    for suffix in ("", "-wal"):
        if (mount / (name + suffix)).exists():
            shutil.copyfile(mount / (name + suffix), into / (target.name + suffix))
    return target


def survey(mount: Path, acknowledged: Acknowledged, master: MasterDouble | None, scratch: Path) -> Survey:
    """Compare what survived on ``mount`` with what was acknowledged."""
    found = Survey()
    if scratch.exists():
        shutil.rmtree(scratch)
    with acknowledged.lock:
        entries = dict(acknowledged.entries)
    rows: dict[tuple[str, int], str] = {}
    graded: list[tuple[str, int]] = []
    job_keys: set[str] = set()
    database = copied(mount, "challenge.sqlite3", scratch / "db")
    if database is not None:
        conn = sqlite3.connect(database)
        try:
            (check,) = conn.execute("PRAGMA integrity_check").fetchone()
            if check != "ok":
                found.problems.append(f"integrity_check: {check}")
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'powercut_entries'").fetchone():
                for hotkey, number, digest, done in conn.execute(
                    "SELECT hotkey, number, sha256, graded FROM powercut_entries"
                ):
                    rows[(hotkey, number)] = digest
                    if done:
                        graded.append((hotkey, number))
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'base_runner_jobs'").fetchone():
                job_keys = {key for (key,) in conn.execute("SELECT key FROM base_runner_jobs")}
        finally:
            conn.close()
    for key, digest in entries.items():
        if rows.get(key) != digest:
            found.rows_lost.append(key)
        file = mount / "uploads" / key[0] / f"{key[1]}.bin"
        if not file.exists() or hashlib.sha256(file.read_bytes()).hexdigest() != digest:
            found.files_lost.append(key)
        if f"entry:{key[0]}:{key[1]}" not in job_keys:
            found.jobs_lost.append(key)
        if key in found.rows_lost or key in found.files_lost or key in found.jobs_lost:
            found.entries_lost.append(key)
    found.results_lost = [key for key in graded if not (mount / "results" / key[0] / f"{key[1]}.json").exists()]
    record = mount / RECORD
    if record.exists():
        try:
            shown = json.loads(record.read_text())
            assert isinstance(shown, dict) and shown.get("database")
        except (ValueError, AssertionError):
            found.problems.append(f"the record is unreadable: {record.read_bytes()!r}")
    elif entries:
        found.problems.append("the record is missing, though writes were acknowledged")
    if master is not None:
        found.pushes_lost = pushes_lost(mount, master, scratch / "ledger")
    return found


def pushes_lost(mount: Path, master: MasterDouble, scratch: Path) -> list[tuple[int, int]]:
    """The (epoch, revision) of each push the master acknowledged whose bytes the ledger does not hold."""
    with master._lock:
        answered = [r for r in master.received if r.status == 200]
    ledger: dict[tuple[int, int], bytes] = {}
    copy = copied(mount, ".base-runner/push.sqlite3", scratch)
    if copy is not None:
        conn = sqlite3.connect(copy)
        try:
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'pushes'").fetchone():
                ledger = {(e, r): bytes(b) for e, r, b in conn.execute("SELECT epoch, revision, body FROM pushes")}
        finally:
            conn.close()
    lost = []
    for push in answered:
        sent = json.loads(push.body)
        key = (sent["epoch"], sent["revision"])
        if ledger.get(key) != push.body:
            lost.append(key)
    return lost


def conflicts(master: MasterDouble) -> list[tuple[int, int]]:
    """Each (epoch, revision) the master received two different payloads under: a ledger forgot one."""
    return [key for key, digests in master.payloads(SLUG).items() if len(digests) > 1]


class Rig:
    """The runners on one forgetful data dir, killed before it is cut or unmounted."""

    def __init__(self, fs: ForgetfulFs, sites: dict[str, Path], logs: Path, master: MasterDouble | None) -> None:
        self.fs = fs
        self.sites = sites
        self.logs = logs
        self.master = master
        self.runners: list[Served] = []
        # A job running at the cut runs again a second after the restart.
        self.env: dict[str, str] = {"CHALLENGE_SHARED_TOKEN": TOKEN, "CHALLENGE_JOBS_LEASE": "1"}
        if master is not None:
            self.env.update(
                CHALLENGE_MASTER_BASE_URL=master.url,
                CHALLENGE_EPOCH_SECONDS="1000000",
                CHALLENGE_PUSH_INTERVAL="0.1",
            )

    def start(self, wait: bool = True, **env: str) -> Served:
        served = start_server(
            ["--challenge", SLUG, "--data-dir", str(self.fs.mount)],
            [self.sites["testbed"]],
            self.logs / f"serve-{self.fs.mount.parent.name}-{len(self.runners)}.log",
            wait,
            **{**self.env, **env},
        )
        self.runners.append(served)
        return served

    def kill(self) -> None:
        for served in self.runners:
            if served.proc.poll() is None:
                served.proc.kill()
            served.proc.wait()

    def cut(self) -> None:
        """The power cut: the runner dies with the machine, and only what was synced is there afterwards."""
        self.kill()
        self.fs.cut()


@contextmanager
def rig(folder: Path, sites: dict[str, Path], master: MasterDouble | None) -> Iterator[Rig]:
    folder.mkdir(parents=True, exist_ok=True)
    with forgetful_fs(folder) as fs:
        mounted = Rig(fs, sites, folder, master)
        try:
            yield mounted
        finally:
            mounted.kill()  # before the unmount, which a process holding a file would keep busy


@contextmanager
def master_double() -> Iterator[MasterDouble]:
    double = MasterDouble(tokens={SLUG: TOKEN}).start()
    try:
        yield double
    finally:
        double.release.set()
        if double._server is not None:
            double.stop()


def at_least(acknowledged: Acknowledged, count: int) -> None:
    eventually(lambda: len(acknowledged.entries) >= count, f"{count} acknowledged entries", 60)


def upload(served: Served, hotkey: str, number: int, acknowledged: Acknowledged) -> None:
    data = os.urandom(1000 + number)
    with served.client() as client:
        response = client.post(f"/entries/{hotkey}/{number}", files={"artifact": ("a.bin", data)})
    assert response.status_code == 201, response.text
    acknowledged.entries[(hotkey, number)] = hashlib.sha256(data).hexdigest()


def test_storage_writes_and_the_lock_are_durable_the_folders_they_create_included(tmp_path: Path) -> None:
    with forgetful_fs(tmp_path) as fs:
        storage.configure(fs.mount)
        storage.write_bytes(storage.path("uploads", "5HkA", "1.bin"), b"first")
        # A folder a killed process created and never synced: the next write makes it durable too.
        (fs.mount / "artifacts").mkdir()
        storage.write_text(storage.path("artifacts", "notes.txt"), "second")
        lock = DataDirLock(fs.mount)
        lock.acquire(wait=0)
        lock.release()
        fs.cut()
        assert (fs.mount / "uploads" / "5HkA" / "1.bin").read_bytes() == b"first"
        assert (fs.mount / "artifacts" / "notes.txt").read_text() == "second"
        assert (fs.mount / ".base-runner.lock").exists()
        assert sorted(os.listdir(fs.mount)) == [".base-runner.lock", "artifacts", "uploads"], "no temporary file left"


def test_the_backup_db_exec_makes_survives_a_cut(tmp_path: Path) -> None:
    with forgetful_fs(tmp_path) as fs:
        conn = sqlite3.connect(fs.mount / "challenge.sqlite3")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE scores (hotkey TEXT)")
        conn.execute("INSERT INTO scores VALUES ('5HkA')")
        conn.commit()
        conn.close()
        result = run_cli(
            "db", "exec", "--data-dir", str(fs.mount), "ALTER TABLE scores ADD COLUMN score REAL", sites=[]
        )
        assert result.returncode == 0, result.stderr
        fs.cut()
        # Only the backup: a journal of its copy left beside it would roll it back when it is opened.
        (backup,) = (fs.mount / "backups").iterdir()
        copy = sqlite3.connect(backup)
        try:
            assert copy.execute("SELECT * FROM scores").fetchall() == [("5HkA",)], "the database before the change"
        finally:
            copy.close()


@pytest.fixture
def forgetful(tmp_path: Path) -> Iterator[ForgetfulFs]:
    with forgetful_fs(tmp_path) as fs:
        yield fs


@pytest.fixture
def challenge_data_dir(forgetful: ForgetfulFs) -> Path:
    """The in-process fixtures' data dir (``base_runner.testing``), on the forgetful filesystem."""
    return forgetful.mount


@pytest.mark.anyio
async def test_what_a_run_writes_into_its_writable_mount_is_durable_once_the_run_returns(
    forgetful: ForgetfulFs, executor_recorder
) -> None:
    # Created as a challenge would before the run; the container writes into it, and syncs nothing.
    (forgetful.mount / "out" / "42").mkdir(parents=True)

    def container(run) -> executor.RunResult:  # type: ignore[no-untyped-def]
        (run.mounts["/out"] / "scores").mkdir()
        (run.mounts["/out"] / "scores" / "final.json").write_text('{"score": 0.9}')
        return executor.RunResult(0, "", "")

    executor_recorder.allowed_images = ("harness:1",)
    executor_recorder.reply(container)
    result = await executor.run(
        executor.RunSpec(
            image="harness:1", command=("eval",), mounts=(executor.Mount("out/42", "/out", read_only=False),)
        )
    )
    assert result.returncode == 0
    forgetful.cut()
    assert (forgetful.mount / "out" / "42" / "scores" / "final.json").read_text() == '{"score": 0.9}'


# -- each loss of issue 25, on a fresh data dir: failed before the fix


def test_files_uploaded_on_a_fresh_data_dir_survive_a_cut(sites: dict[str, Path], tmp_path: Path) -> None:
    acknowledged = Acknowledged()
    with rig(tmp_path, sites, None) as runners:
        served = runners.start()
        for number in range(1, 4):
            upload(served, "5HkA", number, acknowledged)
        runners.cut()
        lost = survey(runners.fs.mount, acknowledged, None, tmp_path / "scratch")
        assert (lost.files_lost, lost.rows_lost, lost.jobs_lost, lost.problems) == ([], [], [], [])


def test_the_push_ledger_keeps_what_the_master_acknowledged_through_a_cut(
    sites: dict[str, Path], tmp_path: Path
) -> None:
    acknowledged = Acknowledged()
    with master_double() as master, rig(tmp_path, sites, master) as runners:
        served = runners.start()
        upload(served, "5HkA", 1, acknowledged)
        eventually(lambda: [r for r in master.received if r.status == 200], "an acknowledged push")
        runners.cut()
        assert pushes_lost(runners.fs.mount, master, tmp_path / "scratch") == []
        # The restart resends what its ledger holds, or pushes the next revision: never other bytes under one.
        again = runners.start()
        upload(again, "5HkA", 2, acknowledged)
        eventually(lambda: len([r for r in master.received if r.status == 200]) >= 2, "a push after the restart")
        assert conflicts(master) == []
        assert [r.status for r in master.received if r.status != 200] == []


def test_the_record_survives_a_cut_and_the_restart_warns_of_the_unclean_stop(
    sites: dict[str, Path], tmp_path: Path
) -> None:
    with rig(tmp_path, sites, None) as runners:
        served = runners.start()
        runners.cut()
        record = json.loads((runners.fs.mount / RECORD).read_text())
        assert record["running"] == served.proc.pid
        again = runners.start()
        records = again.records()
        assert logged(records, f"the previous runner on this data dir (pid {served.proc.pid}) did not stop cleanly")
        assert not logged(records, "unreadable"), again.output()


# -- cuts at random points


def all_graded(served: Served, acknowledged: Acknowledged) -> bool:
    """Whether ``served`` serves every acknowledged entry, with its job done."""
    with served.client() as client:
        listed = {(h, n): (d, g) for h, n, d, g in client.get("/entries").json()["entries"]}
    return all(listed.get(key) == (digest, True) for key, digest in acknowledged.entries.items())


def healthy(served: Served) -> bool:
    try:
        return httpx.get(served.url + "/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def lost_anything(lost: Survey) -> bool:
    return bool(lost.entries_lost or lost.results_lost or lost.pushes_lost or lost.problems)


def test_random_cuts_on_fresh_data_dirs_lose_nothing_acknowledged(sites: dict[str, Path], tmp_path: Path) -> None:
    """Cuts in the first seconds of a new data dir, while clients write, jobs run and the pusher pushes.

    Then a restart on what survived, which must start, serve every acknowledged entry, and run every
    acknowledged entry's job to the end.
    """
    rng = random.Random(SEED)
    totals = {"cuts": 0, "entries": 0, "entries_lost": 0, "pushes": 0, "pushes_lost": 0}
    failures: list[str] = []
    for cut in range(FRESH_CUTS):
        acknowledged = Acknowledged()
        with ExitStack() as stack:
            master = stack.enter_context(master_double())
            runners = stack.enter_context(rig(tmp_path / f"fresh-{cut}", sites, master))
            started = runners.start(wait=False)
            with Clients(started.url, acknowledged, 3, rng, 0):
                if rng.random() < 1 / 3:
                    time.sleep(rng.uniform(0.0, 4.0))  # while it starts, or just after
                else:
                    eventually(partial(healthy, started), "the runner to answer /health", 30)
                    time.sleep(rng.uniform(0.0, 2.5))
                runners.cut()
            lost = survey(runners.fs.mount, acknowledged, master, tmp_path / "scratch")
            again = runners.start()  # raises if the restart does not answer /health
            if logged(again.records(), "unreadable"):
                lost.problems.append("the restart found the record unreadable")
            try:
                eventually(partial(all_graded, again, acknowledged), "every acknowledged entry graded, restarted", 30)
            except AssertionError as exc:
                lost.problems.append(str(exc))
            answered = len([r for r in master.received if r.status == 200])
            totals["cuts"] += 1
            totals["entries"] += len(acknowledged.entries)
            totals["entries_lost"] += len(lost.entries_lost)
            totals["pushes"] += answered
            totals["pushes_lost"] += len(lost.pushes_lost)
            if lost_anything(lost):
                failures.append(f"cut {cut}: {len(acknowledged.entries)} entries, {answered} pushes: {lost}")
    print(f"\npower cuts on fresh data dirs (seed {SEED}): {totals}")
    assert failures == [], f"seed {SEED}, {totals}:\n" + "\n".join(failures)


def test_random_cuts_on_a_carried_data_dir_lose_nothing_acknowledged(sites: dict[str, Path], tmp_path: Path) -> None:
    """One data dir through many cuts: each restart starts on what the last cut left, and loses none of it."""
    rng = random.Random(SEED + 1)
    acknowledged = Acknowledged()
    failures: list[str] = []
    entries_lost: set[tuple[str, int]] = set()
    pushes_lost: set[tuple[int, int]] = set()
    first = 0
    with master_double() as master, rig(tmp_path / "carried", sites, master) as runners:
        for cut in range(CARRIED_CUTS):
            served = runners.start()  # raises if the restart does not answer /health
            if logged(served.records(), "unreadable"):
                failures.append(f"cut {cut}: the restart found the record unreadable")
            with Clients(served.url, acknowledged, 3, rng, first):
                time.sleep(rng.uniform(0.2, 3.0))
                runners.cut()
            first += 10_000
            lost = survey(runners.fs.mount, acknowledged, master, tmp_path / "scratch")
            entries_lost |= set(lost.entries_lost)
            pushes_lost |= set(lost.pushes_lost)
            if lost_anything(lost):
                failures.append(f"cut {cut}: {lost}")
        runners.start()
        answered = len([r for r in master.received if r.status == 200])
        if conflicts(master):
            failures.append(f"revisions pushed with two payloads: {conflicts(master)}")
    totals = {
        "cuts": CARRIED_CUTS,
        "entries": len(acknowledged.entries),
        "entries_lost": len(entries_lost),
        "pushes": answered,
        "pushes_lost": len(pushes_lost),
    }
    print(f"\npower cuts on a carried data dir (seed {SEED + 1}): {totals}")
    assert failures == [], f"seed {SEED + 1}, {totals}:\n" + "\n".join(failures)


def test_synchronous_normal_loses_acknowledged_rows_so_the_cuts_can_fail(
    sites: dict[str, Path], tmp_path: Path
) -> None:
    """The control: with the opt-in ``NORMAL``, commits are not synced, and the same cuts lose rows."""
    rng = random.Random(SEED + 2)
    acknowledged = Acknowledged()
    lost_rows: set[tuple[str, int]] = set()
    first = 0
    with rig(tmp_path / "normal", sites, None) as runners:
        for _cut in range(3):
            served = runners.start(CHALLENGE_SYNCHRONOUS="NORMAL")
            with Clients(served.url, acknowledged, 3, rng, first):
                at_least(acknowledged, len(acknowledged.entries) + 20)
                runners.cut()
            first += 10_000
            lost_rows |= set(survey(runners.fs.mount, acknowledged, None, tmp_path / "scratch").rows_lost)
    totals = {"cuts": 3, "entries": len(acknowledged.entries), "lost": len(lost_rows)}
    print(f"\nsynchronous=NORMAL (seed {SEED + 2}): {totals}")
    assert lost_rows, f"seed {SEED + 2}: NORMAL lost no row of {totals}: the filesystem forgets too little to test"
