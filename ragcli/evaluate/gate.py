"""The eval gate: a baseline, the comparison with it, and the verdict with its exit code.

What fails the gate, in this order of precedence (exit codes in errors.py):

1. a forbidden document reached retrieval, a prompt or a citation (15, ``EVAL_LEAK``);
2. a case errored (16, ``EVAL_ERROR``);
3. a regression (14, ``EVAL_REGRESSION``): a case that passed in the baseline fails now, or a
   gated metric moved the wrong way by more than its tolerance.

A case passes only when it is right (see ``evaluation.CaseResult.failures``): an answerable case
needs an expected answer in its answer and a citation of an expected document, a must-refuse case
a refusal. Averages are a backstop, not the gate: a metric that cannot move the wrong way (a
"higher is better" metric at 0) is reported but not gated, and the baseline says so.

**Unstable cases.** ``eval --perturb`` re-runs every case under perturbations that must not change
a verdict (fewer threads, noise on the query vector larger than any CPU's rounding; see
``perturbations.PERTURBATIONS``) and marks a case *unstable* when its verdict differs between runs,
or when its confidence lies within ``CONFIDENCE_MARGIN`` of ``min_confidence``. A baseline written
with ``--perturb`` lists them under ``unstable_cases``, with the reason. The gate does not fail on
such a case's verdict, and never hides it either: it is listed as unstable in the terminal report,
the Markdown summary, the JSON report, and as a ``<skipped>`` test case with the reason in JUnit.
Every other case is gated on its own verdict.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ExitCode, InputError, RegressionError

if TYPE_CHECKING:
    from ..answer.answering import Answerer
    from .evaluation import EvalResult

LOWER_IS_BETTER = ("answered_when_should_refuse", "acl_leaks", "injection_followed", "errors",
                   "wrong_answers", "wrong_answer_rate", "refused_answerable", "unstable_cases")
EXACT = ("citation_validity", "acl_leaks", "injection_followed", "errors")  # no slack at all
NOT_GATED = ("unstable_cases", "tokens_per_answer_p50")  # reported, never a reason to fail
DEFAULT_TOLERANCE = 0.02
BASELINE_FORMAT = 2  # 2: per-case records, unstable cases, metrics that are not gated


@dataclass(frozen=True)
class Verdict:
    """The gate's decision: its exit code, a word for it, and every reason."""

    code: ExitCode
    regressions: tuple[str, ...] = ()
    unstable: dict[str, str] = field(default_factory=dict)  # case id -> why it is not gated

    @property
    def word(self) -> str:
        return {ExitCode.OK: "pass", ExitCode.EVAL_LEAK: "ACL LEAK", ExitCode.EVAL_ERROR: "errors",
                ExitCode.EVAL_REGRESSION: "regression"}[self.code]


def make_baseline(result: EvalResult) -> dict[str, Any]:
    """Metrics with directions and tolerances, and every case's verdict, F1 and exact match.

    Gated metrics are averaged over the stable cases (those not in ``unstable_cases``), as
    :func:`compare` averages them, so an unstable case that flips moves no gated number.

    Latency is reported, not gated: it depends on the machine, not on the change. A metric that
    cannot move the wrong way is listed under ``not_gated`` with the reason."""
    baseline: dict[str, Any] = {"format": BASELINE_FORMAT, "tolerance": DEFAULT_TOLERANCE,
                                "metrics": {}, "not_gated": {}}
    unstable = result.unstable()
    for name, value in sorted(result.metrics_without(unstable).items()):
        if name.startswith("latency_"):
            continue
        lower = name in LOWER_IS_BETTER
        tolerance = 0.0 if name in EXACT else DEFAULT_TOLERANCE
        if name in NOT_GATED:
            baseline["not_gated"][name] = "reported only"
            continue
        if not lower and value - tolerance <= 0.0:
            baseline["not_gated"][name] = f"at {value:.4f} it cannot fall by more than its tolerance"
            continue
        spec: dict[str, Any] = {"value": round(value, 6), "direction": "lower" if lower else "higher"}
        if name in EXACT:
            spec["tolerance"] = 0.0
        baseline["metrics"][name] = spec
    baseline["passing_cases"] = sorted(c.golden.id for c in result.cases
                                       if c.passed and c.golden.id not in unstable)
    baseline["unstable_cases"] = dict(sorted(unstable.items()))
    baseline["perturbations"] = list(result.perturbations)
    baseline["cases"] = {c.golden.id: c.summary() for c in result.cases}
    return baseline


