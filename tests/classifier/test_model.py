"""The classifier's values (classifier/model.py): the typed probe id, the findings and
the one endpoint formatter."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

import classifier
from classifier.model import (
    PORT_SAMPLES,
    REASON_CODES,
    TESTS,
    Behavior,
    Extra,
    Family,
    Finding,
    NatType,
    Probe,
    ProbeId,
    ProbeOutcome,
    ProbeTest,
    ReasonCode,
    Why,
    fmt,
)
from classifier.report import say


def test_probe_id_text_is_the_json_name() -> None:
    assert str(ProbeId(Family.CLASSIC, ProbeTest.TEST1_ALT)) == "classic/test1_alt"
    assert str(ProbeId(Family.MAPPING, ProbeTest.ALT_SERVER)) == "mapping/alt-server"
    assert str(ProbeId(Family.PORT_ALLOCATION, ProbeTest.SAMPLE, 3)) == "port-allocation/sample3"
    assert str(ProbeId(Extra.DIALECT, ProbeTest.TEST1)) == "dialect/test1"
    assert str(ProbeId(Extra.LIFETIME, ProbeTest.CHECK, wait_s=37.5)) == "lifetime/37.5s/check"
    probe = Probe(ProbeId(Family.HAIRPIN, ProbeTest.SEND), ("192.0.2.1", 1), ProbeOutcome.OK)
    assert probe.name == "hairpin/send"


def test_every_listed_probe_id_can_be_built() -> None:
    for family, tests in TESTS.items():
        for test in tests:
            index = 0 if test is ProbeTest.SAMPLE else None
            wait = 0.0 if family is Extra.LIFETIME else None
            assert ProbeId(family, test, index, wait).test is test
    assert set(TESTS) == set(Family) | set(Extra)


@pytest.mark.parametrize(
    ("family", "test"),
    [
        (Family.HAIRPIN, ProbeTest.TEST3),
        (Family.MAPPING, ProbeTest.TEST1_ALT),
        (Family.CLASSIC, ProbeTest.SEND),
        (Extra.DIALECT, ProbeTest.CHECK),
        (Family.FILTERING, ProbeTest.ALT_SERVER),
    ],
)
def test_a_test_the_family_does_not_send_cannot_be_named(
    family: Family | Extra, test: ProbeTest
) -> None:
    with pytest.raises(ValueError, match=f"the {family} family sends no {test}"):
        ProbeId(family, test)


def test_a_probe_id_is_never_built_from_text() -> None:
    with pytest.raises(TypeError):
        ProbeId("classic", "test1")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ProbeId(Family.CLASSIC, "test1")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ProbeTest("test4")


@pytest.mark.parametrize(
    ("index", "wait"),
    [(None, None), (PORT_SAMPLES, None), (-1, None), (0, 5.0)],
)
def test_a_sample_needs_its_socket_number_and_no_wait(
    index: int | None, wait: float | None
) -> None:
    with pytest.raises(ValueError):
        ProbeId(Family.PORT_ALLOCATION, ProbeTest.SAMPLE, index, wait)


def test_only_a_lifetime_probe_has_a_wait() -> None:
    with pytest.raises(ValueError):
        ProbeId(Extra.LIFETIME, ProbeTest.TEST1)
    with pytest.raises(ValueError):
        ProbeId(Extra.LIFETIME, ProbeTest.TEST1, wait_s=-1.0)
    with pytest.raises(ValueError):
        ProbeId(Family.CLASSIC, ProbeTest.TEST1, wait_s=15.0)
    with pytest.raises(ValueError):
        ProbeId(Family.CLASSIC, ProbeTest.TEST1, index=0)


def test_probe_ids_compare_by_value() -> None:
    assert ProbeId(Family.CLASSIC, ProbeTest.TEST1) == ProbeId(Family.CLASSIC, ProbeTest.TEST1)
    assert ProbeId(Family.CLASSIC, ProbeTest.TEST1) != ProbeId(Family.MAPPING, ProbeTest.TEST1)


def test_the_endpoint_formatter() -> None:
    assert fmt(("192.0.2.1", 3478)) == "192.0.2.1:3478"
    assert fmt(("2001:db8::1", 3478)) == "[2001:db8::1]:3478"
    assert fmt(None) == "an unknown address"
    assert fmt(None, "-") == "-"


def test_the_endpoint_formatter_is_the_only_one() -> None:
    """Every classifier module writes endpoints through ``classifier.model.fmt``: the
    bracketing of IPv6 hosts is spelled out once."""
    package = Path(classifier.__file__).parent
    spelled = {
        path.name
        for path in package.glob("*.py")
        if re.search(r"\[\{[^}]*\}\]:\{", path.read_text(encoding="utf-8"))
    }
    assert spelled == {"model.py"}


def test_every_finding_has_a_sentence_and_reasons_have_a_code() -> None:
    """``classifier/report.py`` writes a sentence for every kind of finding; the kinds
    that can be a result's reason carry a machine-stable code."""
    full = Finding(
        Why.NO_ALTERNATE,
        ProbeId(Family.CLASSIC, ProbeTest.TEST1),
        at=("192.0.2.1", 3478),
        other=("192.0.2.2", 3479),
        primary=("192.0.2.1", 3478),
        error_code=420,
        seconds=(30.0, 15.0),
        nat=(NatType.FULL_CONE, NatType.SYMMETRIC),
        behaviors=(Behavior.ENDPOINT_INDEPENDENT, Behavior.ADDRESS_DEPENDENT),
        count=2,
        cause=Finding(Why.NO_ALTERNATE),
        detail="Network is unreachable",
    )
    sentences = {why: say(replace(full, why=why)) for why in Why}
    assert all(sentences.values())
    assert len(set(sentences.values())) == len(Why)  # no two kinds say the same
    assert set(REASON_CODES.values()) == set(ReasonCode)
    assert Finding(Why.ALG).code is None
