"""The executor the settings choose: the master's broker when its URL is set, else the local Docker Engine."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .backend import Backend
from .broker import Broker, read_token
from .local import LocalDocker
from .service import Executor


def build(
    *,
    slug: str,
    data_dir: Path,
    allowed_images: Sequence[str],
    broker_url: str | None,
    broker_token: str | None,
    broker_token_file: Path,
    broker_master: str,
    protected: Sequence[Path] = (),
) -> Executor:
    backend: Backend
    if broker_url:
        backend = Broker(broker_url, slug, read_token(broker_token, broker_token_file), broker_master)
    else:
        backend = LocalDocker()
    return Executor(backend, slug=slug, data_dir=data_dir, allowed_images=allowed_images, protected=protected)
