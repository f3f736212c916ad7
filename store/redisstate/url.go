package redisstate

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
)

// ParseURL reads REDIS_URL as rueidis does (its ParseURL follows the
// redis-specifications URI scheme): redis:// or rediss://, a Redis Cluster
// given by several addr= seeds (rueidis finds the cluster itself), Sentinel
// by master_set= with the sentinels' addresses. Client-side caching is off:
// the sidecar reads nothing it could cache.
func ParseURL(url string) (rueidis.ClientOption, error) {
	o, err := rueidis.ParseURL(url)
	if err != nil {
		return o, err
	}
	if o.Sentinel.MasterSet != "" {
		o.Sentinel.Username, o.Sentinel.Password = o.Username, o.Password
	}
	o.DisableCache = true
	return o, nil
}

// CheckPrefix refuses a REDIS_KEY_PREFIX that would break the key layout:
// a brace would make the prefix the Redis Cluster hash tag of every key (all
// in one slot), and white space is not worth the confusion.
func CheckPrefix(p string) error {
	if strings.ContainsAny(p, "{} \t\r\n") {
		return errors.New("want no braces and no white space: the keys' hash tags are the sidecar's")
	}
	return nil
}

// firstConnectWait bounds how long Dial waits for its first connection.
const firstConnectWait = time.Second

// ErrNotConnected is the error of every call made before Dial's first
// connection to Redis succeeded.
var ErrNotConnected = errors.New("redis: not connected yet")

// Dial returns a State over REDIS_URL at once, whether or not Redis is
// reachable: rueidis gives up when it cannot reach Redis at creation, but a
// Redis that is away at start is one more outage the sidecar rides out,
// never a reason to hold back the data plane. Until the first connection
// succeeds (retried every second in the background) every call fails with
// ErrNotConnected; onConnect, if not nil, is called once it does. Close
// stops the retries and closes the client.
func Dial(url string, o Options, onConnect func()) (*State, error) {
	opt, err := ParseURL(url)
	if err != nil {
		return nil, err
	}
	if err := CheckPrefix(o.Prefix); err != nil {
		return nil, err
	}
	lc := &lazyClient{stop: make(chan struct{})}
	// A builder for calls made before the first connection (they fail
	// without being sent): from a single-node client that never connected.
	fake := opt
	fake.InitAddress, fake.ForceSingleClient, fake.Sentinel = []string{"127.0.0.1:0"}, true, rueidis.SentinelOption{}
	fake.Dialer.Timeout = time.Millisecond
	placeholder, _ := rueidis.NewClient(fake)
	if placeholder == nil {
		return nil, errors.New("redis: cannot build a client")
	}
	lc.builder = placeholder.B()
	placeholder.Close()
	connected := make(chan struct{})
	lc.wg.Go(func() {
		lc.connect(opt, func() {
			close(connected)
			if onConnect != nil {
				onConnect()
			}
		})
	})
	// The usual case, a reachable Redis, is connected before the caller's
	// first call; an unreachable one holds start-up back at most this long.
	select {
	case <-connected:
	case <-time.After(firstConnectWait):
	}
	s := New(lc, o)
	s.closer = lc
	return s, nil
}

// Close stops Dial's retries and closes its client; for a State made with
// New it does nothing (the caller owns that client).
func (s *State) Close() {
	if s.closer != nil {
		s.closer.Close()
	}
}

// lazyClient is a rueidis.Client whose real client arrives once Redis could
// be reached.
type lazyClient struct {
	builder rueidis.Builder
	real    atomic.Pointer[rueidis.Client]
	stop    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
}

func (l *lazyClient) connect(opt rueidis.ClientOption, onConnect func()) {
	for {
		if c, err := rueidis.NewClient(opt); err == nil {
			select {
			case <-l.stop:
				c.Close()
				return
			default:
			}
			l.real.Store(&c)
			if onConnect != nil {
				onConnect()
			}
			return
		}
		select {
		case <-l.stop:
			return
		case <-time.After(time.Second):
		}
	}
}

func (l *lazyClient) current() rueidis.Client {
	if c := l.real.Load(); c != nil {
		return *c
	}
	return nil
}

func (l *lazyClient) B() rueidis.Builder {
	if c := l.current(); c != nil {
		return c.B()
	}
	return l.builder
}

func (l *lazyClient) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	if c := l.current(); c != nil {
		return c.Do(ctx, cmd)
	}
	return rueidis.NewErrorResult(ErrNotConnected)
}

func (l *lazyClient) DoMulti(ctx context.Context, multi ...rueidis.Completed) []rueidis.RedisResult {
	if c := l.current(); c != nil {
		return c.DoMulti(ctx, multi...)
	}
	out := make([]rueidis.RedisResult, len(multi))
	for i := range out {
		out[i] = rueidis.NewErrorResult(ErrNotConnected)
	}
	return out
}

func (l *lazyClient) Receive(ctx context.Context, sub rueidis.Completed, fn func(rueidis.PubSubMessage)) error {
	if c := l.current(); c != nil {
		return c.Receive(ctx, sub, fn)
	}
	return ErrNotConnected
}

func (l *lazyClient) DoCache(ctx context.Context, cmd rueidis.Cacheable, ttl time.Duration) rueidis.RedisResult {
	if c := l.current(); c != nil {
		return c.DoCache(ctx, cmd, ttl)
	}
	return rueidis.NewErrorResult(ErrNotConnected)
}

func (l *lazyClient) DoMultiCache(ctx context.Context, multi ...rueidis.CacheableTTL) []rueidis.RedisResult {
	if c := l.current(); c != nil {
		return c.DoMultiCache(ctx, multi...)
	}
	out := make([]rueidis.RedisResult, len(multi))
	for i := range out {
		out[i] = rueidis.NewErrorResult(ErrNotConnected)
	}
	return out
}

func (l *lazyClient) DoStream(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResultStream {
	if c := l.current(); c != nil {
		return c.DoStream(ctx, cmd)
	}
	return rueidis.NewErrorResultStream(ErrNotConnected)
}

func (l *lazyClient) DoMultiStream(ctx context.Context, multi ...rueidis.Completed) rueidis.MultiRedisResultStream {
	if c := l.current(); c != nil {
		return c.DoMultiStream(ctx, multi...)
	}
	return rueidis.NewErrorResultStream(ErrNotConnected)
}

func (l *lazyClient) Dedicated(fn func(rueidis.DedicatedClient) error) error {
	if c := l.current(); c != nil {
		return c.Dedicated(fn)
	}
	return ErrNotConnected
}

func (l *lazyClient) Dedicate() (rueidis.DedicatedClient, func()) {
	if c := l.current(); c != nil {
		return c.Dedicate()
	}
	return nil, func() {}
}

func (l *lazyClient) Nodes() map[string]rueidis.Client {
	if c := l.current(); c != nil {
		return c.Nodes()
	}
	return nil
}

func (l *lazyClient) Mode() rueidis.ClientMode {
	if c := l.current(); c != nil {
		return c.Mode()
	}
	return ""
}

func (l *lazyClient) Close() {
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
	if c := l.current(); c != nil {
		c.Close()
	}
}
