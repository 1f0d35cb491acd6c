"""`python -m services.evaluation`: run the evaluation service."""

from __future__ import annotations

import asyncio

from services.core.runtime import configure_logging
from services.evaluation.app import create_app
from services.evaluation.config import EvaluationSettings


def main() -> None:
    settings = EvaluationSettings()
    configure_logging(settings.core.telemetry.log_level)
    asyncio.run(create_app(settings).run())


if __name__ == "__main__":
    main()
