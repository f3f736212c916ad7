package redistest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// MasterName is the name the sentinel monitors the primary under.
const MasterName = "presence"

// Sentinel is a primary, one replica of it, and one redis-sentinel that
// watches them and promotes the replica when the primary fails.
type Sentinel struct {
	Primary, Replica, Sentinel *Server
}

// StartSentinel starts the three processes and waits until the replica is
// in sync and the sentinel knows the primary.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	bin := Binary(t, "redis-server")
	s := &Sentinel{}
	s.Primary = newServer(t, bin, freePort(t, 0))
	s.Primary.start()
	s.Replica = newServer(t, bin, freePort(t, 0), "--replicaof", "127.0.0.1", strconv.Itoa(s.Primary.Port))
	s.Replica.start()
	waitFor(t, "the replica in sync", func() bool {
		info, err := s.Replica.Do("INFO", "replication")
		return err == nil && strings.Contains(info, "master_link_status:up")
	})

	port := freePort(t, 0)
	dir := t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	body := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor %s 127.0.0.1 %d 1\n"+
		"sentinel down-after-milliseconds %s 1000\nsentinel failover-timeout %s 5000\nsentinel parallel-syncs %s 1\n",
		port, dir, MasterName, s.Primary.Port, MasterName, MasterName, MasterName)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	// The sentinel rewrites its own config file: it takes no --save or --dir
	// arguments of a data server.
	sen := &Server{Addr: fmt.Sprintf("127.0.0.1:%d", port), Port: port, t: t, bin: Binary(t, "redis-sentinel"), dir: dir,
		log: filepath.Join(dir, "sentinel.log"), args: []string{conf, "--logfile", filepath.Join(dir, "sentinel.log")}}
	t.Cleanup(sen.Kill)
	sen.start()
	s.Sentinel = sen
	// A replica can be promoted once the sentinel has seen it in sync (it
	// learns of it from the primary's INFO, then asks the replica itself).
	waitFor(t, "the sentinel to see the replica in sync", func() bool {
		out, err := sen.Do("SENTINEL", "REPLICAS", MasterName)
		return err == nil && strings.Contains(out, strconv.Itoa(s.Replica.Port)) && strings.Contains(out, "master-link-status\nok")
	})
	return s
}

// PrimaryAddr is where the sentinel says the primary is now.
func (s *Sentinel) PrimaryAddr() (string, error) {
	out, err := s.Sentinel.Do("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MasterName)
	if err != nil {
		return "", err
	}
	host, port, ok := strings.Cut(out, "\n")
	if !ok {
		return "", fmt.Errorf("sentinel answered %q", out)
	}
	return host + ":" + port, nil
}

// Failover asks the sentinel to promote the replica and waits until it is
// the primary.
func (s *Sentinel) Failover(t testing.TB) {
	t.Helper()
	if _, err := s.Sentinel.Do("SENTINEL", "FAILOVER", MasterName); err != nil {
		t.Fatalf("SENTINEL FAILOVER: %v", err)
	}
	waitFor(t, "the replica promoted", func() bool {
		addr, err := s.PrimaryAddr()
		if err != nil || addr != s.Replica.Addr {
			return false
		}
		role, err := s.Replica.Do("ROLE")
		return err == nil && strings.HasPrefix(role, "master")
	})
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * startTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
