"""Transitional: objectives moved to controlplane.catalog.objectives; renderers still import them from here."""

from controlplane.catalog.objectives import BURN_RATE_ALERTS, BurnRateAlert, Objective

__all__ = ["BURN_RATE_ALERTS", "BurnRateAlert", "Objective"]
