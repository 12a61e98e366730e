"""Reports, from inside challenge code, which control-plane variables it can see."""

import os

from fastapi import APIRouter

from base_runner import hookimpl

WATCHED = (
    "BASE_DATABASE_URL",
    "PLATFORM_DATABASE_URL",
    "PGPASSWORD",
    "MASTER_DSN",
    "CHALLENGE_SHARED_TOKEN",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
)
SEEN_AT_IMPORT = sorted(name for name in WATCHED if name in os.environ)

router = APIRouter()


@router.get("/env")
def env() -> dict[str, list[str]]:
    return {"at_import": SEEN_AT_IMPORT, "at_request": sorted(n for n in WATCHED if n in os.environ)}


@hookimpl
def register_routers():
    return [router]


@hookimpl
def get_weights():
    # A plain function: the runner runs it in a thread.
    return {name: 1.0 for name in SEEN_AT_IMPORT} or {"clean": 1.0}
