package app

import (
	"crypto/rand"
	"encoding/hex"
	"os"

	"go.uber.org/zap"

	"github.com/presence-sidecar/presence-sidecar/handoff"
	"github.com/presence-sidecar/presence-sidecar/internal/config"
	"github.com/presence-sidecar/presence-sidecar/presence"
	"github.com/presence-sidecar/presence-sidecar/presence/cluster"
	"github.com/presence-sidecar/presence-sidecar/store/redisstate"
)

// replicaID names this process in the cluster: short, since it is written
// in every session hash whose connections it holds (README, "Cluster mode":
// memory), and random, so that a restarted process is a new replica whose
// predecessor's connections lapse with its lease. The registry keeps the
// host name beside it for operators (GET /v1/replicas).
func replicaID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func hostName() string {
	host, err := os.Hostname()
	if err != nil {
		return ""
	}
	return host
}

// buildCluster wires cluster mode: the state in Redis, the cluster engine
// and the cluster deliverer (docs/ARCHITECTURE.md, "Cluster mode").
func (a *App) buildCluster(p presenceParts) error {
	cfg := a.cfg
	if a.replica == "" { // buildTimeline may have chosen it
		a.replica = replicaID()
	}
	host := hostName()
	log := a.log.With(zap.String("replica", a.replica))
	st, err := redisstate.Dial(cfg.RedisURL, redisstate.Options{
		Prefix:      cfg.RedisKeyPrefix,
		ForgetAfter: cfg.PresenceForgetAfter,
		Observe:     a.metrics.redisCall,
		Host:        host,
	}, func() { log.Info("cluster: connected to Redis", zap.String("redis", config.RedactURL(cfg.RedisURL))) })
	if err != nil {
		return err
	}
	bots, err := presence.NewBots(cfg.PresenceDefaults(), cfg.PresenceAllowAny, p.bots, cluster.BotStore(st), log.Named("presence"))
	if err != nil {
		st.Close()
		return err
	}
	cd, err := handoff.NewCluster(a.handoffOptions(nil, log.Named("handoff")), st, a.replica, 0)
	if err != nil {
		st.Close()
		return err
	}
	eng, err := cluster.NewEngine(cluster.EngineOptions{
		State: st, Replica: a.replica, Lease: cfg.RedisLeaseTTL, Bots: bots,
		Detect: p.detect, HandoffStart: p.rules.HandoffStart, HandoffEnd: p.rules.HandoffEnd, Ignore: p.rules.Ignore,
		Log: log.Named("presence"), Wake: cd.Wake, Lag: a.metrics.decisionLag, Timeline: a.timeline,
	})
	if err != nil {
		st.Close()
		return err
	}
	cd.ShareShards(eng.Owns)
	log.Info("cluster mode: this replica's id in Redis", zap.String("host", host))
	a.redis, a.clusterEngine, a.clusterDeliverer = st, eng, cd
	a.presence, a.outbox = eng, cd
	a.runners = []runner{{"presence", eng.Run}, {"delivery", cd.Run}}
	a.closers = append(a.closers, func() error { st.Close(); return nil })
	return nil
}
