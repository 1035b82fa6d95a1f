"""Decisions: the one message per post published to the decisions topic."""
