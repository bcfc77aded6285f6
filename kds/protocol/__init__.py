"""The pure protocol core: each side of a sync stream as a state machine (session.py for
global, zone_session.py for a zone), the zone's batch plan (applier.py), change records and
sync order (records.py), and packing into messages (batching.py). No I/O, clock or grpc.
"""
