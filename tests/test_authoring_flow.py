"""docs/authoring.md, walked as an author follows it, as far as it goes without the network.

Install, new, its tests, check, serve, the image build and the CI that pushes it: each step's
commands and expected output are read from the guide itself, and the published names from
base_runner/_authoring/release.py, so the guide cannot drift from what the runner does. The last
test replays an author's first hour from an empty folder: new, a bridged route with its own body
limit and async storage, a worker on a setting its test shortens with challenge_env, the tests,
check and serve.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, clean_env, eventually, install, run_cli

from base_runner._authoring import release

GUIDE = (ROOT / "docs" / "authoring.md").read_text()
SLUG = "bounty-hunt"


def blocks(kind: str) -> list[str]:
    """Every fenced block of ``kind`` in the guide, in order."""
    return re.findall(rf"^```{kind}\n(.*?)^```$", GUIDE, re.MULTILINE | re.DOTALL)


def command(prefix: str) -> list[str]:
    """The guide's one shell command that starts with ``prefix``, split into words."""
    (line,) = {line.strip() for block in blocks("sh") for line in block.splitlines() if line.startswith(prefix)}
    return line.split()


def new(root: Path, slug: str) -> Path:
    """``base-runner new SLUG`` run in the folder ``root``, as an author types it; the package's folder."""
    result = subprocess.run(
        [str(Path(sys.executable).with_name("base-runner")), "new", slug],
        cwd=root,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return root / slug


def package_tests(folder: Path, site: Path, basetemp: Path) -> subprocess.CompletedProcess[str]:
    """``pytest`` in the package's folder, the package installed at ``site``."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--basetemp", str(basetemp)],
        cwd=folder,
        env=clean_env([site]),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Step 2: ``base-runner new bounty-hunt`` in an empty folder; step 3's install of it."""
    root = tmp_path_factory.mktemp("author")
    assert command("base-runner new ") == ["base-runner", "new", SLUG]
    folder = new(root, SLUG)
    return folder, install(folder, root / "site")


def test_1_install_names_the_release_tag_and_the_published_package() -> None:
    assert f'pip install "{release.requirement(source="git")}"' in GUIDE
    assert f'pip install "{release.requirement(source="pypi")}"' in GUIDE
    assert f"({release.REPOSITORY})" in GUIDE
    assert release.IMAGE in GUIDE and "<org>" not in GUIDE


def test_3_its_own_tests_pass(project: tuple[Path, Path], tmp_path: Path) -> None:
    folder, site = project
    assert command("pytest") == ["pytest"]
    result = package_tests(folder, site, tmp_path / "t")
    assert result.returncode == 0, result.stdout
    expected = re.search(r"`pytest` ends with `(\d+ passed)`", GUIDE)
    assert expected and expected.group(1) in result.stdout.splitlines()[-1]


def test_4_check_prints_what_the_guide_shows(project: tuple[Path, Path]) -> None:
    _, site = project
    words = command("base-runner check --challenge")
    result = run_cli(*words[1:], sites=[site])
    assert result.returncode == 0, result.stdout + result.stderr
    shown = next(block for block in blocks("text") if block.startswith("PASS load"))
    assert result.stdout == shown


def test_5_serve_answers_the_guides_requests(project: tuple[Path, Path], tmp_path: Path, server) -> None:
    _, site = project
    variable, *words = command("CHALLENGE_SHARED_TOKEN=")
    assert words[:4] == ["base-runner", "serve", "--challenge", SLUG] and "--data-dir" in words
    token = variable.partition("=")[2]
    served = server(["--challenge", SLUG, "--data-dir", str(tmp_path)], [site], CHALLENGE_SHARED_TOKEN=token)
    post = next(line for block in blocks("sh") for line in block.splitlines() if "-X POST" in line)
    request = re.fullmatch(r"curl -X POST localhost:8000(\S+) ((?:-H '[^']*' )+)-d '(.*)'", post.strip())
    assert request, post
    path, headers, body = request.groups()
    sent = dict(header.split(": ", 1) for header in re.findall(r"-H '([^']*)'", headers))
    with served.client() as client:
        assert client.get("/health").json()["status"] == "ok"
        submitted = client.post(path, content=body, headers=sent)
        assert submitted.status_code == 201, submitted.text
        # Scored by its job, which the runner runs in the background at once.
        weights = eventually(lambda: client.get("/weights").json()["weights"], "the submission's job")
        assert weights == {"5F...": 3.0}
        # The hotkey is the master's word: without its token the same request is refused.
        del sent["Authorization"]
        assert client.post(path, content=body, headers=sent).json()["code"] == "missing_token"
    assert served.stop() == 0


def test_7_the_image_builds_on_the_published_runner_image(project: tuple[Path, Path], tmp_path: Path) -> None:
    folder, _ = project
    words = command("rm -rf dist && python -m pip wheel")
    wheel = words[words.index("wheel") :]
    result = subprocess.run(
        [sys.executable, "-m", "pip", *wheel, "--no-build-isolation", "--quiet"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert [p.name for p in (folder / "dist").iterdir()] == ["bounty_hunt_challenge-0.1.0-py3-none-any.whl"]
    dockerfile = (folder / "Dockerfile").read_text()
    assert f"ARG RUNNER_IMAGE={release.image()}\nFROM ${{RUNNER_IMAGE}}" in dockerfile
    assert "COPY dist/*.whl" in dockerfile
    # Building it needs a registry to pull the runner image from: the image tests build the
    # same recipe on a local base instead (tests/test_image.py).


def test_7_ci_tests_with_the_release_tag_and_pushes_the_image(project: tuple[Path, Path]) -> None:
    folder, _ = project
    workflow = (folder / ".github" / "workflows" / "ci.yml").read_text()
    assert f'RUNNER_REQUIREMENT: "{release.requirement(source="git")}"' in workflow
    assert f'RUNNER_IMAGE: "{release.image()}"' in workflow
    assert "images: ghcr.io/${{ github.repository }}" in workflow and "packages: write" in workflow
    assert f"base-runner check --challenge {SLUG}" in workflow
    assert "git tag v0.2.0 && git push origin main v0.2.0" in GUIDE


# The author's first hour, replayed from an empty folder: a review board. Miners send reviews
# through the master's bridge (the scaffold's way in), each at most 4 KiB (MaxBody), its text kept
# on the data volume (async storage); a worker decays the scores on a period from the challenge's
# settings, which a test shortens with challenge_env before the worker starts.
BOARD = "review-board"
BOARD_MODULE = "review_board_challenge"
AUTHORS_CODE = {
    f"{BOARD_MODULE}/settings.py": '''"""The board's settings: CHALLENGE_* variables."""

from base_runner import ChallengeSettings
from pydantic import Field


class BoardSettings(ChallengeSettings):
    #: Seconds between two halvings of every review's score.
    decay_seconds: float = Field(3600.0, gt=0)


settings = BoardSettings()
''',
    f"{BOARD_MODULE}/reviews.py": '''"""Reviews, sent by miners through the master's bridge."""

from typing import Annotated

from base_runner import Base, MaxBody, VerifiedHotkey, database, storage, verified_hotkey
from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from sqlalchemy import Float, String
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

reviews = APIRouter()


class Review(Base):
    __tablename__ = "review_board_reviews"

    id: Mapped[int] = mapped_column(primary_key=True)
    hotkey: Mapped[str] = mapped_column(String(128))
    score: Mapped[float] = mapped_column(Float)


class NewReview(BaseModel):
    text: str = Field(min_length=1)


@reviews.post(
    "/internal/v1/bridge/reviews", status_code=201, dependencies=[Depends(MaxBody(4096))]
)
async def review(
    body: NewReview,
    miner: Annotated[VerifiedHotkey, Depends(verified_hotkey)],
    session: Annotated[AsyncSession, Depends(database.session_dependency)],
) -> dict[str, int]:
    row = Review(hotkey=miner.hotkey, score=float(len(body.text.split())))
    session.add(row)
    await session.commit()
    await storage.write_text_async(storage.path("reviews", f"{row.id}.txt"), body.text)
    return {"id": row.id}
''',
    f"{BOARD_MODULE}/decay.py": '''"""The worker that halves every review's score, every CHALLENGE_DECAY_SECONDS."""

import asyncio

from base_runner import database
from sqlalchemy import update

from .reviews import Review
from .settings import settings


async def decay_forever() -> None:
    period = settings.decay_seconds  # read once, when the worker starts
    while True:
        await asyncio.sleep(period)
        async with database.session() as session:
            await session.execute(update(Review).values(score=Review.score / 2))
            await session.commit()
''',
    "tests/test_reviews.py": f"""import asyncio

import pytest
from base_runner import database
from httpx import AsyncClient
from sqlalchemy import select

from {BOARD_MODULE}.reviews import Review

REVIEWS = "/internal/v1/bridge/reviews"


async def test_a_review_is_kept_on_the_data_volume(bridge_client: AsyncClient, challenge_data_dir) -> None:
    response = await bridge_client.post(REVIEWS, json={{"text": "clear and kind"}})
    assert response.status_code == 201
    kept = challenge_data_dir / "reviews" / f"{{response.json()['id']}}.txt"
    assert kept.read_text() == "clear and kind"


async def test_a_review_over_4_kib_is_refused(bridge_client: AsyncClient) -> None:
    response = await bridge_client.post(REVIEWS, json={{"text": "x" * 5000}})
    assert (response.status_code, response.json()["code"]) == (413, "body_too_large")


@pytest.mark.parametrize("challenge_env", [{{"CHALLENGE_DECAY_SECONDS": "0.05"}}])
async def test_the_worker_halves_the_scores(bridge_client: AsyncClient) -> None:
    await bridge_client.post(REVIEWS, json={{"text": "one two three four"}})
    for _ in range(400):
        async with database.session(readonly=True) as session:
            if (await session.scalars(select(Review.score))).one() < 4.0:
                return
        await asyncio.sleep(0.05)
    raise AssertionError("the worker did not decay with CHALLENGE_DECAY_SECONDS=0.05")
""",
}
PLUGIN_HOOKS = """

@hookimpl
def register_routers() -> list[APIRouter]:
    return [router, reviews]


@hookimpl
def lifespan(app: FastAPI) -> AbstractAsyncContextManager[object]:
    return run_worker(app, decay_forever, name="decay")
"""


def test_8_an_authors_first_hour_from_an_empty_folder(tmp_path: Path, server) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    folder = new(root, BOARD)
    for relative, text in AUTHORS_CODE.items():
        (folder / relative).write_text(text)
    plugin = folder / BOARD_MODULE / "plugin.py"
    generated = plugin.read_text()
    hook = "@hookimpl\ndef register_routers() -> APIRouter:\n    return router\n"
    assert hook in generated
    plugin.write_text(
        "from contextlib import AbstractAsyncContextManager\n\nfrom fastapi import FastAPI\n"
        "from base_runner import run_worker\n"
        f"from {BOARD_MODULE}.decay import decay_forever\nfrom {BOARD_MODULE}.reviews import reviews\n"
        + generated.replace(hook, "")
        + PLUGIN_HOOKS
    )
    site = install(folder, tmp_path / "site")

    tested = package_tests(folder, site, tmp_path / "t")
    assert tested.returncode == 0, tested.stdout
    written = sum(path.read_text().count("\nasync def test_") for path in (folder / "tests").glob("test_*.py"))
    assert written >= 3 + 6 and f"{written} passed" in tested.stdout.splitlines()[-1], tested.stdout

    checked = run_cli("check", "--challenge", BOARD, sites=[site])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "hooks: get_weights, lifespan, register_routers" in checked.stdout.splitlines()[0]

    (tmp_path / "data").mkdir()
    served = server(
        ["--challenge", BOARD, "--data-dir", str(tmp_path / "data")], [site], CHALLENGE_SHARED_TOKEN="t0k3n-dev"
    )
    bridge = {"Authorization": "Bearer t0k3n-dev", "X-Base-Challenge-Slug": BOARD, "X-Base-Verified-Hotkey": "5F..."}
    with served.client() as client:
        assert client.get("/health").json()["status"] == "ok"
        stored = client.post("/internal/v1/bridge/reviews", json={"text": "a fair review"}, headers=bridge)
        assert stored.status_code == 201, stored.text
        kept = tmp_path / "data" / "reviews" / f"{stored.json()['id']}.txt"
        assert kept.read_text() == "a fair review"
        too_long = client.post("/internal/v1/bridge/reviews", json={"text": "x" * 5000}, headers=bridge)
        assert (too_long.status_code, too_long.json()["code"]) == (413, "body_too_large")
        assert client.post("/internal/v1/bridge/reviews", json={"text": "mine"}).status_code == 401
    assert served.stop() == 0
