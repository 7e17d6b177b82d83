//! Poller state in Redis: the ingester's cursor and leader lease (filled by the ingester issue).
