"""The lab: a whole fleet on one machine, for development, demos and tests.

`runner.Lab` runs every capability's `LabPart` (`parts.py`): the foundation's broker, console
(web + ingest) and N simulated appliances (portal + agent) on loopback, and, with `--classroom`,
the virtual classroom in network namespaces that the network capability builds.
"""
