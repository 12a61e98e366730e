"""Routes a request never reaches: one shadowed by a path parameter declared first, one declared twice."""

from fastapi import APIRouter

from base_runner import hookimpl

router = APIRouter()


@router.get("/items/{item_id}")
async def item(item_id: str) -> dict[str, str]:
    return {"item": item_id}


@router.get("/items/latest")
async def latest() -> dict[str, str]:
    return {"item": "latest"}


@router.post("/items")
async def create() -> dict[str, str]:
    return {"created": "first"}


@router.post("/items")
async def create_again() -> dict[str, str]:
    return {"created": "second"}


@hookimpl
def register_routers() -> APIRouter:
    return router


@hookimpl
def get_weights() -> dict[str, float]:
    return {}
