"""Loading what users write: strict YAML, the device inventory, suites."""
