"""Policy: what a watch's rules make of a verdict. Nothing not judged is ever released."""

from __future__ import annotations

from pathlib import Path

from dropwarden.act.policy import decide, operator_release, unrecorded
from dropwarden.config import WatchSettings
from dropwarden.findings import Finding, Location, Severity
from dropwarden.verdict import Problem, Reason, Verdict, VerdictBuilder, unscanned


def watch(**settings: object) -> WatchSettings:
    return WatchSettings(path=Path("/srv/inbox"), release_to=Path("/srv/outbound"), **settings)


def finding(severity: str, kind: str = "CARD") -> Finding:
    return Finding(
        type=kind,
        rule=kind.lower(),
        detector="regex",
        detector_version="1",
        severity=Severity.parse(severity),
        confidence=0.9,
        location=Location("text", offset=0, length=4),
        excerpt="[****]",
        fingerprint="f" * 16,
    )


def verdict(*findings: Finding, problems: tuple[Problem, ...] = ()) -> Verdict:
    builder = VerdictBuilder()
    builder.add_findings(findings)
    for problem in problems:
        builder.add_problem(problem)
    return builder.build()


TIMEOUT = Problem(Reason.TIMEOUT, "no answer within 1s", "vision")


# ------------------------------------------------------------------------ findings and the threshold


def test_a_finding_at_or_above_the_threshold_is_acted_on_as_on_finding_says():
    rules = watch(min_severity="medium", on_finding=["quarantine", "alert"])
    for severity in ("medium", "high", "critical"):
        decision = decide(rules, verdict(finding(severity)))
        assert decision.outcome == "finding"
        assert decision.actions == ("quarantine", "alert")


def test_only_the_findings_at_or_above_the_threshold_are_the_ones_acted_on():
    high, low = finding("high", "SSN"), finding("low", "EMAIL")
    decision = decide(watch(min_severity="high"), verdict(high, low))
    assert decision.acting_findings == (high,)


def test_a_finding_below_the_threshold_is_released_and_called_below_threshold():
    decision = decide(watch(min_severity="high"), verdict(finding("medium")))
    assert decision.outcome == "below_threshold"
    assert decision.actions == ("release",) and decision.acting_findings == ()


def test_a_clean_file_is_released_only_where_there_is_somewhere_to_release_it():
    assert decide(watch(), verdict()).actions == ("release",)
    unreleased = decide(WatchSettings(path=Path("/srv/inbox")), verdict())
    assert unreleased.outcome == "clean" and unreleased.actions == ()


def test_leave_means_no_action():
    decision = decide(watch(on_finding="leave"), verdict(finding("critical")))
    assert decision.outcome == "finding" and decision.actions == ()


# ------------------------------------------------------------------------ what could not be judged


def test_a_file_that_could_not_be_judged_is_unscanned_and_never_released():
    rules = watch(on_unscanned=["quarantine"])
    decision = decide(rules, unscanned(Reason.TOO_LARGE, "too big", "intake"))
    assert decision.outcome == "unscanned" and decision.actions == ("quarantine",)


def test_a_finding_below_the_threshold_plus_a_problem_is_unscanned():
    """What the failed part would have found is unknown: the file is not released."""
    rules = watch(min_severity="high", on_unscanned=["alert"])
    decision = decide(rules, verdict(finding("low"), problems=(TIMEOUT,)))
    assert decision.outcome == "unscanned" and decision.actions == ("alert",)


def test_a_finding_at_the_threshold_outweighs_a_problem():
    rules = watch(on_finding=["quarantine"], on_unscanned=["alert"])
    decision = decide(rules, verdict(finding("high"), problems=(TIMEOUT,)))
    assert decision.outcome == "finding" and decision.actions == ("quarantine",)


def test_leaving_unscanned_files_alone_still_releases_nothing():
    decision = decide(watch(on_unscanned="leave"), verdict(problems=(TIMEOUT,)))
    assert decision.outcome == "unscanned" and decision.actions == ()


def test_a_judgement_that_could_not_be_recorded_is_unscanned():
    decision = unrecorded(watch(on_unscanned=["quarantine", "alert"]))
    assert decision.outcome == "unscanned" and decision.actions == ("quarantine", "alert")


# ------------------------------------------------------------------------ an operator's release


def test_an_operator_released_file_is_recorded_with_its_findings_and_released_not_acted_on():
    rules = watch(on_finding=["quarantine", "alert"])
    found = decide(rules, verdict(finding("high")))
    decision = operator_release(rules, found)
    assert decision.outcome == "operator_released"
    assert decision.actions == ("release",)
    assert decision.acting_findings == found.acting_findings


def test_an_operator_released_file_never_read_is_left_where_it_is():
    found = decide(watch(), unscanned(Reason.TOO_LARGE))
    assert operator_release(watch(), found, have_bytes=False).actions == ()


def test_an_operator_released_file_stays_put_where_there_is_nowhere_to_release_it():
    rules = WatchSettings(path=Path("/srv/inbox"))
    decision = operator_release(rules, decide(rules, verdict(finding("high"))))
    assert decision.outcome == "operator_released" and decision.actions == ()
