"""The synchronous HTTP moderation API (OpenAI-compatible /v1/moderations and /v1/decide)."""
