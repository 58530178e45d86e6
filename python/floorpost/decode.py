"""floorpost.decode - a Checkpoint buffer (schema/checkpoint.fbs) as a
plain dataclass.

The readers are the ones flatc generates (floorpost.checkpoint, vendored in
this package). Python's FlatBuffers runtime has no verifier, so decode()
checks what it can (size, identifier, version, the required fields, the
body type) and turns every failure, a garbage buffer's IndexError or
struct.error included, into DecodeError: one bad frame never stops a
subscriber. The reasons are the C codec's names (codec.h).
"""
import dataclasses
import struct
from dataclasses import dataclass, field
from typing import List

from floorpost.checkpoint.Body import Body
from floorpost.checkpoint.Checkpoint import Checkpoint as _Checkpoint
from floorpost.checkpoint.Completion import Completion as _Completion
from floorpost.checkpoint.Consumption import Consumption as _Consumption
from floorpost.checkpoint.CounterReset import CounterReset as _CounterReset
from floorpost.checkpoint.Scrap import Scrap as _Scrap

CONTRACT_VERSION = 1  # the newest Checkpoint version this package reads
KINDS = {Body.Consumption: "consumption", Body.Completion: "completion", Body.Scrap: "scrap",
         Body.CounterReset: "counter_reset"}


class DecodeError(ValueError):
    """Not a Checkpoint this package can read; str() is the reason
    ("truncated", "wrong_identifier", "malformed", "missing_field",
    "unsupported_version")."""


@dataclass(frozen=True)
class SeqRange:
    """Records first_seq..last_seq of (source_id, epoch) are summed."""
    source_id: int
    epoch: int
    first_seq: int
    last_seq: int


@dataclass
class Checkpoint:
    """One event, field by field (docs/subscribers.md, "From checkpoint to
    ERP posting"). Quantities are exact integers: `quantity` in thousandths
    of `unit`, the rest in parts. Times in ns since 1970 UTC."""
    kind: str                 # "consumption", "completion", "scrap" or "counter_reset"
    event_id: str             # the idempotency key
    stream_seq: int           # per topic: 1, 2, 3, ...
    global_seq: int           # per instance, every topic: 1, 2, 3, ...
    checkpoint_no: int
    instance: str
    plant: str
    line: str
    order: str
    operation: str
    first_time_ns: int
    last_time_ns: int
    record_count: int
    late: bool                # a correction after the final completion
    lineage: List[SeqRange] = field(default_factory=list)
    lineage_truncated: bool = False
    posting_date: str = ""    # "YYYY-MM-DD" of the posting period ("" on counter_reset)
    period: str = ""          # "day", "shift-N" or "hour-HH"
    period_start_ns: int = 0  # the period: [start, end)
    period_end_ns: int = 0
    backfill: bool = False    # a further posting to a period already posted
    original_posting_date: str = ""  # a closed period re-posted: the records' own
    original_period_start_ns: int = 0
    material: str = ""        # consumption
    lot: str = ""
    unit: str = ""
    quantity: int = 0
    yield_: int = 0           # completion ("yield" is a Python keyword)
    scrap: int = 0
    final: bool = False
    reason: str = ""          # scrap (and a scrap counter's counter_reset)
    parts: int = 0
    station: str = ""         # counter_reset: a cumulative counter went back to zero
    counter: str = ""
    scrap_counter: bool = False
    previous: int = 0
    reading: int = 0

    def to_dict(self):
        """The fields as a dict (lineage as a list of dicts)."""
        return dataclasses.asdict(self)


def _s(v):
    return (v or b"").decode("utf-8", "replace")


def decode(buf):
    """buf (bytes-like) as a Checkpoint; raises DecodeError."""
    buf = bytes(buf)
    if len(buf) < 8:
        raise DecodeError("truncated")
    if not _Checkpoint.CheckpointBufferHasIdentifier(buf, 0):
        raise DecodeError("wrong_identifier")
    try:
        return _decode(buf)
    except DecodeError:
        raise
    except (IndexError, struct.error, UnicodeError, ValueError, TypeError) as e:
        raise DecodeError("malformed") from e


def _decode(buf):
    ck = _Checkpoint.GetRootAs(buf, 0)
    if ck.Version() > CONTRACT_VERSION:
        raise DecodeError("unsupported_version")
    h, body = ck.Header(), ck.Body()
    if h is None or body is None or h.EventId() is None:
        raise DecodeError("missing_field")
    kind = KINDS.get(ck.BodyType())
    if kind is None:
        raise DecodeError("malformed")
    out = Checkpoint(
        kind=kind, event_id=_s(h.EventId()), stream_seq=h.StreamSeq(), global_seq=h.GlobalSeq(),
        checkpoint_no=h.CheckpointNo(), instance=_s(h.Instance()), plant=_s(h.Plant()),
        line=_s(h.Line()), order=_s(h.Order()), operation=_s(h.Operation()),
        first_time_ns=h.FirstTimeNs(), last_time_ns=h.LastTimeNs(), record_count=h.RecordCount(),
        late=bool(h.Late()), lineage_truncated=bool(h.LineageTruncated()),
        lineage=[SeqRange(r.SourceId(), r.Epoch(), r.FirstSeq(), r.LastSeq())
                 for r in (h.Lineage(i) for i in range(h.LineageLength()))],
        posting_date=_s(h.PostingDate()), period=_s(h.Period()),
        period_start_ns=h.PeriodStartNs(), period_end_ns=h.PeriodEndNs(),
        backfill=bool(h.Backfill()), original_posting_date=_s(h.OriginalPostingDate()),
        original_period_start_ns=h.OriginalPeriodStartNs())
    if kind == "consumption":
        b = _Consumption()
        b.Init(body.Bytes, body.Pos)
        out.material, out.lot, out.unit = _s(b.Material()), _s(b.Lot()), _s(b.Unit())
        out.quantity = b.Quantity()
    elif kind == "completion":
        b = _Completion()
        b.Init(body.Bytes, body.Pos)
        out.yield_, out.scrap, out.final = b.Yield_(), b.Scrap(), bool(b.Final())
    elif kind == "scrap":
        b = _Scrap()
        b.Init(body.Bytes, body.Pos)
        out.reason, out.parts = _s(b.Reason()), b.Parts()
    else:
        b = _CounterReset()
        b.Init(body.Bytes, body.Pos)
        out.station, out.counter, out.scrap_counter = _s(b.Station()), _s(b.Counter()), \
            bool(b.Scrap())
        out.reason, out.previous, out.reading = _s(b.Reason()), b.Previous(), b.Reading()
    return out
