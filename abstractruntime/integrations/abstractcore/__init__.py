"""Real ``llm_call`` and ``tool_calls`` effects through AbstractCore.

Three modes (see ``docs/integrations/abstractcore.md``):

- **local** — :func:`create_local_runtime`: the LLM runs in-process via AbstractCore's
  ``create_llm(provider, model).generate``; tools run here. Needs ``abstractruntime[abstractcore]``.
- **remote** — :func:`create_remote_runtime`: the LLM is an AbstractCore server
  (``POST /v1/chat/completions``); tool calls are passed through and the run waits for approval.
  Needs only httpx.
- **hybrid** — :func:`create_hybrid_runtime`: remote LLM, local tools.

Importing this package is cheap: it imports neither AbstractCore nor httpx. AbstractCore is
loaded the first time a local client or an AbstractCore tool executor is built (without it,
:class:`~abstractruntime.core.errors.MissingExtraError`); httpx on the first remote call.
"""

from __future__ import annotations

from .approval import approve_tool_calls, deny_tool_calls, is_tool_approval_wait, pending_tool_calls
from .effect_handlers import build_effect_handlers, tool_calls_wait_key
from .factory import (
    build_mode_handlers,
    create_hybrid_runtime,
    create_local_runtime,
    create_remote_runtime,
    default_effect_policy,
    make_tool_executor,
)
from .http_sender import HttpxRequestSender, RequestSender
from .llm_client import AbstractCoreLLMClient, LocalAbstractCoreLLMClient, RemoteAbstractCoreLLMClient
from .messages import assistant_message, tool_result_messages
from .rate_limits import retry_after_seconds
from .usage import PriceTable, usage_record
from .tool_executor import (
    AbstractCoreToolExecutor,
    LocalToolExecutor,
    PassthroughToolExecutor,
    ToolExecutor,
    describe_tool,
)

__all__ = [
    "create_local_runtime",
    "create_remote_runtime",
    "create_hybrid_runtime",
    "build_effect_handlers",
    "build_mode_handlers",
    "default_effect_policy",
    "make_tool_executor",
    "tool_calls_wait_key",
    "AbstractCoreLLMClient",
    "LocalAbstractCoreLLMClient",
    "RemoteAbstractCoreLLMClient",
    "RequestSender",
    "HttpxRequestSender",
    "ToolExecutor",
    "AbstractCoreToolExecutor",
    "PassthroughToolExecutor",
    "LocalToolExecutor",
    "describe_tool",
    "assistant_message",
    "tool_result_messages",
    "is_tool_approval_wait",
    "pending_tool_calls",
    "approve_tool_calls",
    "deny_tool_calls",
    "PriceTable",
    "usage_record",
    "retry_after_seconds",
]
