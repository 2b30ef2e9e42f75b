"""What one input does to a walker twin, and the check that both twins agree."""

from __future__ import annotations

from stellar_live_source.errors import CoreError, XdrError


def outcome(walk, index, mode: int, fallback: bool, body: bytes):
    """Spans and facts, or the error (reason, offset, type, ledger)."""
    try:
        if mode == 0:
            start, end, spans = walk.split_batch(body, fallback=fallback)
        elif mode == 1:
            spans = walk.split_ledgers(body, fallback=fallback)
        else:
            return walk.walk_type("SCVal", body)
        for off, length, _ in spans:
            assert 0 <= off and off + length <= len(body)
        facts = index.index_ledgers(body, spans)
        if mode == 0:  # frame_ledgers checks what index_ledgers only reports
            return spans, facts, _framed(index, body, spans, start, end)
        return spans, facts
    except XdrError as exc:
        return ("error", exc.reason, exc.offset, exc.type_name, exc.ledger)
    except CoreError as exc:
        return ("error", str(exc))


NETWORK = "Test SDF Network ; September 2015"


def _framed(index, body: bytes, spans, start: int, end: int):
    """frame_ledgers (RawLedger frames, then the stellar.v1 ones and the RawLedger
    frames cut back out of those), or its error."""
    try:
        raw = index.frame_ledgers(body, spans, start, end)
        v1 = index.frame_ledgers(body, spans, start, end, True, NETWORK)
        return raw, v1, index.raw_frames(v1[0])
    except XdrError as exc:
        return ("error", exc.reason, exc.offset, exc.type_name, exc.ledger)
    except CoreError as exc:
        return ("error", str(exc))


def assert_twins_agree(compiled, pure, mode: int, fallback: bool, body: bytes) -> None:
    """``compiled`` and ``pure``: each twin's ``walk`` and ``index`` modules (as tests/conftest.py's Twin)."""
    c = outcome(compiled.walk, compiled.index, mode, fallback, body)
    py = outcome(pure.walk, pure.index, mode, fallback, body)
    assert py == c, (py, c)
