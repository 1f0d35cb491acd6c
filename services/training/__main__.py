"""`python -m services.training`: run the training service."""

from __future__ import annotations

import asyncio

from services.core.runtime import configure_logging
from services.training.app import create_app
from services.training.config import TrainingSettings


def main() -> None:
    settings = TrainingSettings()
    configure_logging(settings.core.telemetry.log_level)
    asyncio.run(create_app(settings).run())


if __name__ == "__main__":
    main()
