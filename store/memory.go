package store

import (
	"slices"
	"sort"
	"sync"
)

// Memory is a Store that keeps everything in memory, for tests: it loses
// its state on restart.
type Memory struct {
	mu        sync.Mutex
	seq       uint64
	sessions  map[string]Session
	outbox    []Notification // Seq order
	dead      []Notification // oldest first
	recent    []Notification // oldest first
	bots      map[string]BotSettings
	deadLimit int // tests lower it
}

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory {
	return &Memory{sessions: map[string]Session{}, bots: map[string]BotSettings{}, deadLimit: deadLimit}
}

func (m *Memory) Sessions() ([]Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Session, 0, len(m.sessions))
	for _, s := range m.sessions {
		out = append(out, s)
	}
	return out, nil
}

func (m *Memory) Commit(put []Session, forget []string, notes []Notification) error {
	// Validate first: nothing is written if Commit fails.
	if err := validateCommit(put, forget, notes); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range put {
		m.sessions[s.ID] = s
	}
	for _, id := range forget {
		delete(m.sessions, id)
	}
	for i := range notes {
		m.seq++
		notes[i].Seq = m.seq
		m.outbox = append(m.outbox, notes[i])
	}
	return nil
}

func (m *Memory) Pending() ([]Notification, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.outbox), nil
}

func (m *Memory) PendingAfter(seq uint64) ([]Notification, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	i := sort.Search(len(m.outbox), func(i int) bool { return m.outbox[i].Seq > seq })
	return slices.Clone(m.outbox[i:]), nil
}

// indexOf finds n in the outbox by its Seq (callers pass it; the outbox is in
// Seq order), falling back to its id when the Seq does not match.
func (m *Memory) indexOf(n Notification) int {
	i := sort.Search(len(m.outbox), func(i int) bool { return m.outbox[i].Seq >= n.Seq })
	if i < len(m.outbox) && m.outbox[i].Seq == n.Seq && m.outbox[i].ID == n.ID {
		return i
	}
	return slices.IndexFunc(m.outbox, func(o Notification) bool { return o.ID == n.ID })
}

func (m *Memory) Attempted(n Notification) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	i := m.indexOf(n)
	if i < 0 {
		return ErrNotFound
	}
	n.Seq = m.outbox[i].Seq // the outbox position is the store's, not the caller's
	m.outbox[i] = n
	return nil
}

func (m *Memory) remember(n Notification) {
	m.recent = append(m.recent, n)
	if len(m.recent) > recentLimit {
		m.recent = slices.Delete(m.recent, 0, len(m.recent)-recentLimit)
	}
}

// take removes n's entry from the outbox and returns n with that entry's Seq;
// ok is false when there is none.
func (m *Memory) take(n Notification) (_ Notification, ok bool) {
	i := m.indexOf(n)
	if i < 0 {
		return n, false
	}
	n.Seq = m.outbox[i].Seq
	m.outbox = slices.Delete(m.outbox, i, i+1)
	return n, true
}

func (m *Memory) Delivered(n Notification) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.take(stampDelivered(n))
	if !ok {
		return ErrNotFound
	}
	m.remember(n)
	return nil
}

func (m *Memory) DeadLetter(n Notification) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.take(stampDead(n))
	if !ok {
		return ErrNotFound
	}
	m.dead = append(m.dead, n)
	if len(m.dead) > m.deadLimit {
		m.dead = slices.Delete(m.dead, 0, len(m.dead)-m.deadLimit)
	}
	m.remember(n)
	return nil
}

func (m *Memory) DeadLetters() ([]Notification, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.dead), nil
}

func (m *Memory) Replay(id string) (Notification, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	// The newest dead letter with that id, as the Bolt store's index finds it.
	i := len(m.dead) - 1
	for i >= 0 && m.dead[i].ID != id {
		i--
	}
	if i < 0 {
		return Notification{}, ErrNotFound
	}
	n := m.dead[i]
	m.dead = slices.Delete(m.dead, i, i+1)
	m.seq++
	n = ResetForReplay(n, m.seq)
	m.outbox = append(m.outbox, n)
	return n, nil
}

// Recent returns up to limit entries, newest first; limit <= 0 returns none.
func (m *Memory) Recent(limit int) ([]Notification, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Notification, 0, max(0, min(limit, len(m.recent))))
	for i := len(m.recent) - 1; i >= 0 && len(out) < limit; i-- {
		out = append(out, m.recent[i])
	}
	return out, nil
}

func (m *Memory) Bots() (map[string]BotSettings, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]BotSettings, len(m.bots))
	for k, v := range m.bots {
		out[k] = cloneBot(v)
	}
	return out, nil
}

func (m *Memory) PutBot(botID string, s BotSettings) error {
	if err := validateBotID(botID); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.bots[botID] = cloneBot(s)
	return nil
}

func (m *Memory) Close() error { return nil }
