"""The in-process OpenFeature provider of the control plane, and the evaluation engine it shares with the server.

    provider = ControlPlaneProvider(url, evaluate_token, environment="production", cache_path=Path("flags.json"))
    api.set_provider_and_wait(provider)

The engine (``engine``, ``bucketing``), the snapshot it evaluates (``snapshot``) and the targeting wire types
(``wire``) live here so that server and clients run the same code; the server imports them from this package.
"""

from controlplane_client.provider.overrides import override_variable
from controlplane_client.provider.provider import PROVIDER_NAME, ControlPlaneProvider
from controlplane_client.provider.stream import STREAM_PATH
from controlplane_client.provider.sync import SNAPSHOT_PATH

__all__ = ["PROVIDER_NAME", "SNAPSHOT_PATH", "STREAM_PATH", "ControlPlaneProvider", "override_variable"]
