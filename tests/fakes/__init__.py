"""Local fakes of external services (never of our own parts)."""
