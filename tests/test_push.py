"""The pusher against a 3.1 ingress double over real HTTP: every answer the master gives has its outcome.

The pusher runs in this process with a real ledger file; the master is
:mod:`master_double`, a real HTTP server on a port the OS chose.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from master_double import MasterDouble

from base_runner._core.auth import MasterAuth
from base_runner._push.protocol import epoch_of
from base_runner._push.pusher import Pusher
from base_runner._push.store import PushStore

pytestmark = pytest.mark.anyio

SLUG = "demo"
TOKEN = "push-token"
# Long epochs: no test runs across a boundary.
EPOCH_SECONDS = 1_000_000
ALICE = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
BOB = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"


@pytest.fixture
def master() -> Iterator[MasterDouble]:
    double = MasterDouble(tokens={SLUG: TOKEN}).start()
    yield double
    double.release.set()
    if double._server is not None:
        double.stop()


class Harness:
    def __init__(self, master: MasterDouble, tmp_path: Path, **options: object) -> None:
        self.master = master
        self.weights: dict[str, float] = {ALICE: 1.0, BOB: 2.0}
        tmp_path.mkdir(exist_ok=True)
        self.token_file = tmp_path / "token"
        self.token_file.write_text(TOKEN + "\n")
        self.store = PushStore(tmp_path / "ledger" / "push.sqlite3", SLUG)
        self.client = httpx.AsyncClient(timeout=2)
        auth = MasterAuth(slug=SLUG, token=None, token_file=self.token_file)

        async def weights() -> dict[str, float]:
            return dict(self.weights)

        self.pusher = Pusher(
            slug=SLUG,
            master_base_url=master.url,
            epoch_seconds=int(options.get("epoch_seconds", EPOCH_SECONDS)),
            interval=float(options.get("interval", 0.05)),
            lifetime=int(options.get("lifetime", 600)),
            weights=weights,
            token=auth.expected_token,
            store=self.store,
            client=self.client,
        )

    async def step(self, force: bool = False):
        return await self.pusher.step(force)

    def epoch(self) -> int:
        return epoch_of(time.time(), self.pusher.epoch_seconds)


@pytest.fixture
async def push(master: MasterDouble, tmp_path: Path):
    harness = Harness(master, tmp_path)
    yield harness
    await harness.client.aclose()
    harness.store.close()


async def test_a_push_is_acknowledged_and_unchanged_weights_are_not_sent_again(push: Harness) -> None:
    first = await push.step()
    assert first.outcome == "acknowledged", first
    (stored,) = push.master.snapshots.values()
    assert stored.weights == {ALICE: 1.0, BOB: 2.0}
    assert (stored.epoch, stored.revision) == (push.epoch(), 1)
    assert first.ack["snapshot_id"] == stored.snapshot_id
    assert (await push.step()).outcome == "current"
    assert len(push.master.received) == 1
    state = await push.pusher.state()
    assert state["status"] == "ok"
    assert (state["epoch"], state["revision"], state["snapshot_id"]) == (push.epoch(), 1, stored.snapshot_id)
    assert state["pending"] is None


async def test_changed_weights_are_a_new_revision_of_the_same_epoch(push: Harness) -> None:
    await push.step()
    push.weights[BOB] = 5.0
    second = await push.step()
    assert second.outcome == "acknowledged"
    assert sorted(push.master.snapshots) == [(SLUG, push.epoch(), 1), (SLUG, push.epoch(), 2)]
    assert push.master.snapshots[(SLUG, push.epoch(), 2)].weights[BOB] == 5.0


async def test_a_replay_sends_the_same_bytes_and_is_idempotent(push: Harness) -> None:
    first = await push.step()
    again = await push.step(force=True)
    assert again.outcome == "idempotent"
    assert again.ack["snapshot_id"] == first.ack["snapshot_id"]
    one, two = push.master.received
    assert one.body == two.body
    assert len(push.master.snapshots) == 1


async def test_server_errors_are_retried_with_the_same_bytes(push: Harness) -> None:
    push.master.script(500, 503)
    outcomes = [(await push.step()).outcome for _ in range(3)]
    assert outcomes == ["unavailable", "unavailable", "acknowledged"]
    bodies = {r.body for r in push.master.received}
    assert len(bodies) == 1
    assert push.pusher.delay(push.pusher.last) > 0


async def test_a_dropped_answer_is_retried_and_the_master_says_it_had_it(push: Harness) -> None:
    push.master.script("drop")
    assert (await push.step()).outcome == "unavailable"
    (stored,) = push.master.snapshots.values()
    retry = await push.step()
    assert retry.outcome == "idempotent"
    assert retry.ack["snapshot_id"] == stored.snapshot_id
    assert push.master.received[0].body == push.master.received[1].body


async def test_a_connection_dropped_before_the_master_stored_it_is_retried(push: Harness) -> None:
    push.master.script("drop_before")
    assert (await push.step()).outcome == "unavailable"
    assert push.master.snapshots == {}
    assert (await push.step()).outcome == "acknowledged"


async def test_the_master_down_for_a_while_then_back(push: Harness) -> None:
    push.master.stop()
    down = [await push.step() for _ in range(3)]
    assert {a.outcome for a in down} == {"unavailable"}
    state = await push.pusher.state()
    assert state["status"] == "degraded" and "no answer" in state["error"]
    assert state["pending"]["attempts"] == 3
    push.master.start()
    back = await push.step()
    assert back.outcome == "acknowledged"
    assert len(push.master.snapshots) == 1


async def test_a_sealed_epoch_is_final(push: Harness) -> None:
    push.master.seal(push.epoch())
    sealed = await push.step()
    assert sealed.outcome == "sealed" and sealed.status == 409
    push.weights[BOB] = 9.0
    assert (await push.step()).outcome == "sealed"
    assert len(push.master.received) == 1, "nothing more is sent for a sealed epoch"


async def test_a_conflict_moves_to_a_higher_revision(master: MasterDouble, push: Harness, tmp_path: Path) -> None:
    # Another ledger (a lost data volume) already pushed other weights as revision 1 of this epoch.
    other = Harness(master, tmp_path / "other")
    other.weights = {ALICE: 7.0}
    assert (await other.step()).outcome == "acknowledged"
    conflict = await push.step()
    assert conflict.outcome == "conflict" and conflict.status == 409
    assert (await push.step()).outcome == "acknowledged"
    assert master.snapshots[(SLUG, push.epoch(), 2)].weights == {ALICE: 1.0, BOB: 2.0}
    await other.client.aclose()
    other.store.close()


async def test_a_wrong_token_is_retried_slowly_and_the_token_file_is_read_again(
    push: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    push.token_file.write_text("not-the-token\n")
    refused = await push.step()
    assert refused.outcome == "refused" and refused.status == 401
    assert "token" in refused.detail
    assert push.pusher.delay(refused) >= 3 * push.pusher.interval
    assert TOKEN not in caplog.text and "not-the-token" not in caplog.text
    push.token_file.write_text(TOKEN)
    assert (await push.step()).outcome == "acknowledged"
    assert push.master.received[0].body == push.master.received[1].body


async def test_a_forbidden_slug_is_retried_slowly(push: Harness) -> None:
    push.master.script(403)
    refused = await push.step()
    assert refused.outcome == "refused" and "slug" in refused.detail
    assert (await push.step()).outcome == "acknowledged"


@pytest.mark.parametrize("status", [413, 415, 422])
async def test_refused_bytes_are_never_sent_again(push: Harness, status: int) -> None:
    push.master.script(status)
    rejected = await push.step()
    assert rejected.outcome == "rejected" and rejected.status == status
    assert (await push.step()).outcome == "waiting"
    time.sleep(4 * push.pusher.interval)
    assert (await push.step()).outcome == "acknowledged"
    first, second = push.master.received
    assert first.body != second.body
    assert json.loads(second.body)["revision"] == 2


async def test_the_master_clock_ahead_within_the_window_is_fine(push: Harness) -> None:
    push.master.skew = 25
    assert (await push.step()).outcome == "acknowledged"


async def test_a_clock_off_by_more_than_30_seconds_is_refused_and_said_so(push: Harness) -> None:
    push.master.skew = -45
    refused = await push.step()
    assert refused.status == 401 and "clock" in refused.detail
    push.master.skew = 0
    assert (await push.step()).outcome == "acknowledged"


async def test_keys_the_master_refuses_are_left_out_and_logged(push: Harness, caplog: pytest.LogCaptureFixture) -> None:
    push.weights = {ALICE: 1.0, "12345": 2.0, "miner-one": 3.0}
    with caplog.at_level(logging.WARNING, "base_runner"):
        assert (await push.step()).outcome == "acknowledged"
    (stored,) = push.master.snapshots.values()
    assert stored.weights == {ALICE: 1.0}
    assert "2 weights left out" in caplog.text and "'12345'" in caplog.text


async def test_an_empty_map_is_not_pushed_and_warned_once_per_epoch(
    push: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    push.weights = {"12345": 1.0}
    with caplog.at_level(logging.WARNING, "base_runner"):
        assert (await push.step()).outcome == "empty"
        assert (await push.step()).outcome == "empty"
    assert push.master.received == []
    assert caplog.text.count("no weights to push") == 1
    assert "withholds the epoch" in caplog.text
    assert (await push.pusher.state())["status"] == "degraded"


async def test_an_expired_pending_snapshot_is_replaced(master: MasterDouble, tmp_path: Path) -> None:
    harness = Harness(master, tmp_path, lifetime=1)
    master.script("drop_before")
    assert (await harness.step()).outcome == "unavailable"
    time.sleep(1.1)
    fresh = await harness.step()
    assert fresh.outcome == "acknowledged"
    assert fresh.push.revision == 2
    assert [r.view()["state"] for r in harness.store.recent()] == ["abandoned", "acknowledged"]
    await harness.client.aclose()
    harness.store.close()


async def test_more_entries_than_the_master_takes_are_not_sent(push: Harness) -> None:
    push.weights = {f"5Key{n:05d}".replace("0", "a"): 1.0 for n in range(4097)}
    assert len(push.weights) == 4097
    attempt = await push.step()
    assert attempt.outcome == "error" and "4096" in attempt.detail
    assert push.master.received == []


async def test_each_epoch_gets_its_own_push_early(master: MasterDouble, tmp_path: Path) -> None:
    # Looks far apart: only the epoch boundary wakes the pusher.
    harness = Harness(master, tmp_path, epoch_seconds=2, interval=60)
    assert (await harness.step()).outcome == "acknowledged"
    delay = harness.pusher.delay(harness.pusher.last)
    assert delay <= 2
    time.sleep(delay)
    nxt = await harness.step()
    assert nxt.outcome == "acknowledged"
    sent_at = time.time()
    epochs = sorted(epoch for _, epoch, _ in master.snapshots)
    assert epochs[1] == epochs[0] + 1
    # The weights did not change: the new epoch gets revision 1 of the same map, a little before it begins.
    assert nxt.push.revision == 1 and nxt.push.epoch == epochs[1]
    assert epochs[1] * 2 - harness.pusher.lead - 0.1 < sent_at < epochs[1] * 2 + 1
    await harness.client.aclose()
    harness.store.close()
