"""acl: which groups each document gets, and the rule that gave them (nothing is written)."""

from __future__ import annotations

from pathlib import Path

from . import render
from .common import ConfigOpt, JsonOpt, settings_from
from .index import PathsArg


def acl(paths: PathsArg, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Show each document's groups and the rule that gave them: front matter, an acl.toml rule or
    default (found from the file's directory upwards), or the default_acl setting."""
    from ..ingest.sources import explain_acls

    settings = settings_from(config)
    documents, skipped = explain_acls([Path(p) for p in paths], settings.default_acl)
    rows = [{"doc_id": d.doc_id, "source": d.source, "groups": list(d.acl), "rule": d.acl_rule}
            for d in documents]
    if as_json:
        render.print_json({"documents": rows,
                           "skipped": [{"source": s.source, "reason": s.reason} for s in skipped]})
    else:
        render.acl_decisions(rows)
        for skip in skipped:
            render.warning(f"skipped {skip.source}: {skip.reason}")
