"""The client side of event ingest: batches a pipeline's events to `POST /api/v1/events`, spooling through outages.

emitter = Emitter(base_url, ingest_token, pipeline="reference-images", spool_dir="/var/spool/pipeline")
emitter.emit(Event(type="vision_analysis", time=now, environment="production", variant="on", outcome="ok"),
             subject=user_id)   # hashed here: only the digest is sent
emitter.close()
"""

from controlplane_client.emitter.emitter import Emitter
from controlplane_client.emitter.events import Event, Outgoing
from controlplane_client.emitter.settings import EmitterSettings
from controlplane_client.emitter.stats import EmitterCollector, EmitterStats
from controlplane_client.emitter.subjects import subject_digest

__all__ = ["Emitter", "EmitterCollector", "EmitterSettings", "EmitterStats", "Event", "Outgoing", "subject_digest"]
