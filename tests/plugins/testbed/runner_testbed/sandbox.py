"""A challenge that scores a miner's answer by running it in a container, through base_runner.executor.

``POST /evaluate`` scores in the request; ``POST /submit`` enqueues a job that does.
"""

from fastapi import APIRouter
from pydantic import BaseModel

from base_runner import ChallengeSettings, database, executor, hookimpl, jobs, storage


class Settings(ChallengeSettings):
    sandbox_image: str = "localhost/executor-busybox:1"


settings = Settings()
router = APIRouter()
scores: dict[str, float] = {}


class Submission(BaseModel):
    hotkey: str
    answer: str
    #: Seconds the container sleeps before it answers.
    think: int = 0


async def score(submission: Submission, timeout: float = 60) -> executor.RunResult:
    """Run the answer in the sandbox: the container reads it and writes its score to a writable mount."""
    work = storage.path("submissions", submission.hotkey)
    out = storage.path("scores", submission.hotkey)
    storage.write_text(work / "answer.txt", submission.answer)
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o777)
    result = await executor.run(
        executor.RunSpec(
            image=settings.sandbox_image,
            command=("sh", "-c", f"sleep {submission.think}; cat /work/answer.txt > /out/score.txt; echo scored"),
            mounts=(executor.Mount(work, "/work"), executor.Mount(out, "/out", read_only=False)),
            limits=executor.Limits(memory="64m", memory_swap="64m"),
        ),
        timeout=timeout,
    )
    if result.ok:
        scores[submission.hotkey] = float((out / "score.txt").read_text())
    return result


@router.post("/evaluate")
async def evaluate(submission: Submission) -> dict[str, object]:
    result = await score(submission)
    return {"returncode": result.returncode, "stdout": result.stdout, "score": scores.get(submission.hotkey)}


@jobs.task(max_attempts=3, timeout=120, backoff=0.5)
async def judge(job: jobs.Job, hotkey: str, answer: str, think: int) -> None:
    await score(Submission(hotkey=hotkey, answer=answer, think=think))


@router.post("/submit")
async def submit(submission: Submission) -> dict[str, str]:
    async with database.session() as session:
        job_id = await jobs.enqueue(session, judge, **submission.model_dump())
        await session.commit()
    return {"job_id": job_id}


@hookimpl
def register_tasks() -> list[jobs.Task]:
    return [judge]


@hookimpl
def register_routers() -> APIRouter:
    return router


@hookimpl
def get_weights() -> dict[str, float]:
    return dict(scores)
