"""The emulator helpers of ``pipeline.emulator``, under the name the cleanup tests and ``bench.cleanup`` import."""

from pipeline.emulator import fresh_bucket, running_emulator, storage_client

__all__ = ["fresh_bucket", "running_emulator", "storage_client"]
