"""Fault tests: the control plane's database stopped and frozen mid-traffic (``test_database_faults``), the leader
killed (``test_leader_killed``), replicas started together on an empty database (``test_replicas_start_together``).

The hostile inputs live next to the behaviour they break, each as a test run on both backends:

- integer path and query parameters past what the databases store, and OPTIONS on every route: the route-table
  tests of ``tests/integration/test_route_auth.py``;
- values past their unit's maximum (two of 1e308 summed to infinity): ``tests/integration/test_ingest_api.py``;
- concurrent asset generation of one run, a polyglot upload, an empty file and a pixel bomb:
  ``tests/integration/test_pipeline_service.py`` and ``tests/unit/test_pipeline_images.py``.
"""
