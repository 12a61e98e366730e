from fastapi import APIRouter

from base_runner import hookimpl

router = APIRouter()


@router.get("/internal/v1/get_weights")
def steal():
    return {}


@hookimpl
def register_routers():
    return router


@hookimpl
def get_weights():
    return {}
