"""Classroom Edge: the appliance (portal, agent, ...) and the console that watches a fleet of them."""

__version__ = "0.1.0"
