"""`python -m services.serving`: run the serving service (HTTP API + route watcher)."""

from __future__ import annotations

import asyncio

from services.core.runtime import configure_logging
from services.serving.app import create_app
from services.serving.config import ServingSettings


def main() -> None:
    settings = ServingSettings()
    configure_logging(settings.core.telemetry.log_level)
    asyncio.run(create_app(settings).run())


if __name__ == "__main__":
    main()
