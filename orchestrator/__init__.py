"""benchfleet controller: inventory, suites, planning, transport, results."""

__version__ = "0.1.0"
