"""cnnjax."""
