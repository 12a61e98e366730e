"""Read-modify-write routes, the kind that lose updates or hit `database is locked` on a naive setup."""

import asyncio
import tempfile
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from sqlalchemy import ForeignKey, Integer, String, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from base_runner import ApiError, Base, correlation_id, database, hookimpl

router = APIRouter()
Session = Annotated[AsyncSession, Depends(database.session_dependency)]


class Counter(Base):
    __tablename__ = "ledger_counters"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(Integer, default=0)


class Claim(Base):
    __tablename__ = "ledger_claims"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))


class Payout(Base):
    """A row whose reference to a claim is checked only at COMMIT (a deferred foreign key)."""

    __tablename__ = "ledger_payouts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    claim: Mapped[str] = mapped_column(
        String(64), ForeignKey("ledger_claims.key", deferrable=True, initially="DEFERRED")
    )


@router.post("/counters/{name}/increment")
async def increment(name: str, session: Session) -> dict[str, int]:
    counter = await session.get(Counter, name)
    if counter is None:
        counter = Counter(name=name, value=0)
        session.add(counter)
    # Yield to other requests between the read and the write, as real handlers do.
    await asyncio.sleep(0)
    counter.value += 1
    await session.commit()
    return {"value": counter.value}


@router.post("/claims/{key}", status_code=201)
async def claim(key: str, owner: str, session: Session) -> dict[str, str]:
    existing = (await session.execute(select(Claim).where(Claim.key == key))).scalar_one_or_none()
    if existing is not None:
        raise HTTPException(409, f"{key} is claimed by {existing.owner}")
    await asyncio.sleep(0)
    session.add(Claim(key=key, owner=owner))
    await session.commit()
    return {"key": key, "owner": owner}


@router.post("/reservations/{key}", status_code=201)
async def reserve(key: str, owner: str, session: Session) -> dict[str, str]:
    """As /claims, refused with the runner's envelope instead of an HTTPException."""
    existing = await session.get(Claim, key)
    if existing is not None:
        raise ApiError(409, "already_claimed", f"{key} is claimed", expected="an unclaimed key", actual=existing.owner)
    session.add(Claim(key=key, owner=owner))
    await session.commit()
    return {"key": key, "owner": owner}


@router.get("/correlation")
async def correlation() -> dict[str, str | None]:
    return {"correlation_id": correlation_id.get()}


@router.post("/slow-claims/{key}", status_code=201)
async def slow_claim(key: str, owner: str, delay: float, session: Session) -> dict[str, str]:
    await asyncio.sleep(delay)
    session.add(Claim(key=key, owner=owner))
    await session.commit()
    return {"key": key, "owner": owner}


@router.post("/held-claims/{key}", status_code=201)
async def held_claim(
    key: str, owner: str, waiters: int, session: Session, payout_for: str = "", pad: int = 0
) -> dict[str, str]:
    """Claim ``key`` and hold the writer until ``waiters`` other sessions wait for it, then commit.

    The waiting sessions' transactions then run while this one's commit is
    pending: one group. With ``payout_for``, also adds a payout for that claim,
    whose foreign key is checked at COMMIT; ``pad`` bytes more make the row
    large enough to need new space on disk.
    """
    session.add(Claim(key=key, owner=owner + "x" * pad))
    if payout_for:
        session.add(Payout(claim=payout_for))
    await session.flush()
    deadline = asyncio.get_running_loop().time() + 20
    while database.writer_waiting < waiters and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.005)
    await session.commit()
    return {"key": key, "owner": owner}


@router.post("/claim-pairs/{first}/{second}", status_code=201)
async def claim_pair(first: str, second: str, owner: str, session: Session) -> dict[str, str]:
    """Both claims or neither: the second's primary key clashes when it is taken."""
    session.add(Claim(key=first, owner=owner))
    await session.flush()
    session.add(Claim(key=second, owner=owner))
    await session.flush()
    await session.commit()
    return {"first": first, "second": second}


@router.get("/claims")
async def claims() -> dict[str, str]:
    async with database.session(readonly=True) as session:
        return {claim.key: claim.owner for claim in (await session.execute(select(Claim))).scalars()}


@router.get("/tmpdir")
def tmpdir() -> dict[str, str]:
    return {"tmpdir": tempfile.gettempdir()}


@hookimpl
def register_routers():
    return router


@hookimpl
async def get_weights():
    async with database.session(readonly=True) as session:
        rows = await session.execute(select(Counter.name, Counter.value))
        return {name: float(value) for name, value in rows}
