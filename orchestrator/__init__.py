"""benchfleet controller: inventory, suites, planning, transport, results.

The controller and the agent it ships are one release: one version.
"""

from agent import AGENT_VERSION as __version__  # noqa: F401
