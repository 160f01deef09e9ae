"""Sensors: waiting for a raw day to land, and for a metric to stay bad (deferrable)."""
