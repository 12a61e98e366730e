"""A challenge that uses the runner's SDK: its settings with secrets, owner auth, the verified hotkey."""

import dataclasses
import logging
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from base_runner import ChallengeSettings, MaxBody, OwnerAuth, Secret, VerifiedHotkey, hookimpl, verified_hotkey


class SdkSettings(ChallengeSettings):
    api_key: Secret | None = None
    rounds: int = 3


settings = SdkSettings()
# Written to the log on purpose: the secrets must not show in it.
logging.getLogger("runner_testbed").info("sdk settings: %r / %s", settings, settings)

router = APIRouter()


@router.get("/owner/ping", dependencies=[Depends(OwnerAuth(settings))])
async def owner_ping() -> dict[str, bool]:
    return {"owner": True}


class Note(BaseModel):
    text: str


notes = APIRouter()


@notes.post("/notes")
async def add_note(note: Note) -> dict[str, str]:
    return {"text": note.text}


# A route's own cap, below CHALLENGE_MAX_BODY_BYTES; the owner token still comes first.
@notes.post("/bulletins", dependencies=[Depends(MaxBody(64))])
async def add_bulletin(note: Note) -> dict[str, str]:
    return {"text": note.text}


# Guarded where it is included, not on its routes: the owner check must still come before the body.
router.include_router(notes, prefix="/owner", dependencies=[Depends(OwnerAuth(settings))])

# Capped where it is included, at 64 bytes, and on the route, at 128: the lowest wins.
reviews = APIRouter()


@reviews.post("/reviews", dependencies=[Depends(MaxBody(128))])
async def review(note: Note) -> dict[str, int]:
    return {"length": len(note.text)}


router.include_router(reviews, dependencies=[Depends(MaxBody(64))])


@router.get("/settings")
async def show_settings() -> dict[str, object]:
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    return {"repr": repr(settings), "dump": settings.model_dump(), "api_key_length": len(api_key or "")}


@router.post("/internal/v1/bridge/submissions")
async def bridged(miner: Annotated[VerifiedHotkey, Depends(verified_hotkey)]) -> dict[str, object]:
    return dataclasses.asdict(miner)


@hookimpl
def register_routers():
    return router


@hookimpl
def get_weights():
    return {}
