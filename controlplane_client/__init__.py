"""Client packages of the control plane, importable by any application without the server.

- ``controlplane_client.provider``: the in-process OpenFeature provider (and the evaluation engine it shares with
  the server).
- ``controlplane_client.emitter``: the event emitter that ships a pipeline's events to ingest.
- ``controlplane_client.retry``: the one retry-with-backoff arithmetic and ``Retry-After`` reading.
- ``controlplane_client.objects``: the signed-URL expiry an application records on bucket objects for the cleanup.
- ``controlplane_client.observed``: the request observer of an ASGI app (the server's HTTP metrics, an application's
  request events).
- ``controlplane_client.logs``: the log line format (structlog processors, text or JSON) of the server and the
  pipeline.

Nothing here imports ``controlplane`` (the server) or ``pipeline`` (an application): the server depends on these
packages, never the other way round.
"""
