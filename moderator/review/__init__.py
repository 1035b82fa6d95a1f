"""Human review: the Redis review queue, the reviewer API and web UI, and reviewer decisions.

`queue` holds items the policy sent to ``review`` (per-policy, by priority, claimed with leases);
`app` serves the API and the UI; `auth` checks tokens, sessions and CSRF; `outbox` publishes
reviewer decisions to the decisions topic; `labels` exports decisions as training labels.
"""
