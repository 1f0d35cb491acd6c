"""`python -m services.registry`: run the registry service."""

from __future__ import annotations

import asyncio

from services.core.runtime import configure_logging
from services.registry.app import create_app
from services.registry.config import RegistrySettings


def main() -> None:
    settings = RegistrySettings()
    configure_logging(settings.core.telemetry.log_level)
    asyncio.run(create_app(settings).run())


if __name__ == "__main__":
    main()
