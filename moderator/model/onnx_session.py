"""onnxruntime sessions for a model thread that shares two cores with the rest of the service.

onnxruntime's default CPU session runs one intra-op thread per core that spin-waits between
operators and between calls. In this service the model thread shares the cores with the event
loop, the preparation pool, the broker and Redis, and the offline stack alternates onnxruntime
with torch (MiniLM): spinning threads then burn the cycles those need, and a two-thread pool that
waits on a descheduled peer at every operator is slower than one thread. So each session gets one
thread that sleeps when idle, and the offline stack runs its two image models side by side instead.
"""

from __future__ import annotations

import onnxruntime

# Threads per session: the offline stack runs open_nsfw and OCR concurrently, one thread each.
INTRA_OP_THREADS = 1


def session_options(*, cpu_memory_arena: bool = True) -> onnxruntime.SessionOptions:
    """Fully optimised graph, ``INTRA_OP_THREADS`` threads that do not spin while idle."""
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = INTRA_OP_THREADS
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.enable_cpu_mem_arena = cpu_memory_arena
    options.log_severity_level = 3
    return options


def rebuilt(session: onnxruntime.InferenceSession, *, cpu_memory_arena: bool = True) -> onnxruntime.InferenceSession:
    """The same model on the same providers (and their options) as ``session``, built by a library
    with default session options, now with ``session_options``."""
    providers = session.get_providers()
    provider_options = session.get_provider_options()
    return onnxruntime.InferenceSession(
        session._model_path,  # the path the library loaded; onnxruntime keeps it nowhere public
        sess_options=session_options(cpu_memory_arena=cpu_memory_arena),
        providers=providers,
        provider_options=[provider_options.get(name, {}) for name in providers],
    )
