"""`python -m pipeline`: serve the reference-image pipeline (settings from the environment, see pipeline.settings);
`python -m pipeline audit --from T --to T [--json]`: the runs of a time window (pipeline.audit)."""

from __future__ import annotations

import sys

import uvicorn

from pipeline.app import create_pipeline_app
from pipeline.logs import configure_logging
from pipeline.settings import PipelineSettings, PipelineSettingsError


def main() -> None:
    """Serve on PIPELINE_HOST:PIPELINE_PORT until interrupted (or run `audit`)."""
    if sys.argv[1:2] == ["audit"]:
        from pipeline.audit import main as audit

        raise SystemExit(audit(sys.argv[2:]))
    configure_logging()
    try:
        settings = PipelineSettings.from_env()
        settings.check()
    except PipelineSettingsError as error:
        raise SystemExit(f"pipeline: {error}") from error
    uvicorn.run(create_pipeline_app(settings), host=settings.host, port=settings.port, log_level="warning")


if __name__ == "__main__":
    main()
