"""From detections to events: tracking, zones, line counts, snapshots and their publication.

The events layer runs on the post-processing thread, as a sink: each frame's detections go
through the tracker (:mod:`edge.events.tracker`), the tracks through the event lifecycle
(:mod:`edge.events.lifecycle`: new / update / end, zones, lines, counts), and the events out to
listeners (the events JSONL file, MQTT with Home Assistant discovery, Prometheus, the live view).
The types they share are in :mod:`edge.events.types`.
"""
