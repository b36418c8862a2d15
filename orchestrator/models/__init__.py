"""Models on the controller: built-in MoveNet-architecture models, variants, artifacts."""
