"""The verification verdict shown in the header: one line per layer, from ``verify_run``'s report."""

from __future__ import annotations

import shlex
from typing import Any, Optional

from .escape import text

# Problem types by the layer that detects them (abstractruntime.storage.verify).
LAYERS: dict[str, tuple[str, ...]] = {
    "chain": ("invalid_json", "invalid_record", "unsupported_format", "unreadable_ledger", "seq_mismatch",
              "prev_hash_mismatch", "missing_record_hash", "record_hash_mismatch", "wrong_run", "not_an_object",
              "segment_missing", "segment_unsealed", "segment_mismatch", "segment_truncated", "segment_misplaced",
              "segment_stray"),
    "checkpoint": ("checkpoint_missing", "checkpoint_corrupt", "ledger_truncated", "checkpoint_head_mismatch",
                   "checkpoint_rollback"),
    "bookmarks": ("bookmark_missing_record", "bookmark_mismatch", "bookmarks_corrupt"),
    "signature": ("signature_missing", "signature_invalid", "signature_mismatch"),
}
LAYER_TITLES = {"chain": "hash chain", "checkpoint": "checkpoint anchor", "bookmarks": "bookmarks",
                "signature": "signature", "other": "other"}


def layer_of(kind: Any) -> str:
    """The layer a problem type belongs to (``other`` for types this page does not know)."""
    for layer, kinds in LAYERS.items():
        if kind in kinds:
            return layer
    return "other"


def checks(verify: dict[str, Any], scope: str) -> list[tuple[str, str, str]]:
    """``(layer, state, explanation)`` rows; state is ``ok``, ``failed``, ``none`` or ``unchecked``."""
    problems = verify.get("problems") or []
    by_layer: dict[str, list[dict[str, Any]]] = {}
    for p in problems:
        by_layer.setdefault(layer_of(p.get("type")), []).append(p)
    count = verify.get("count") or 0
    head = verify.get("checkpoint_head") or {}
    out: list[tuple[str, str, str]] = []
    out.append(("chain", "failed" if by_layer.get("chain") else "ok",
                f"{len(by_layer['chain'])} problem(s)" if by_layer.get("chain")
                else f"{count} record(s), every hash and link recomputed"))
    if scope != "files":
        out.append(("checkpoint", "unchecked", "this store has no run files: only the hash chain was checked"))
    elif by_layer.get("checkpoint"):
        out.append(("checkpoint", "failed", f"{len(by_layer['checkpoint'])} problem(s)"))
    else:
        out.append(("checkpoint", "ok" if head.get("seq") else "none",
                    f"run.json reflects seq {head.get('seq')} with the same head hash" if head.get("seq")
                    else "the checkpoint records no ledger position"))
    marks = verify.get("bookmarks_checked") or 0
    if by_layer.get("bookmarks"):
        out.append(("bookmarks", "failed", f"{len(by_layer['bookmarks'])} problem(s)"))
    else:
        out.append(("bookmarks", "ok" if marks else "none",
                    f"{marks} bookmark(s) match their records" if marks else "no bookmarks"))
    sig = verify.get("signature") or "absent"
    if by_layer.get("signature"):
        out.append(("signature", "failed", f"{len(by_layer['signature'])} problem(s)"))
    else:
        state = {"valid": "ok", "absent": "none", "unchecked": "unchecked"}.get(sig, "failed")
        note = {"valid": "valid for the given key", "absent": "not signed",
                "unchecked": "signed; pass --public-key to `verify` to check it"}.get(sig, sig)
        out.append(("signature", state, note))
    if by_layer.get("other"):
        out.append(("other", "failed", f"{len(by_layer['other'])} problem(s)"))
    return out


def reverify_command(store_path: str, run_id: str, head: Optional[str]) -> str:
    """The shell command that repeats this verification (pinning the head this report saw)."""
    parts = ["abstractruntime"]
    if store_path:
        parts += ["--store", store_path]
    parts += ["verify", run_id]
    if head:
        parts += ["--expect-head", head]
    return " ".join(shlex.quote(p) for p in parts)


def verdict_html(verify: dict[str, Any], scope: str, *, store_path: str, run_id: str, generated_at: str) -> str:
    """The verdict box: a headline, the per-layer table, problems and notes, how to re-verify."""
    ok = bool(verify.get("ok"))
    head = verify.get("head_hash")
    problems = verify.get("problems") or []
    omitted = verify.get("problems_omitted") or 0
    headline = ("Verified: the ledger is intact" if ok
                else f"Verification FAILED: {len(problems) + omitted} problem(s)")
    rows = "".join(f'<tr data-check="{text(layer)}" class="check-{text(state)}"><th>{text(LAYER_TITLES[layer])}</th>'
                   f'<td class="state">{text(state)}</td><td>{text(why)}</td></tr>'
                   for layer, state, why in checks(verify, scope))
    items = []
    for p in problems:
        where = []
        if p.get("seq") is not None:
            where.append(f'<a href="#seq-{text(p.get("seq"))}">seq {text(p.get("seq"))}</a>')
        if p.get("line") is not None:
            where.append(f"line {text(p.get('line'))}")
        items.append(f"<li><code>{text(p.get('type'))}</code> {' '.join(where)}: {text(p.get('message'))}</li>")
    if omitted:
        items.append(f"<li>… and {text(omitted)} more</li>")
    notes = "".join(f"<li><code>{text(n.get('type'))}</code>: {text(n.get('message'))}</li>"
                    for n in verify.get("notes") or [])
    cmd = reverify_command(store_path, run_id, head)
    return (f'<section id="verdict" class="verdict {"ok" if ok else "failed"}" data-ok="{"true" if ok else "false"}">'
            f'<h2 class="headline">{"✔" if ok else "✘"} {text(headline)}</h2>'
            f'<table class="checks">{rows}</table>'
            + (f'<ul class="problems">{"".join(items)}</ul>' if items else "")
            + (f'<details class="notes"><summary>notes ({len(verify.get("notes") or [])})</summary>'
               f'<ul>{notes}</ul></details>' if notes else "")
            + f'<p class="head">head hash <code id="head-hash">{text(head or "none")}</code> '
              f'(seq {text(verify.get("head_seq"))}); checked {text(generated_at)}</p>'
              f'<p class="reverify">re-verify: <code id="reverify">{text(cmd)}</code></p></section>')


__all__ = ["checks", "verdict_html", "reverify_command", "layer_of", "LAYERS"]
