"""Guarding: what spans alerting and rollouts. Guard readings for rollout gates (``readings``), automatic rollback
of guarded rollouts whose guard breaches (``rollback``, ``evaluation``, ``jobs``) and the Alertmanager webhook
(``webhook``). Alerting and rollouts never import each other; this workflow asks one and hands the answer on.
"""
