"""The database file and its disk failing under real ``serve`` processes: deleted, full, failing, WAL lost."""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path

import httpx
import pytest
from conftest import eventually, logged, run_cli, tracebacks
from loopfs import loop_fs
from wire_schemas import ErrorResponse, reasons_of

FAULTS = ["--challenge", "faults"]


def rows_in(database: Path) -> set[int]:
    conn = sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)
    try:
        return {row[0] for row in conn.execute("SELECT id FROM fault_rows")}
    finally:
        conn.close()


def write_rows(client: httpx.Client, numbers: range, size: int = 16) -> tuple[set[int], list[httpx.Response]]:
    """POST each row; the numbers answered 201 (acknowledged), and every refusal."""
    acknowledged, refused = set(), []
    for number in numbers:
        response = client.post(f"/rows/{number}", params={"size": size})
        if response.status_code == 201:
            acknowledged.add(number)
        else:
            refused.append(response)
    return acknowledged, refused


def test_database_renamed_under_the_runner_stops_it_and_a_restart_refuses(
    sites: dict[str, Path], tmp_path: Path, server
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    args = [*FAULTS, "--data-dir", str(data)]
    served = server(args, [sites["testbed"]], CHALLENGE_DISK_CHECK_INTERVAL="0.3")
    with served.client() as client:
        assert write_rows(client, range(1, 11))[0] == set(range(1, 11))
        (data / "challenge.sqlite3").rename(tmp_path / "moved.sqlite3")
        try:
            ready = client.get("/ready")
            assert ready.status_code == 503
            assert any("was deleted or renamed" in reason for reason in reasons_of(client))
            assert client.post("/rows/11").status_code == 503
        except httpx.TransportError:
            pass  # already stopped, as it must
    assert served.proc.wait(20) == 1
    assert "challenge.sqlite3 was deleted or renamed under the running runner" in served.output()

    again = server(args, [sites["testbed"]], wait=False)
    assert again.proc.wait(30) == 2
    assert "is gone: starting would create an empty one" in again.output()
    assert "base-runner db init" in again.output()
    assert not (data / "challenge.sqlite3").exists()

    created = run_cli("db", "init", *args, sites=[sites["testbed"]])
    assert created.returncode == 0, created.stderr
    fresh = server(args, [sites["testbed"]])
    with fresh.client() as client:
        assert client.get("/rows").json() == {"rows": 0}
    assert fresh.stop() == 0


def test_disk_full_is_507_with_the_reason_and_a_restart_exits_2(sites: dict[str, Path], tmp_path: Path, server) -> None:
    with loop_fs(tmp_path, 24) as fs:
        args = [*FAULTS, "--data-dir", str(fs.mount)]
        # No periodic disk check during the test: it would see the full volume first and refuse the
        # writes as not ready (503) before one reached SQLite's SQLITE_FULL. /ready checks on its own.
        env = {"CHALLENGE_MIN_FREE_MB": "2", "CHALLENGE_DISK_CHECK_INTERVAL": "3600"}
        served = server(args, [sites["testbed"]], **env)
        with served.client() as client:
            acknowledged, _ = write_rows(client, range(1, 51))
            assert acknowledged == set(range(1, 51))
            fs.fill()
            more, refused = write_rows(client, range(51, 71), size=64 * 1024)
            acknowledged |= more
            assert refused, "every write fitted on a full disk"
            assert {r.status_code for r in refused} <= {503, 507}, [r.text for r in refused]
            full = [r for r in refused if r.status_code == 507]
            assert full and ErrorResponse.model_validate(full[0].json()).code == "disk_full"
            assert full[0].json()["correlation_id"] == full[0].headers["x-request-id"]
            assert f"the volume {fs.mount} is full" in full[0].json()["detail"]
            ready = client.get("/ready")
            assert ready.status_code == 503
            assert any(str(fs.mount) in reason for reason in reasons_of(client)), reasons_of(client)
        assert served.stop() == 0

        again = server(args, [sites["testbed"]], wait=False, **env)
        assert again.proc.wait(30) == 2
        output = again.output()
        assert f"the volume {fs.mount} (holding {fs.mount / 'challenge.sqlite3'}) has 0.0 MB free" in output
        assert "CHALLENGE_MIN_FREE_MB" in output and tracebacks(again.records()) == [], output

        (fs.mount / "filler").unlink()
        back = server(args, [sites["testbed"]], **env)
        with back.client() as client:
            assert client.get("/ready").status_code == 200
        assert back.stop() == 0
        assert acknowledged <= rows_in(fs.mount / "challenge.sqlite3")


def test_failing_disk_loses_no_acknowledged_row_and_ready_says_so(
    sites: dict[str, Path], tmp_path: Path, server
) -> None:
    with loop_fs(tmp_path, 32, "errors=remount-ro") as fs:
        served = server([*FAULTS, "--data-dir", str(fs.mount)], [sites["testbed"]], CHALLENGE_MIN_FREE_MB="1")
        with served.client() as client:
            acknowledged, _ = write_rows(client, range(1, 201))
            assert len(acknowledged) == 200
            fs.trigger_error()
            more, refused = write_rows(client, range(201, 221))
            acknowledged |= more
            assert refused, "writes still succeed on a read-only disk"
            assert {r.status_code for r in refused} == {503}, [r.text for r in refused]
            ready = client.get("/ready")
            assert ready.status_code == 503, ready.text
            assert any("read-only" in reason or "cannot be written" in reason for reason in reasons_of(client))
        served.stop(signal.SIGKILL)
        fs.remount()
        present = rows_in(fs.mount / "challenge.sqlite3")
        print(f"acknowledged {len(acknowledged)}, present after the fault {len(acknowledged & present)}")
        assert acknowledged <= present


def test_unclean_stop_whose_wal_is_gone_is_said_loudly(sites: dict[str, Path], tmp_path: Path, server) -> None:
    args = [*FAULTS, "--data-dir", str(tmp_path)]
    served = server(args, [sites["testbed"]])
    with served.client() as client:
        assert len(write_rows(client, range(1, 31))[0]) == 30
    served.stop(signal.SIGKILL)
    wal = tmp_path / "challenge.sqlite3-wal"
    assert wal.stat().st_size > 0
    wal.unlink()
    again = server(args, [sites["testbed"]])
    lost = f"did not stop cleanly, and its write-ahead log {wal} is gone"
    (loss,) = eventually(lambda: logged(again.records(), lost, "ERROR"), "the data loss to be logged")
    assert loss["message"].startswith("DATA LOSS: ")
    assert again.stop() == 0
    # A clean stop leaves no such line at the next start.
    third = server(args, [sites["testbed"]])
    assert "did not stop cleanly" not in third.output()
    assert third.stop() == 0


@pytest.mark.parametrize(("content", "why"), [("", "it is empty"), ('{"datab', "it is not a JSON object")])
def test_an_unreadable_record_after_a_crash_is_unknown_never_new(
    sites: dict[str, Path], tmp_path: Path, server, content: str, why: str
) -> None:
    args = [*FAULTS, "--data-dir", str(tmp_path)]
    served = server(args, [sites["testbed"]])
    with served.client() as client:
        assert len(write_rows(client, range(1, 11))[0]) == 10
    served.stop(signal.SIGKILL)
    record = tmp_path / ".base-runner-db.json"
    record.write_text(content)  # what a power cut left of it on a runner before 0.2.0

    again = server(args, [sites["testbed"]])
    database = tmp_path / "challenge.sqlite3"
    (found,) = logged(again.records(), f"the runner's record {record} is unreadable ({why})", "WARNING")
    assert f"{database} exists, and whether the previous runner stopped cleanly is unknown" in found["message"]
    assert logged(again.records(), "the previous runner on this data dir (pid unknown) did not stop cleanly")
    assert not logged(again.records(), "treating the data dir as new")
    assert again.stop() == 0
    assert json.loads(record.read_text()) == {"database": str(database), "running": None}, "rewritten whole"

    # Unreadable again, and the database gone: the runner still knows one was here, and refuses.
    record.write_text(content)
    database.unlink()
    refused = server(args, [sites["testbed"]], wait=False)
    assert refused.proc.wait(30) == 2
    assert logged(refused.records(), f"{database} is missing, and whether the previous runner stopped cleanly")
    assert "is gone: starting would create an empty one" in refused.output()
    assert not database.exists()
