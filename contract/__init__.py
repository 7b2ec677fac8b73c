"""The wire contract shared by the edge agent, the collector and the control API.

Topic names, payload models, the command whitelist with its signing, and the settings
every service has in common live here once. This package must stay importable on a
Raspberry Pi without the hub's dependencies (no database or web framework imports).
"""
