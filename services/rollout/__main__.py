"""`python -m services.rollout`: run the rollout service."""

from __future__ import annotations

import asyncio

from services.core.runtime import configure_logging
from services.rollout.app import create_app
from services.rollout.config import RolloutSettings


def main() -> None:
    settings = RolloutSettings()
    configure_logging(settings.core.telemetry.log_level)
    asyncio.run(create_app(settings).run())


if __name__ == "__main__":
    main()
