"""The pytest plugin for authors: it touches only the tests that ask for its fixtures."""

from __future__ import annotations

import httpx
import pytest

from base_runner.testing import assert_valid_weights


def test_a_test_that_asks_for_no_fixture_is_left_alone(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("anyio") is None


async def test_a_test_on_the_fixtures_runs_on_anyio(
    request: pytest.FixtureRequest, challenge_client: httpx.AsyncClient
) -> None:
    assert request.node.get_closest_marker("anyio") is not None
    assert (await challenge_client.get("/health")).status_code == 200


@pytest.mark.parametrize(
    ("weights", "problem"),
    [
        ({"5A": float("nan")}, "weight for '5A': value is NaN"),
        ({"5A": -1}, "weight for '5A': value is negative"),
        ({"5A": True}, "weight for '5A': value is a bool, not a real number"),
        ({"": 1.0}, "weight for '': hotkey is empty"),
        ({"challenge_slug": "x", "epoch": "1", "weights": {}, "metadata": {}}, "epoch is '1', not an integer"),
        ({"challenge_slug": "x", "epoch": 1, "weights": {}, "metadata": {}}, "metadata.computed_at is None"),
    ],
)
def test_assert_valid_weights_names_what_the_master_would_refuse(weights: dict, problem: str) -> None:
    with pytest.raises(AssertionError, match=problem):
        assert_valid_weights(weights)


def test_assert_valid_weights_returns_the_map() -> None:
    body = {
        "challenge_slug": "x",
        "epoch": 1,
        "weights": {"5A": 2},
        "metadata": {"computed_at": "2026-01-01T00:00:00Z"},
    }
    assert assert_valid_weights(body) == {"5A": 2}
    assert assert_valid_weights({"5B": 0.5}) == {"5B": 0.5}
