"""A challenge that serves the bridge route without asking who sent it."""

from fastapi import APIRouter

from base_runner import hookimpl

router = APIRouter()


@router.post("/internal/v1/bridge/submissions")
def trusting(body: dict) -> dict:
    return body


@hookimpl
def register_routers():
    return router


@hookimpl
def get_weights():
    return {}
