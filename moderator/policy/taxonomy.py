"""How a policy category maps onto the two taxonomies platforms already speak.

OpenAI's omni-moderation (13 category names) and Meta's Llama Guard 3 (14 hazard codes). A category
declares the names it corresponds to; decisions carry that mapping for the categories behind their
reasons, and the OpenAI-compatible API reports scores under OpenAI's names, so a platform can swap
one provider for another without rewriting its rules.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

OpenAICategory = Literal[
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
    "self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors", "violence",
    "violence/graphic",
]
LlamaGuardHazard = Literal["S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "S9", "S10", "S11", "S12", "S13", "S14"]

# Llama Guard 3's hazard taxonomy (MLCommons), for documentation and escalation prompts.
LLAMA_GUARD_3_HAZARDS: dict[str, str] = {
    "S1": "Violent Crimes", "S2": "Non-Violent Crimes", "S3": "Sex-Related Crimes", "S4": "Child Sexual Exploitation",
    "S5": "Defamation", "S6": "Specialized Advice", "S7": "Privacy", "S8": "Intellectual Property",
    "S9": "Indiscriminate Weapons", "S10": "Hate", "S11": "Suicide & Self-Harm", "S12": "Sexual Content",
    "S13": "Elections", "S14": "Code Interpreter Abuse",
}


class ProviderMapping(BaseModel):
    """The provider categories one policy category corresponds to (empty: no counterpart there)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    openai: tuple[OpenAICategory, ...] = Field(
        (), description="OpenAI omni-moderation category names, e.g. harassment/threatening.")
    llama_guard: tuple[LlamaGuardHazard, ...] = Field(
        (), description="Llama Guard 3 hazard codes, e.g. S1 (violent crimes).")
