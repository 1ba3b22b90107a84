"""The read side: every query that reads runs back goes through this package."""
