"""A challenge that takes an uploaded artifact: FastAPI's file uploads must work out of the box."""

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from base_runner import hookimpl, storage

router = APIRouter()


@router.post("/artifacts", status_code=201)
async def upload(hotkey: Annotated[str, Form()], artifact: Annotated[UploadFile, File()]) -> dict[str, object]:
    data = await artifact.read()
    storage.write_bytes(storage.path("artifacts", f"{hotkey}.bin"), data)
    return {"hotkey": hotkey, "size": len(data)}


@hookimpl
def register_routers() -> APIRouter:
    return router


@hookimpl
def get_weights() -> dict[str, float]:
    return {}
