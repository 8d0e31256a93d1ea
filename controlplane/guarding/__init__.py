"""Guarding: what spans alerting and rollouts. Guard readings for rollout gates (``readings``; shadow guards are
read but never hold a stage), automatic rollback of guarded rollouts whose guard breaches (``rollback``,
``evaluation``, ``jobs``), the Alertmanager webhook (``webhook``) and the backtest of a rule over stored traffic
(``replay``, served by ``controller``). Alerting and rollouts never import each other; this workflow asks one and hands
the answer on.
"""
