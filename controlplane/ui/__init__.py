"""The operator's page at ``/ui``: server-rendered HTML over the same services as the API, updated live by SSE.

controller.py   routes: sign-in and sign-out, the overview, one page per flag and environment, the rollout form,
                the live streams; the ``ui_router`` that mounts them with the vendored assets
session.py      the sign-in cookie and the CSRF token derived from it (pure)
views.py        what a page shows, read through rollouts, guarding, audit and notifications (never writes)
charts.py       a guard's values over its stage as an inline SVG (pure)
pages.py        the Jinja2 templates (templates/) and their filters, the vendored assets (static/), security headers
live.py         one watcher per replica: renders a page's live part once per change and pushes it to its streams
problems.py     problem details as a readable page or fragment, for browsers; JSON for everyone else
"""
