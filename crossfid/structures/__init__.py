"""Crystal structures built from parameters (no model, no database)."""
