"""``serve --reload``: a change to the challenge's code is served without a restart by hand."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from conftest import PACKAGES, logged


def test_a_changed_route_is_served_after_the_reload(sites: dict[str, Path], tmp_path: Path, server) -> None:
    # A source copy first on the path, as an editable install would be; the site gives the entry point.
    source = tmp_path / "src"
    shutil.copytree(PACKAGES["example"] / "example_challenge", source / "example_challenge")
    (tmp_path / "data").mkdir()
    served = server(
        ["--reload", "--challenge", "example", "--data-dir", str(tmp_path / "data")], [source, sites["example"]]
    )
    with served.client() as client:
        assert client.get("/reloaded").status_code == 404
        routes = source / "example_challenge" / "routes.py"
        routes.write_text(
            routes.read_text() + '\n\n@router.get("/reloaded")\nasync def reloaded() -> dict[str, bool]:\n'
            '    return {"reloaded": True}\n'
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if client.get("/reloaded").status_code == 200:
                    break
            except Exception:  # the server is between two children
                pass
            assert time.monotonic() < deadline, served.output()
            time.sleep(0.2)
        assert client.get("/reloaded").json() == {"reloaded": True}
    assert served.stop() == 0, served.output()
    records = served.records()
    # One format from both processes, uvicorn's reloader and server lines included (JSON off a terminal).
    assert [line for line in records if isinstance(line, str)] == [], served.output()
    assert logged(records, "reloading when"), served.output()
    assert any(r["logger"].startswith("uvicorn") and "Reloading" in r["message"] for r in records), served.output()
    assert logged(records, "challenge example"), "the child's own lines are in it too"
