package handoff

import (
	"strconv"
	"sync"

	"github.com/presence-sidecar/presence-sidecar/store"
)

// deadEpisodes remembers the absence episodes whose offline notification
// (the /expire) was dead-lettered, so that a return message of such an
// episode is dead-lettered too and never sent alone (docs/ARCHITECTURE.md,
// "Presence invariants" 3 and "Delivery"). It is rebuilt from the dead
// letters when Run starts, and an episode is forgotten when its offline
// notification is replayed. The zero value is empty and ready; attempts use it
// concurrently.
type deadEpisodes struct {
	mu      sync.Mutex
	offline map[string]string // episodeKey -> webhook id of the dead offline notification
}

func episodeKey(n store.Notification) string {
	return n.SessionID + "\x00" + strconv.FormatUint(n.Episode, 10)
}

// load replaces what is remembered by the offline notifications among the
// store's dead letters, so a return message whose /expire died before a
// restart is held back too. On error nothing changes.
func (e *deadEpisodes) load(st store.Store) error {
	dead, err := st.DeadLetters()
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.offline = make(map[string]string)
	for _, n := range dead {
		if n.Kind == store.KindOffline {
			e.offline[episodeKey(n)] = n.ID
		}
	}
	return nil
}

// remember records n's episode if n is an offline notification that was just
// dead-lettered.
func (e *deadEpisodes) remember(n store.Notification) {
	if n.Kind != store.KindOffline {
		return
	}
	e.mu.Lock()
	if e.offline == nil {
		e.offline = make(map[string]string)
	}
	e.offline[episodeKey(n)] = n.ID
	e.mu.Unlock()
}

// forget drops n's episode if n is an offline notification back in the
// outbox (replayed).
func (e *deadEpisodes) forget(n store.Notification) {
	if n.Kind != store.KindOffline {
		return
	}
	e.mu.Lock()
	delete(e.offline, episodeKey(n))
	e.mu.Unlock()
}

// offlineOf reports, for a return message n, the webhook id of its episode's
// dead-lettered offline notification, if there is one.
func (e *deadEpisodes) offlineOf(n store.Notification) (id string, dead bool) {
	if n.Kind != store.KindOnline {
		return "", false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	id, dead = e.offline[episodeKey(n)]
	return id, dead
}
