"""`python -m services.merging`: run the merging service."""

from __future__ import annotations

import asyncio

from services.core.runtime import configure_logging
from services.merging.app import create_app
from services.merging.config import MergingSettings


def main() -> None:
    settings = MergingSettings()
    configure_logging(settings.core.telemetry.log_level)
    asyncio.run(create_app(settings).run())


if __name__ == "__main__":
    main()
