"""``verify``: check ledgers offline. It reads files only; it never imports workflow code."""

# Annotations stay evaluated (no __future__ import): typer reads every command's signature at
# start-up, and string annotations would cost it an eval per parameter.
import sys
from types import ModuleType
from typing import Any, Optional

import typer

from .app import app, settings
from .exit_codes import VERIFY_FAILED
from .handles import run_id_of
from .output import Settings


def _first_problem(doc: dict[str, Any]) -> str:
    problems = doc.get("problems") or []
    if not problems:
        return f"{doc.get('problems_omitted')} problem(s)" if doc.get("problems_omitted") else ""
    first = problems[0]
    where = f"seq {first['seq']}: " if first.get("seq") is not None else ""
    return f"{first.get('type')}: {where}{first.get('message')}"


def _row(doc: dict[str, Any]) -> list[Any]:
    ok = bool(doc.get("ok"))
    # A pruned run is accounted for by its tombstone: "pruned" with the head it sealed.
    verdict = ("pruned" if doc.get("pruned") and not _present(doc) else "ok") if ok else "FAILED"
    return [verdict, doc.get("run_id"), doc.get("count"), doc.get("head_hash") if ok else _first_problem(doc)]


def _present(doc: dict[str, Any]) -> bool:
    """Whether a tombstoned run is still in the store (a prune to be finished)."""
    return any(n.get("type") == "prune_pending" for n in doc.get("notes") or [])


def _emit(s: Settings, docs: list[dict[str, Any]], *, single: bool) -> None:
    if s.json:
        s.emit_json(docs[0] if single else docs)
        return
    s.emit_table(["result", "run_id", "records", "head hash / first problem"], [_row(d) for d in docs])
    for d in docs:
        if not d.get("ok"):
            for problem in d.get("problems") or []:
                where = f" (seq {problem['seq']})" if problem.get("seq") is not None else ""
                typer.echo(f"error: run {d.get('run_id')}: {problem.get('type')}{where}: {problem.get('message')}",
                           err=True)


class _Progress:
    """A rich progress bar on stderr while ``verify --all`` runs (only on a terminal)."""

    def __init__(self, enabled: bool) -> None:
        self.bar: Any = None
        self.task: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import Progress

            self.bar = Progress(console=Console(stderr=True), transient=True)

    def __enter__(self) -> "_Progress":
        if self.bar is not None:
            self.bar.start()
            self.task = self.bar.add_task("verifying", total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def __call__(self, done: int, total: int, report: Any) -> None:
        """``verify_store``'s progress callback: after each run."""
        if self.bar is not None:
            self.bar.update(self.task, completed=done, total=total)


@app.command("verify")
def verify_cmd(
    ctx: typer.Context,
    run_id: Optional[str] = typer.Argument(None, metavar="[RUN]", help="The run to verify."),
    all_runs: bool = typer.Option(False, "--all", help="Verify every run in the store."),
    archive: Optional[str] = typer.Option(None, "--archive", metavar="FILE.tar.gz",
                                          help="Verify an archive written by `store export` (offline, no store)."),
    expect_head: Optional[str] = typer.Option(None, "--expect-head", metavar="HASH",
                                              help="Also require this ledger head hash (published elsewhere)."),
    public_key: list[str] = typer.Option(
        [], "--public-key", metavar="PEM_FILE|DIR",
        help="Require a head signed by this ed25519 key, or by a key it handed the run over to (rotations are "
             "followed). Repeatable; a directory gives its *.pub/*.pem keys. With several keys, rotations are "
             "followed from the key the run's first record names."),
    jobs: Optional[int] = typer.Option(
        None, "--jobs", min=1, metavar="N",
        help="Processes to verify with: runs side by side with --all, and a long ledger split at its anchors "
             "(default: the CPUs available; 1: one process). The report is the same with any N."),
    json_out: bool = typer.Option(False, "--json", help="The verification report(s) as JSON."),
) -> None:
    """Verify ledger hash chains, checkpoints and bookmarks (exit 0 ok, 3 failed).

    Piped output: one line per run, `ok<TAB>run_id<TAB>records<TAB>head_hash` or
    `FAILED<TAB>run_id<TAB>records<TAB>first problem`; each problem is also an `error:` line
    on stderr. A pruned run is `pruned<TAB>run_id<TAB>records<TAB>head_hash` from its tombstone;
    a damaged tombstone log is a FAILED line named `(tombstones)`. With --all, --expect-head must appear in some run; a store with no runs is
    exit 4 ("no runs to verify"), never "all ok". Workflow code is never imported.

    --archive FILE checks an archive of `store export` without any store: every member listed
    in its manifest with its size and SHA-256, nothing added or missing, every run's chain,
    checkpoint, bookmarks (and signatures with --public-key), and each run's head as the
    manifest names it. Its own problems are reported as `(archive)`.
    """
    s = settings(ctx, json_out)
    if (archive is not None) + all_runs + (run_id is not None) != 1:
        raise typer.BadParameter("give one of RUN, --all or --archive FILE", param_hint="RUN / --all / --archive")
    keys: Any = None
    if public_key:
        from abstractruntime.storage.signing import load_keyring

        keys = list(load_keyring(public_key).values())  # a missing or unusable key: exit 2, before any run
    if archive is not None:
        from abstractruntime.storage.archive import verify_archive

        checked = verify_archive(archive, public_key=keys, expect_head=expect_head)
        docs = [r.to_dict() for r in checked.reports]
        _emit(s, docs, single=False)
        bad = [d for d in docs if not d.get("ok")]
        s.info(f"archive {archive}: " + ("all ok" if not bad else f"{len(bad)} failed"))
        if bad:
            raise typer.Exit(VERIFY_FAILED)
        return
    store = s.open_store()
    verify_mod: ModuleType  # the two verifiers have the same functions
    options: dict[str, Any] = {}
    if getattr(store, "root", None) is None:  # a PostgreSQL store: its rows, checked by the same verifier
        from abstractruntime.storage.postgres import verify as pg_verify

        verify_mod = pg_verify
    else:
        from abstractruntime.storage import verify as file_verify

        verify_mod = file_verify
        options["jobs"] = jobs
    if run_id is not None:
        run_id = run_id_of(run_id)
        docs = [verify_mod.verify_run(store, run_id, expect_head=expect_head, public_key=keys, **options).to_dict()]
    else:
        with _Progress(enabled=sys.stderr.isatty() and not s.quiet) as progress:
            result = verify_mod.verify_store(store, expect_head=expect_head, progress=progress,
                                             public_key=keys, **options)
        docs = [r.to_dict() for r in result]
        if not docs:
            # Nothing verified is not "all ok": a wrong --store would otherwise pass.
            from abstractruntime.core.errors import NotFoundError

            where = s.store_root()
            raise NotFoundError(f"no runs to verify in store {where}", store=str(where))
    _emit(s, docs, single=run_id is not None)
    bad = [d for d in docs if not d.get("ok")]
    if run_id is None:
        s.info(f"verified {len(docs)} run(s): " + ("all ok" if not bad else f"{len(bad)} failed"))
    if bad:
        raise typer.Exit(VERIFY_FAILED)