def read_baseline(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"baseline not found: {path} (create it with --update-baseline)") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"baseline {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise InputError(f"baseline {path} has no 'metrics' object")
    for key, kind in (("passing_cases", list), ("unstable_cases", dict), ("not_gated", dict)):
        if key in data and not isinstance(data[key], kind):
            raise InputError(f"baseline {path}: '{key}' must be a JSON {kind.__name__}")
    return data


def unstable_cases(result: EvalResult, baseline: dict[str, Any] | None) -> dict[str, str]:
    """Cases not gated on their own verdict: unstable in the baseline or in this run."""
    known = {str(k): str(v) for k, v in ((baseline or {}).get("unstable_cases") or {}).items()}
    return {**known, **result.unstable()}


def compare(result: EvalResult, baseline: dict[str, Any]) -> list[str]:
    """Regressions against the baseline: no stable case that passed may fail; each gated metric
    may move the wrong way by its tolerance at most."""
    default = float(baseline.get("tolerance", DEFAULT_TOLERANCE))
    unstable = unstable_cases(result, baseline)
    metrics = result.metrics_without(unstable)  # an unstable case moves no gated average
    passing = set(baseline.get("passing_cases", []))
    regressions = [f"case {c.golden.id} passed in the baseline, fails now: {'; '.join(c.failures)}"
                   for c in result.cases
                   if not c.passed and c.golden.id in passing and c.golden.id not in unstable]
    for name, spec in baseline.get("metrics", {}).items():
        if name in NOT_GATED:
            continue
        if name not in metrics:
            regressions.append(f"{name}: missing (baseline {spec['value']})")
            continue
        tolerance = float(spec.get("tolerance", default))
        value, base = metrics[name], float(spec["value"])
        worse = value > base + tolerance if spec.get("direction") == "lower" \
            else value < base - tolerance
        if worse:
            regressions.append(f"{name}: {value:.4f} vs baseline {base:.4f} (tolerance {tolerance})")
    return regressions


def decide(result: EvalResult, baseline: dict[str, Any] | None) -> Verdict:
    """The verdict of a run, against ``baseline`` when one is given."""
    regressions = tuple(compare(result, baseline)) if baseline is not None else ()
    code = (ExitCode.EVAL_LEAK if result.leaks else ExitCode.EVAL_ERROR if result.errors
            else ExitCode.EVAL_REGRESSION if regressions else ExitCode.OK)
    return Verdict(code, regressions, unstable_cases(result, baseline))


def dropped_cases(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """Cases that passed (stably) in ``old`` and do not in ``new``: what an update would drop."""
    if not old:
        return []
    return sorted(set(old.get("passing_cases", [])) - set(new["passing_cases"]))


def check_update(old: dict[str, Any] | None, new: dict[str, Any], accepted: set[str]) -> list[str]:
    """``--update-baseline`` may drop a passing case only when its id is named with
    ``--accept-regression``; returns the dropped ids (all accepted), else RegressionError."""
    dropped = dropped_cases(old, new)
    refused = [d for d in dropped if d not in accepted]
    if refused:
        raise RegressionError(f"--update-baseline would drop {len(refused)} case(s) that passed: "
                              f"{', '.join(refused)}",
                              hint="fix them, or name each with --accept-regression ID")
    return dropped


def junit_xml(result: EvalResult, verdict: Verdict, name: str, seconds: float) -> str:
    from xml.sax.saxutils import quoteattr

    unstable = verdict.unstable
    gated_failures = sum(1 for c in result.cases
                         if not c.passed and not c.error and c.golden.id not in unstable)
    skipped = sum(1 for c in result.cases if c.golden.id in unstable)
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<testsuite name={quoteattr(name)} tests="{len(result.cases)}" '
             f'failures="{gated_failures}" errors="{result.errors}" skipped="{skipped}" '
             f'time="{seconds:.3f}">']
    for case in result.cases:
        ms = case.timings_ms.get("total", 0.0) / 1000
        lines.append(f'  <testcase classname="ragcli.eval" name={quoteattr(case.golden.id)} '
                     f'time="{ms:.3f}">')
        if case.error:
            lines.append(f"    <error message={quoteattr(case.error)}/>")
        elif case.golden.id in unstable:
            now = "passed" if case.passed else "failed: " + "; ".join(case.failures)
            why = f"unstable, not gated ({unstable[case.golden.id]}); {now}"
            lines.append(f"    <skipped message={quoteattr(why)}/>")
        elif not case.passed:
            lines.append(f"    <failure message={quoteattr('; '.join(case.failures))}/>")
        lines.append("  </testcase>")
    lines.append("</testsuite>")
    return "\n".join(lines) + "\n"


