"""Hooks: each talks to one system (see the package doc of operators)."""
