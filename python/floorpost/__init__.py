"""floorpost - the Python client for floorpost's checkpoint feed.

    from floorpost import Subscriber, Event
    with Subscriber("tcp://127.0.0.1:5570", replay="tcp://127.0.0.1:5572") as sub:
        for msg in sub:
            if isinstance(msg, Event):
                print(msg.checkpoint.global_seq, msg.topic, msg.checkpoint.to_dict())

floorpost.subscriber: subscribe, detect gaps (global_seq, stream_seq, the
feed's heartbeat), catch up through the replay endpoint, and (after
accept_deadletters()) the dead-letter feed. floorpost.decode:
a Checkpoint buffer as a dataclass. floorpost.checkpoint and
floorpost.telemetry: the readers flatc generates from schema/*.fbs.
docs/subscribers.md has the quick start.
"""
from floorpost.decode import CONTRACT_VERSION, Checkpoint, DecodeError, SeqRange, decode
from floorpost.subscriber import (Bad, CurveKeys, DeadLetter, Event, Gap, Heartbeat, Lost, Refused,
                                  Reset, Stats, Subscriber, read_key_file)

__version__ = "0.2.0"  # floorpost's (src/core/version.h); tests/e2e/t_client.py checks

__all__ = ["Bad", "CONTRACT_VERSION", "Checkpoint", "CurveKeys", "DeadLetter", "DecodeError",
           "Event", "Gap", "Heartbeat", "Lost", "Refused", "Reset", "SeqRange", "Stats",
           "Subscriber", "decode", "read_key_file"]
