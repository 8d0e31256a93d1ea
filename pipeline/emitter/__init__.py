"""The client side of event ingest: batches a pipeline's events to `POST /api/v1/events`, spooling through outages.

emitter = Emitter(base_url, ingest_token, pipeline="reference-images", spool_dir="/var/spool/pipeline")
emitter.emit(Event(type="vision_analysis", time=now, environment="production", variant="on", outcome="ok"))
emitter.close()
"""

from pipeline.emitter.emitter import Emitter, EmitterSettings
from pipeline.emitter.events import Event, Outgoing
from pipeline.emitter.stats import EmitterCollector, EmitterStats

__all__ = ["Emitter", "EmitterCollector", "EmitterSettings", "EmitterStats", "Event", "Outgoing"]
