"""Answer quality, observed: which answer each trace is (:mod:`~service.quality.answers`), the feedback users
give on it (:mod:`~service.quality.feedback`), and golden-question probes (:mod:`~service.quality.probes`)."""
