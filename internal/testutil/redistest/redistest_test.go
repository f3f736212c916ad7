package redistest

import (
	"strings"
	"testing"
)

// Each kind of deployment starts, answers, and a single server can be
// killed and restarted (empty, without persistence).
func TestServers(t *testing.T) {
	s := Start(t)
	if _, err := s.Do("SET", "k", "v"); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.Do("GET", "k"); v != "v" {
		t.Fatalf("GET k = %q", v)
	}
	s.Kill()
	if _, err := s.Do("PING"); err == nil {
		t.Fatal("a killed server answers")
	}
	s.Restart()
	if v, _ := s.Do("GET", "k"); v != "" {
		t.Fatalf("a restart without persistence kept k = %q", v)
	}

	c := StartCluster(t, 3)
	info, err := c.Nodes[0].Do("CLUSTER", "INFO")
	if err != nil || !strings.Contains(info, "cluster_known_nodes:3") || !strings.Contains(info, "cluster_slots_assigned:16384") {
		t.Fatalf("cluster: %v %s", err, info)
	}

	sen := StartSentinel(t)
	if addr, err := sen.PrimaryAddr(); err != nil || addr != sen.Primary.Addr {
		t.Fatalf("primary by the sentinel: %q %v, want %s", addr, err, sen.Primary.Addr)
	}
	sen.Failover(t)
	if addr, _ := sen.PrimaryAddr(); addr != sen.Replica.Addr {
		t.Fatalf("after failover the primary is %s, want %s", addr, sen.Replica.Addr)
	}
}
