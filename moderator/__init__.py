"""moderator: real-time content moderation of image+text posts over Kafka."""

__version__ = "0.1.0"
