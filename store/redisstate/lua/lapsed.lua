-- lapsed: the replicas whose lease lapsed, by Redis's clock.
-- KEYS[1] the registry. Returns a flat list: replica, lapse ms.
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms(), 'WITHSCORES')
