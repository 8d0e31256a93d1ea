"""The catalog: what pipelines declare (event types, alert rules, objectives), as pure data and as stored."""
