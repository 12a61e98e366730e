"""The bounty's settings: ``CHALLENGE_*`` variables on top of the runner's base class."""

from pydantic import Field

from base_runner import ChallengeSettings


class BountySettings(ChallengeSettings):
    """``owner_token`` (``CHALLENGE_OWNER_TOKEN`` or ``CHALLENGE_OWNER_TOKEN_FILE``) comes from the base class."""

    #: Seconds between two sweeps that close the active projects whose deadline has passed.
    close_interval: float = Field(60.0, gt=0)


settings = BountySettings()
