"""A challenge that scores a miner's answer by running it in a container, through base_runner.executor."""

from fastapi import APIRouter
from pydantic import BaseModel

from base_runner import ChallengeSettings, executor, hookimpl, storage


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


@hookimpl
def register_routers() -> APIRouter:
    return router


@hookimpl
def get_weights() -> dict[str, float]:
    return dict(scores)
