"""Importing the integration costs nothing: no AbstractCore, no httpx, no logging changes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

import abstractruntime.integrations.abstractcore as integration

# Makes `import abstractcore` fail in a child interpreter, as if the extra were not installed.
BLOCK_ABSTRACTCORE = textwrap.dedent(
    """
    import sys
    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name == "abstractcore" or name.startswith("abstractcore."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None
    sys.meta_path.insert(0, _Block())
    """
)


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter of this venv; fail the test on a non-zero exit."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_import_loads_neither_abstractcore_nor_httpx() -> None:
    proc = run_python(
        "import sys, json, logging\n"
        "before = (list(logging.getLogger().handlers), logging.getLogger().level)\n"
        "import abstractruntime.integrations.abstractcore as m\n"
        "names = [n for n in sys.modules if n.split('.')[0] in ('abstractcore', 'httpx')]\n"
        "after = (list(logging.getLogger().handlers), logging.getLogger().level)\n"
        "print(json.dumps({'loaded': names, 'logging_unchanged': before == after}))\n"
    )
    report = json.loads(proc.stdout)
    assert report == {"loaded": [], "logging_unchanged": True}


def test_import_and_plain_tools_work_without_abstractcore() -> None:
    proc = run_python(
        BLOCK_ABSTRACTCORE
        + textwrap.dedent(
            """
            import json
            from abstractruntime.integrations.abstractcore import LocalToolExecutor, PassthroughToolExecutor
            from abstractruntime.integrations.abstractcore import make_tool_executor
            def double(x: int) -> int:
                return 2 * x
            executor = make_tool_executor([double])
            out = executor.execute(tool_calls=[{"name": "double", "arguments": {"x": 21}, "call_id": "c1"}])
            print(json.dumps({"kind": type(executor).__name__, "out": out}))
            """
        )
    )
    report = json.loads(proc.stdout)
    assert report["kind"] == "LocalToolExecutor"
    assert report["out"]["results"][0]["output"] == 42


@pytest.mark.parametrize(
    "call",
    [
        "LocalAbstractCoreLLMClient(provider='ollama', model='m')",
        "create_local_runtime(provider='ollama', model='m', run_store=InMemoryRunStore(), "
        "ledger_store=InMemoryLedgerStore())",
        "AbstractCoreToolExecutor()",
    ],
)
def test_local_mode_without_abstractcore_raises_missing_extra(call: str) -> None:
    proc = run_python(
        BLOCK_ABSTRACTCORE
        + textwrap.dedent(
            f"""
            import json
            from abstractruntime.core.errors import MissingExtraError
            from abstractruntime.storage.in_memory import InMemoryRunStore, InMemoryLedgerStore
            from abstractruntime.integrations.abstractcore import *
            try:
                {call}
            except MissingExtraError as exc:
                print(json.dumps({{"code": exc.code, "message": str(exc), "details": exc.details}}))
            """
        )
    )
    report = json.loads(proc.stdout)
    assert report["code"] == "missing_extra"
    assert report["details"] == {"package": "abstractcore", "extra": "abstractcore"}
    assert "pip install -e '.[abstractcore]'" in report["message"]


def test_local_mode_error_names_its_purpose() -> None:
    proc = run_python(
        BLOCK_ABSTRACTCORE
        + "from abstractruntime.integrations.abstractcore import LocalAbstractCoreLLMClient\n"
        "try:\n    LocalAbstractCoreLLMClient(provider='ollama', model='m')\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    assert proc.stdout.startswith("Local LLM mode needs the 'abstractcore' package")


def test_public_names_are_exported() -> None:
    required = {
        "create_local_runtime", "create_remote_runtime", "create_hybrid_runtime", "build_effect_handlers",
        "LocalAbstractCoreLLMClient", "RemoteAbstractCoreLLMClient", "AbstractCoreToolExecutor",
        "PassthroughToolExecutor", "LocalToolExecutor",
    }
    assert required <= set(integration.__all__)
    for name in integration.__all__:
        assert getattr(integration, name) is not None
    # the module paths upstream AbstractRuntime 0.0.1 code imports from
    from abstractruntime.integrations.abstractcore.effect_handlers import build_effect_handlers
    from abstractruntime.integrations.abstractcore.llm_client import RemoteAbstractCoreLLMClient
    from abstractruntime.integrations.abstractcore.tool_executor import AbstractCoreToolExecutor

    assert build_effect_handlers is integration.build_effect_handlers
    assert RemoteAbstractCoreLLMClient is integration.RemoteAbstractCoreLLMClient
    assert AbstractCoreToolExecutor is integration.AbstractCoreToolExecutor


def test_remote_client_with_injected_sender_needs_no_httpx() -> None:
    proc = run_python(
        textwrap.dedent(
            """
            import sys, json
            from abstractruntime.integrations.abstractcore import RemoteAbstractCoreLLMClient
            class Sender:
                def post(self, url, *, headers, json, timeout):
                    return {"model": json["model"], "choices": [{"message": {"content": "hi"},
                            "finish_reason": "stop"}]}
            client = RemoteAbstractCoreLLMClient(server_base_url="http://h:1", model="m", request_sender=Sender())
            out = client.generate(prompt="x")
            print(json.dumps({"content": out["content"], "httpx": "httpx" in sys.modules}))
            """
        )
    )
    assert json.loads(proc.stdout) == {"content": "hi", "httpx": False}
