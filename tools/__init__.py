"""Operational helpers: topic administration, traffic generation, demo drivers."""
