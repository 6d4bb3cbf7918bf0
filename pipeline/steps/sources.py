"""sources stage: fingerprint every configured data set (pipeline.sources)."""

from pipeline.sources import run_sources

__all__ = ["run_sources"]
