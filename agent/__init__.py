"""benchfleet agent: runs on the device (Python >= 3.6, stdlib core)."""

AGENT_VERSION = "0.2.0"
