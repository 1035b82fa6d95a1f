"""Model layer: encoders plus task heads that turn a post into per-category scores."""
