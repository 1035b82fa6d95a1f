"""The one settings object: environment variables with the MODERATOR_ prefix, and a .env file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from moderator.batching.config import BatchingConfig


class Settings(BaseSettings):
    """Service configuration. Every field maps to MODERATOR_<FIELD_NAME>."""

    model_config = SettingsConfigDict(env_prefix="MODERATOR_", env_file=".env", extra="ignore")

    # Endpoints. Empty means "not configured": the demo and tests then start embedded servers.
    kafka_bootstrap: str = ""
    redis_url: str = ""

    input_topic: str = "posts"
    output_topic: str = "decisions"
    dlq_topic: str = "posts.dlq"
    consumer_group: str = "moderator"
    create_topics: bool = Field(True, description="Create missing topics at start-up.")
    topic_partitions: int = 3
    # Idempotent producer: on against real Kafka; Tansu (the embedded broker) does not support it.
    kafka_idempotent_producer: bool = False
    kafka_client_id: str = "moderator"
    # The broker holds a group join for about half the session timeout; tests shorten it.
    kafka_session_timeout_ms: int = 10_000
    kafka_heartbeat_interval_ms: int = 3_000
    kafka_fetch_max_wait_ms: int = 10
    # Per-partition produce batch: a decision is ~1 kB, so the 16 kB client default throttles bursts.
    kafka_producer_batch_bytes: int = 512 * 1024
    kafka_retry_backoff_max_s: float = 5.0
    # read_committed: records of aborted (and still open) producer transactions are never moderated.
    kafka_isolation_level: Literal["read_committed", "read_uncommitted"] = Field(
        "read_committed", description="Which records of transactional producers the consumer reads.")

    policy_dir: Path = Path("policies")
    model: str = Field("", description="CLIP/SigLIP directory or hub name; empty = packaged offline stack.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    heads_dir: Path | None = Field(None, description="Directory of trained task heads (safetensors).")

    max_batch: int = Field(32, ge=1)
    max_wait_ms: float = Field(20.0, ge=0)
    adaptive_wait: bool = Field(True, description="Close a model batch before max_wait_ms when no other post is "
                                                  "queued or on its way to it.")
    preferred_batch_sizes: tuple[int, ...] = Field(
        (), description="Batch sizes the model runs best at (e.g. captured CUDA graphs); empty: any size.")
    prepare_workers: int | None = Field(None, ge=1, description="Threads that decode and prepare posts for the "
                                                                 "model (default: one per available core).")
    gpu_jpeg_decode: bool = Field(True, description="On CUDA with torchvision, decode JPEGs on the GPU (nvjpeg, "
                                                     "batched); other formats and failures decode on the CPU.")
    # Backpressure: posts consumed but not yet committed before partitions are paused.
    max_in_flight: int = Field(512, ge=1)
    fetch_max_records: int = Field(256, ge=1)
    commit_interval_ms: float = Field(500.0, ge=0)

    cache_ttl_s: int = Field(7 * 24 * 3600, ge=1)

    # Policies at run time: hot reload, shadow disagreements, recorded scores for backtests, hash banks.
    policy_watch: bool = Field(True, description="Reload the policy directory when its files change.")
    shadow_topic: str = Field("", description="Topic for shadow-policy disagreements; empty = metric only.")
    score_log_max: int = Field(1_000_000, ge=0, description="Decisions kept in Redis for backtests; 0 = none.")
    bank_refresh_s: float = Field(2.0, gt=0, description="How often hash banks are re-checked in Redis.")

    # Operations endpoints and logs (tracing export is configured by the standard OTEL_* variables).
    metrics_port: int | None = Field(None, ge=0, le=65535,
                                     description="Port of /metrics, /health, /ready; unset = no server, 0 = any.")
    metrics_host: str = Field("127.0.0.1", description="Bind address of the operations server (0.0.0.0 in pods).")
    log_format: Literal["text", "json"] = Field("text", description="json: one object per line, with trace ids.")

    # The synchronous HTTP API (/v1/moderations, /v1/decide); its keys live in Redis.
    api_port: int | None = Field(None, ge=0, le=65535, description="Port of the HTTP API; unset = off, 0 = any.")
    api_host: str = Field("127.0.0.1", description="Bind address of the HTTP API (0.0.0.0 in pods).")
    api_max_in_flight: int = Field(512, ge=1, description="API requests served at once; more get 429 + Retry-After.")
    api_max_inputs: int = Field(32, ge=1, description="Strings in one /v1/moderations request.")
    api_key_secret: SecretStr = Field(SecretStr(""), description="Server secret (32+ characters) under which API "
                                      "keys are stored as HMACs; the demo makes a fresh one.")
    api_key_cache_s: float = Field(5.0, ge=0, description="How long a verified API key is remembered (a revoked "
                                                          "key is refused within this time).")

    # Input limits (hostile input protection).
    max_text_chars: int = 20_000
    max_message_bytes: int = 16 * 1024 * 1024
    max_image_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_image_side: int = 20_000
    max_image_aspect_ratio: float = 100.0
    url_fetch_timeout_s: float = 5.0
    url_allow_private: bool = Field(False, description="Allow image URLs on loopback/private ranges (tests only).")

    review_host: str = "127.0.0.1"
    review_port: int = 8080
    # API tokens are stored as HMAC-SHA256 under this secret (`moderator review user add` issues them).
    review_token_secret: SecretStr = Field(SecretStr(""), description="Server secret (32+ characters) under which "
                                           "review API tokens are stored; the demo makes a fresh one.")
    review_trusted_proxies: list[str] = Field(default_factory=list, description="Proxy addresses or networks whose "
                                              "X-Forwarded-For/-Proto the review app believes.")
    review_tls_certfile: Path | None = Field(None, description="Serve the review app over HTTPS with this certificate.")
    review_tls_keyfile: Path | None = Field(None, description="The private key of review_tls_certfile.")
    review_login_free_attempts: int = Field(5, ge=1, description="Failed sign-ins per address or account before "
                                            "the review app makes the next one wait.")
    review_login_backoff_s: float = Field(1.0, gt=0, description="First wait after the free attempts; doubles "
                                          "with every further failure.")
    review_login_backoff_max_s: float = Field(900.0, gt=0, description="Longest wait between sign-in attempts.")
    review_login_window_s: int = Field(3600, ge=60, description="How long failed sign-ins are remembered.")
    review_max_claims: int = Field(20, ge=1, description="Items one reviewer may hold at once.")
    review_max_renewals: int = Field(12, ge=0, description="Lease renewals per claim of one item.")
    review_security_log_max: int = Field(10_000, ge=100, description="Failed sign-ins kept (apart from the audit log).")
    review_lease_s: float = Field(300.0, gt=0, description="How long a claim holds an item before it returns.")
    review_item_ttl_s: int = Field(30 * 24 * 3600, ge=60, description="How long review items and images live.")
    review_image_max_side: int = Field(512, ge=64, le=2048, description="Side of the stored review image (JPEG).")
    review_session_ttl_s: int = Field(8 * 3600, ge=60)
    review_secure_cookies: bool = Field(False, description="Mark cookies Secure even on plain HTTP (HTTPS does it "
                                         "by itself).")
    review_audit_max: int = Field(100_000, ge=100, description="Audit log entries kept (oldest trimmed).")

    @property
    def batching(self) -> BatchingConfig:
        """The classifier's batching block (MODERATOR_MAX_BATCH, _MAX_WAIT_MS, _ADAPTIVE_WAIT, _PREFERRED_BATCH_SIZES)."""
        return BatchingConfig(max_batch=self.max_batch, max_wait_ms=self.max_wait_ms, adaptive=self.adaptive_wait,
                              preferred_sizes=self.preferred_batch_sizes)
