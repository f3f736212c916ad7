package handoff

// The operator's view of cluster mode's shared outbox (internal/admin.Outbox):
// the same answers as the embedded deliverer's, read from every shard in
// Redis, each call bounded by redisstate.CallTimeout.

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/presence-sidecar/presence-sidecar/store"
	"github.com/presence-sidecar/presence-sidecar/store/redisstate"
)

func callCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), redisstate.CallTimeout)
}

func clusterNotifications(ns []redisstate.Note) []store.Notification {
	out := make([]store.Notification, len(ns))
	for i, n := range ns {
		out[i] = clusterNotification(n)
	}
	return out
}

// Pending lists up to limit notifications waiting for delivery and how
// many wait in all.
func (c *ClusterDeliverer) Pending(limit int) ([]store.Notification, int, error) {
	ctx, cancel := callCtx()
	defer cancel()
	ns, err := c.st.Pending(ctx, limit)
	if err != nil {
		return nil, 0, err
	}
	depth, err := c.st.Depth(ctx)
	if err != nil {
		return nil, 0, err
	}
	return clusterNotifications(ns), int(max(depth, int64(len(ns)))), nil
}

// Recent lists the last limit delivered or dead-lettered notifications of
// the cluster, newest first.
func (c *ClusterDeliverer) Recent(limit int) ([]store.Notification, error) {
	ctx, cancel := callCtx()
	defer cancel()
	ns, err := c.st.Recent(ctx, limit)
	return clusterNotifications(ns), err
}

// DeadLetters lists the cluster's dead letters.
func (c *ClusterDeliverer) DeadLetters() ([]store.Notification, error) {
	ctx, cancel := callCtx()
	defer cancel()
	ns, err := c.st.DeadLetters(ctx)
	return clusterNotifications(ns), err
}

// Replay queues a dead letter again (same webhook-id, fresh attempts);
// whichever replica claims it first sends it.
func (c *ClusterDeliverer) Replay(id string) (store.Notification, error) {
	ctx, cancel := callCtx()
	defer cancel()
	n, err := c.st.Replay(ctx, id)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return store.Notification{}, err
		}
		return store.Notification{}, fmt.Errorf("Redis: %w", err)
	}
	c.Wake()
	return clusterNotification(n), nil
}

// ClusterStats are the deliverer's cluster-mode gauges and counters.
type ClusterStats struct {
	Depth     int64         // notifications waiting, all replicas
	OldestAge time.Duration // how long the oldest due head has waited (0: none)
	Takeovers uint64        // heads this replica claimed after another's lease lapsed
	LostAcks  uint64        // outcomes refused: the lease had lapsed
}

type clusterCounts struct{ takeovers, lostAcks atomic.Uint64 }

// ClusterStats reads the outbox's depth and age from Redis and the
// counters. A scrape of the metrics asks for it more than once, and must not
// hang on a Redis that is away: the reading is kept for statsFresh, and each
// read is bounded by statsTimeout (the last good one is returned on failure,
// with the error).
func (c *ClusterDeliverer) ClusterStats() (ClusterStats, error) {
	c.statsMu.Lock()
	defer c.statsMu.Unlock()
	s := ClusterStats{Takeovers: c.counts.takeovers.Load(), LostAcks: c.counts.lostAcks.Load()}
	if time.Since(c.statsAt) < statsFresh {
		s.Depth, s.OldestAge = c.stats.Depth, c.stats.OldestAge
		return s, c.statsErr
	}
	ctx, cancel := context.WithTimeout(context.Background(), statsTimeout)
	defer cancel()
	depth, err := c.st.Depth(ctx)
	var oldest time.Time
	var ok bool
	if err == nil {
		oldest, ok, err = c.st.OldestReady(ctx)
	}
	c.statsAt, c.statsErr = time.Now(), err
	if err != nil {
		s.Depth, s.OldestAge = c.stats.Depth, c.stats.OldestAge
		return s, err
	}
	s.Depth = depth
	if ok {
		s.OldestAge = max(time.Since(oldest), 0)
	}
	c.stats = s
	return s, nil
}

const (
	statsFresh   = time.Second
	statsTimeout = 250 * time.Millisecond
)
