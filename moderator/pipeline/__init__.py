"""The per-post data path as explicit stages, declared in ``handler.PostHandler``:

validate → bank check → score source → prepare → infer → decide → publish → observe → review hand-off.

One module per stage, each a small object with one job (as HMA names its folders after its
capabilities); the score source lives in ``moderator.cache.source``. Stages are instrumented
through ``Telemetry.stage``; I/O stages sit here, beside each other, while ``moderator.policy``
stays pure.
"""

from moderator.pipeline.banks import BankCheck, BankResult
from moderator.pipeline.decide import Decide, Decided
from moderator.pipeline.handler import PostHandler
from moderator.pipeline.infer import Infer
from moderator.pipeline.observe import Observe
from moderator.pipeline.prepare import Prepare
from moderator.pipeline.publish import Publish
from moderator.pipeline.review import ReviewHandOff, ReviewSink
from moderator.pipeline.validate import Validate

__all__ = ["BankCheck", "BankResult", "Decide", "Decided", "Infer", "Observe", "PostHandler", "Prepare", "Publish",
           "ReviewHandOff", "ReviewSink", "Validate"]
