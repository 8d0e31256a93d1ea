"""Load for the reference-image pipeline, plus a simulated AI reply assistant (``python -m pipeline.loadgen``).

stats = run_load(LoadConfig(pipeline_url="http://127.0.0.1:8090", rate=20, duration=60, users=50))
set_faults("http://127.0.0.1:8090", vision_error_rate=0.3)     # mid-run, from another thread
"""

from pipeline.loadgen.ai_assistant import AiAssistantConfig, EventSink
from pipeline.loadgen.runner import FaultsUnavailable, LoadConfig, LoadStats, run_load, set_faults
from pipeline.loadgen.traffic import Mix, Route

__all__ = [
    "AiAssistantConfig",
    "EventSink",
    "FaultsUnavailable",
    "LoadConfig",
    "LoadStats",
    "Mix",
    "Route",
    "run_load",
    "set_faults",
]
