"""The push request, byte for byte, against vectors worked out by hand from the protocol.

The expected digests and signature were computed outside Python, with
``printf '%s' '<canonical JSON>' | sha256sum`` and ``openssl dgst -sha256 -hmac t0k``.
"""

from __future__ import annotations

import json

import pytest

from base_runner._core.hotkeys import push_problem
from base_runner._push import protocol

# Every field but the digest, keys sorted, "," and ":", times as UTC ...Z, weights as floats.
CANONICAL = (
    '{"challenge_slug":"demo","computed_at":"1970-01-01T00:30:00Z","epoch":5,"expires_at":"1970-01-01T00:40:00Z",'
    '"nonce":"n-1","protocol_version":"1.0","revision":1,"weights":{"5Fa":0.5,"5Gb":3.0}}'
)
DIGEST = "f365abe758974384d09fda5dd6e8e658abdd6e097fa6b46c5dbbea51f42fd548"
BODY = (
    '{"challenge_slug":"demo","computed_at":"1970-01-01T00:30:00Z","epoch":5,"expires_at":"1970-01-01T00:40:00Z",'
    f'"nonce":"n-1","payload_digest":"{DIGEST}","protocol_version":"1.0","revision":1,'
    '"weights":{"5Fa":0.5,"5Gb":3.0}}'
)
PATH = "/internal/v1/challenges/demo/raw-weights"
# HMAC-SHA256, key "t0k", of "POST\n<path>\ndemo\n1700000000\n<sha256 of BODY>".
SIGNATURE = "d82c158b1b82a2559518da3680ad2e965aac908e6fb9e40966cbfe55e11e34fd"


def body(**changes: object) -> bytes:
    fields: dict = {
        "slug": "demo",
        "epoch": 5,
        "revision": 1,
        "computed_at": 1800,
        "lifetime": 600,
        "nonce": "n-1",
        # Unsorted, and one integer: the body sorts the keys and sends 3.0, never 3.
        "weights": {"5Gb": 3, "5Fa": 0.5},
    }
    return protocol.build_body(**{**fields, **changes})


def test_the_digest_is_over_the_canonical_json_of_every_other_field() -> None:
    fields = json.loads(CANONICAL)
    assert protocol.canonical(fields).decode() == CANONICAL
    assert protocol.payload_digest(fields) == DIGEST
    assert protocol.payload_digest({**fields, "payload_digest": "ignored"}) == DIGEST


def test_the_body_is_the_canonical_json_with_its_digest() -> None:
    assert body().decode() == BODY


def test_the_signature_covers_method_path_slug_timestamp_and_body() -> None:
    assert (
        protocol.signature(token="t0k", path=PATH, slug="demo", timestamp=1700000000, body=BODY.encode()) == SIGNATURE
    )
    sent = protocol.headers(token="t0k", path=PATH, slug="demo", timestamp=1700000000, body=BODY.encode())
    assert sent["X-Signature"] == SIGNATURE
    assert sent["X-Timestamp"] == "1700000000"
    assert sent["Authorization"] == "Bearer t0k"
    assert sent["Content-Type"] == "application/json"
    assert sent["X-Base-Challenge-Slug"] == "demo"


def test_any_change_to_a_field_changes_the_digest() -> None:
    digests = {
        json.loads(b)["payload_digest"]
        for b in (
            body(),
            body(revision=2),
            body(nonce="n-2"),
            body(weights={"5Gb": 3.0, "5Fa": 0.25}),
            body(lifetime=60),
        )
    }
    assert len(digests) == 5


def test_floats_are_sent_as_python_writes_them() -> None:
    sent = json.loads(body(weights={"5Fa": 1e-7, "5Gb": 2, "5Hc": 1e16}))
    assert sent["weights"] == {"5Fa": 1e-7, "5Gb": 2.0, "5Hc": 1e16}
    assert all(type(v) is float for v in sent["weights"].values())
    assert b'"5Gb":2.0' in body(weights={"5Gb": 2})


def test_the_path_keeps_the_base_urls_own_path() -> None:
    assert protocol.push_path("http://master:8080", "demo") == PATH
    assert protocol.push_path("https://m.example/base/", "demo") == "/base" + PATH


@pytest.mark.parametrize(
    ("hotkey", "accepted"),
    [
        ("5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY", True),
        ("abc", True),
        ("ab", False),  # too short
        ("a" * 65, False),  # too long
        ("12345", False),  # digits only: a uid, not a hotkey
        ("5Gr0", False),  # 0 is not in base58
        ("5GrI", False),  # nor I
        ("5Grl", False),  # nor l
        ("5GrO", False),  # nor O
        ("0x1234abcd", False),
        ("miner one", False),
    ],
)
def test_only_ss58_shaped_hotkeys_may_be_pushed(hotkey: str, accepted: bool) -> None:
    assert (push_problem(hotkey) is None) is accepted


def test_the_epoch_is_the_floor_of_now_over_the_epoch_length() -> None:
    assert protocol.epoch_of(0, 360) == 0
    assert protocol.epoch_of(359.99, 360) == 0
    assert protocol.epoch_of(360, 360) == 1
    assert protocol.epoch_of(1_700_000_000, 360) == 4_722_222


def test_an_acknowledgement_must_match_what_was_sent() -> None:
    sent = json.loads(BODY)
    ack = {
        "protocol_version": "1.0",
        "challenge_slug": "demo",
        "epoch": 5,
        "revision": 1,
        "snapshot_id": "s-1",
        "payload_digest": DIGEST,
        "accepted": True,
        "idempotent": False,
    }
    assert protocol.ack_problem(ack, sent) is None
    assert "revision" in protocol.ack_problem({**ack, "revision": 2}, sent)
    assert "payload_digest" in protocol.ack_problem({**ack, "payload_digest": "0" * 64}, sent)
    assert "snapshot_id" in protocol.ack_problem({**ack, "snapshot_id": ""}, sent)
    assert "accepted" in protocol.ack_problem({**ack, "accepted": False}, sent)
    assert protocol.ack_problem([ack], sent) is not None
