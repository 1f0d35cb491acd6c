"""`python -m services.curation`: run the curation service."""

from __future__ import annotations

import asyncio

from services.core.runtime import configure_logging
from services.curation.app import create_app
from services.curation.config import CurationSettings


def main() -> None:
    settings = CurationSettings()
    configure_logging(settings.core.telemetry.log_level)
    asyncio.run(create_app(settings).run())


if __name__ == "__main__":
    main()
