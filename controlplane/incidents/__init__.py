"""Incident actions: what spans flags, rollouts and notifications when a flag is set to serve one variant to everyone
(``controlplane flags set-variant``) and when that is undone. Flags decide and record the override
(``flags.incidents``, ``flags.service.set_variant_everywhere``); this workflow pauses the flag's running rollouts
before it and resumes them after the undo (through the rollouts' own operations, audited and told as steps), and
tells on-call through the notification routes.
"""
