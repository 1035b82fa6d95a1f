"""Score cache: content hashes and Redis-held model scores."""
