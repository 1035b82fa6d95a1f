"""The wire contract as files: JSON Schemas of every message moderator reads or writes, and an AsyncAPI 3.0 document.

Generated from the pydantic models, so the published contract cannot drift from the code:
`moderator contract export` writes them, and a test fails when the committed files differ.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from moderator import __version__
from moderator.decisions.schema import Decision
from moderator.ingest.schema import DeadLetter, Post
from moderator.policy.shadow import ShadowDisagreement
from moderator.settings import Settings

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ASYNCAPI_FILE = "asyncapi.yaml"
TRACEPARENT = {"type": "string", "description": "W3C trace context, e.g. 00-<trace id>-<span id>-01"}


@dataclass(frozen=True)
class Message:
    """One kind of message on one topic, as the contract documents it."""

    name: str
    model: type[BaseModel]
    # Posts are validated on the way in; everything else is what moderator writes.
    mode: Literal["validation", "serialization"]
    channel: str
    address: str | None
    action: Literal["send", "receive"]  # from moderator's side
    summary: str
    key: str
    traceparent: str | None

    @property
    def schema_file(self) -> str:
        return f"{self.name}.schema.json"


def messages(settings: Settings) -> list[Message]:
    """The messages on moderator's topics, with the topic names of ``settings`` (the defaults for the docs)."""
    return [
        Message("post", Post, "validation", "posts", settings.input_topic, "receive",
                "A user upload to moderate. Unknown top-level fields are kept in metadata.",
                "post_id (UTF-8); records of one post_id keep their order",
                "read: the decision's trace continues this trace"),
        Message("decision", Decision, "serialization", "decisions", settings.output_topic, "send",
                "Exactly one per post decided by the model, the cache or a hash bank, and one more per "
                "reviewer verdict (source: reviewer) for posts sent to review.",
                "post_id", "written: the trace of this decision"),
        Message("dead-letter", DeadLetter, "serialization", "deadLetters", settings.dlq_topic, "send",
                "A record that could not be moderated, with a stable reason and the original bytes for replay.",
                "post_id when it could be read, else the original record's key",
                "the original record's headers are copied"),
        Message("shadow-disagreement", ShadowDisagreement, "serialization", "shadowDisagreements",
                settings.shadow_topic or None, "send",
                "A post on which a shadow (candidate) policy would have acted differently from the live "
                "one. Only published when MODERATOR_SHADOW_TOPIC is set; best effort (a lost one costs "
                "a count, never a decision).",
                "post_id", None),
    ]


def json_schemas(settings: Settings | None = None) -> dict[str, dict[str, Any]]:
    """One standalone JSON Schema (draft 2020-12) per message, by file name."""
    schemas: dict[str, dict[str, Any]] = {}
    for message in messages(settings or Settings.model_construct()):
        schema = message.model.model_json_schema(mode=message.mode)
        schemas[message.schema_file] = {"$schema": JSON_SCHEMA_DIALECT, "$id": message.schema_file, **schema}
    return schemas


def asyncapi(settings: Settings | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of moderator's topics, with the message schemas under components."""
    settings = settings or Settings.model_construct()
    listed = messages(settings)
    _, definitions = models_json_schema([(m.model, m.mode) for m in listed],
                                        ref_template="#/components/schemas/{model}")
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    components: dict[str, Any] = {"messages": {}, "schemas": definitions["$defs"]}
    for m in listed:
        title = m.model.__name__
        message: dict[str, Any] = {
            "name": title,
            "title": title,
            "summary": m.summary,
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{title}"},
            "bindings": {"kafka": {"key": {"type": "string", "description": m.key}, "bindingVersion": "0.5.0"}},
        }
        if m.traceparent is not None:
            message["headers"] = {"type": "object", "properties": {
                "traceparent": {**TRACEPARENT, "description": f"{TRACEPARENT['description']}; {m.traceparent}"}}}
        components["messages"][title] = message
        channels[m.channel] = {
            "address": m.address,
            "description": f"Topic name from settings ({_setting_for(m.channel)}).",
            "messages": {title: {"$ref": f"#/components/messages/{title}"}},
        }
        verb = "consume" if m.action == "receive" else "publish"
        operations[f"{verb}{m.channel[0].upper()}{m.channel[1:]}"] = {
            "action": m.action,
            "channel": {"$ref": f"#/channels/{m.channel}"},
            "messages": [{"$ref": f"#/channels/{m.channel}/messages/{title}"}],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "moderator",
            "version": __version__,
            "description": "Topics and messages of the moderator service. A platform publishes posts; "
                           "moderator publishes one decision per post (and one per reviewer verdict), dead "
                           "letters for records it cannot moderate, and optionally shadow-policy "
                           "disagreements. All values are UTF-8 JSON. See docs/contract.md.",
        },
        "defaultContentType": "application/json",
        "servers": {"kafka": {"host": "localhost:9092", "protocol": "kafka",
                              "description": "Any Kafka-compatible broker: MODERATOR_KAFKA_BOOTSTRAP."}},
        "channels": channels,
        "operations": operations,
        "components": components,
    }


def _setting_for(channel: str) -> str:
    return {"posts": "MODERATOR_INPUT_TOPIC", "decisions": "MODERATOR_OUTPUT_TOPIC",
            "deadLetters": "MODERATOR_DLQ_TOPIC", "shadowDisagreements": "MODERATOR_SHADOW_TOPIC, off when empty"}[channel]


def rendered() -> dict[str, str]:
    """Every contract file's text by file name, as `moderator contract export` writes it."""
    files = {name: json.dumps(schema, indent=2, ensure_ascii=False) + "\n" for name, schema in json_schemas().items()}
    files[ASYNCAPI_FILE] = ("# Generated by `moderator contract export` from the pydantic models; do not edit.\n"
                            + yaml.safe_dump(asyncapi(), sort_keys=False, allow_unicode=True, width=110))
    return files
