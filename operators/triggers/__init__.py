"""Triggers of the deferrable sensors: they wait in the triggerer's event loop, not in a worker slot.

Each trigger serializes itself under its public path here (what the triggerer imports from the
database), so that path stays valid whichever module holds the class.
"""
from .prometheus import PrometheusConditionTrigger

__all__ = ["PrometheusConditionTrigger"]