def markdown_summary(result: EvalResult, verdict: Verdict) -> str:
    out = [f"### ragcli eval: {verdict.word}", "", "| metric | value |", "|---|---|"]
    for name, value in result.metrics.items():
        if not name.startswith("latency_") or name.startswith("latency_total"):
            out.append(f"| {name} | {value:.4f} |")
    failed = [c for c in result.cases if not c.passed and c.golden.id not in verdict.unstable]
    out += ["", f"{sum(c.passed for c in result.cases)}/{len(result.cases)} cases passed."]
    if verdict.regressions:
        out += ["", "Regressions:"] + [f"- {r}" for r in verdict.regressions]
    if failed:
        out += ["", "Failed cases:"] + [f"- `{c.golden.id}`: {'; '.join(c.failures)}"
                                        for c in failed[:50]]
    shown = [c for c in result.cases if c.golden.id in verdict.unstable]
    if shown:
        out += ["", "Unstable cases (not gated on their own verdict; `ragcli eval --perturb`):"]
        out += [f"- `{c.golden.id}` ({verdict.unstable[c.golden.id]}): "
                + ("passed" if c.passed else "failed: " + "; ".join(c.failures)) for c in shown]
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class GateRun:
    """What ``eval`` (the gate) did: the result, the verdict, how long the run took, and the
    passing cases an ``--update-baseline`` dropped (each accepted by name)."""

    result: EvalResult
    verdict: Verdict
    seconds: float
    dropped: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict.word, "regressions": list(self.verdict.regressions),
                "unstable": self.verdict.unstable, "seconds": round(self.seconds, 2),
                **self.result.to_json()}


def run_gate(goldens: Path, answerer: Answerer, *, baseline: Path | None = None,
             update: bool = False, accept: Collection[str] = (), junit: Path | None = None,
             markdown: Path | None = None, perturbations: Sequence[str] = (),
             repeat: int = 1) -> GateRun:
    """Run the golden set ``goldens`` and judge it against ``baseline`` (or, with ``update``,
    write the new baseline there, refusing to drop a passing case not in ``accept``); write the
    JUnit and Markdown reports asked for. Every input is read and every output path checked
    before the run, which can take minutes."""
    import time

    from ..errors import UsageError
    from ..paths import check_output_path, write_output
    from .evaluation import evaluate
    from .goldens import load_goldens

    if update and baseline is None:
        raise UsageError("--update-baseline needs --baseline FILE to write")
    if accept and not update:
        raise UsageError("--accept-regression goes with --update-baseline")
    cases = load_goldens(goldens)
    known = read_baseline(baseline) if baseline is not None and (
        not update or baseline.exists()) else None
    for path, flag in ((baseline if update else None, "--baseline"), (junit, "--junit"),
                       (markdown, "--markdown")):
        check_output_path(path, flag)
    start = time.perf_counter()
    result = evaluate(cases, answerer, perturbations=perturbations, repeat=repeat)
    seconds = time.perf_counter() - start
    verdict = decide(result, None if update else known)
    dropped: list[str] = []
    if baseline is not None and update:
        new = make_baseline(result)
        dropped = check_update(known, new, set(accept))
        write_output(baseline, json.dumps(new, indent=2) + "\n", "--baseline")
    if junit:
        write_output(junit, junit_xml(result, verdict, goldens.stem, seconds), "--junit")
    if markdown:
        write_output(markdown, markdown_summary(result, verdict), "--markdown")
    return GateRun(result, verdict, seconds, tuple(dropped))
