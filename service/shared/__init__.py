"""What every replica shares through Redis (or, for ``memory://``, keeps in this process).

- :mod:`~service.shared.health`: whether Redis answers, and the guard every Redis call goes through (a leaf).
- :mod:`~service.shared.activity`: ``rag_active_tenants`` counted over all replicas.
- :mod:`~service.shared.state`: the client, the cache backend and the rate-limit counters the URL names.

Nothing is re-exported here: the cache and the limiter import the health module, which the state module
builds on top of them.
"""
