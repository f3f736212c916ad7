package store_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/bbolt"
	"go.uber.org/zap/zaptest"

	"github.com/presence-sidecar/presence-sidecar/store"
	"github.com/presence-sidecar/presence-sidecar/store/storetest"
)

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func idsOf(ns []store.Notification) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.ID
	}
	return out
}

// populate leaves one of everything in s and returns what it wrote.
type snapshot struct {
	sessions map[string]store.Session
	pending  []store.Notification
	dead     []store.Notification
	recent   []store.Notification
	bots     map[string]store.BotSettings
}

func snap(t *testing.T, s store.Store) snapshot {
	t.Helper()
	var out snapshot
	ss, err := s.Sessions()
	must(t, err)
	out.sessions = map[string]store.Session{}
	for _, x := range ss {
		out.sessions[x.ID] = storetest.NormS(x)
	}
	norm := func(ns []store.Notification, err error) []store.Notification {
		must(t, err)
		for i := range ns {
			ns[i] = storetest.NormN(ns[i])
		}
		return ns
	}
	out.pending = norm(s.Pending())
	out.dead = norm(s.DeadLetters())
	out.recent = norm(s.Recent(1000))
	out.bots, err = s.Bots()
	must(t, err)
	return out
}

func populate(t *testing.T, s store.Store) {
	t.Helper()
	notes := []store.Notification{storetest.Note("a", "s1"), storetest.Note("b", "s2"), storetest.Note("c", "s1"), storetest.Note("d", "s3")}
	must(t, s.Commit([]store.Session{storetest.Sess("s1"), storetest.Sess("s2"), storetest.Sess("s3")}, nil, notes))
	must(t, s.Commit(nil, []string{"s3"}, nil))
	n := notes[1]
	n.Attempts, n.LastError, n.LastStatus, n.NextAttemptAt = 2, "timeout", 0, time.Now().Add(time.Minute)
	must(t, s.Attempted(n))
	must(t, s.Delivered(notes[0]))
	must(t, s.DeadLetter(notes[2]))
	must(t, s.DeadLetter(notes[3]))
	_, err := s.Replay("d")
	must(t, err)
	on := true
	must(t, s.PutBot("bot-1", store.BotSettings{Enabled: &on, CheckInterval: "1m", Mode: "activity"}))
}

// Everything written is there after Close and a new OpenBolt, and the Seq
// counter carries on.
func TestBoltReopenKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	b := openBolt(t, dir)
	populate(t, b)
	before := snap(t, b)
	must(t, b.Close())
	if err := b.Commit([]store.Session{storetest.Sess("x")}, nil, nil); err == nil {
		t.Fatal("Commit after Close succeeded")
	}

	b = openBolt(t, dir)
	defer b.Close()
	after := snap(t, b)
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("after reopen:\n got  %+v\n want %+v", after, before)
	}
	if len(after.sessions) != 2 || len(after.pending) != 2 || len(after.dead) != 1 || len(after.recent) != 3 || len(after.bots) != 1 {
		t.Fatalf("populate left %d sessions, %d pending, %d dead, %d recent, %d bots",
			len(after.sessions), len(after.pending), len(after.dead), len(after.recent), len(after.bots))
	}
	notes := []store.Notification{storetest.Note("e", "s1")}
	must(t, b.Commit(nil, nil, notes))
	if maxSeq := after.pending[len(after.pending)-1].Seq; notes[0].Seq <= maxSeq {
		t.Fatalf("Seq after reopen = %d, want above %d", notes[0].Seq, maxSeq)
	}
	if _, err := b.Replay("c"); err != nil {
		t.Fatalf("Replay after reopen: %v", err)
	}
}

// A missing directory is created, an empty one is a first run; the file is
// private and no temporary file is left behind.
func TestBoltFirstRun(t *testing.T) {
	for _, dir := range []string{t.TempDir(), filepath.Join(t.TempDir(), "a", "b")} {
		b := openBolt(t, dir)
		snapshot := snap(t, b)
		if len(snapshot.sessions)+len(snapshot.pending)+len(snapshot.dead)+len(snapshot.bots) != 0 {
			t.Fatalf("first run not empty: %+v", snapshot)
		}
		if want := filepath.Join(dir, store.FileName); b.Path() != want {
			t.Fatalf("Path = %s, want %s", b.Path(), want)
		}
		must(t, b.Check())
		must(t, b.Close())
		fi, err := os.Stat(b.Path())
		must(t, err)
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("file mode %v, want 0600", fi.Mode().Perm())
		}
		entries, err := os.ReadDir(dir)
		must(t, err)
		if len(entries) != 1 {
			t.Fatalf("data dir holds %v, want only %s", entries, store.FileName)
		}
	}
}

// validFile returns the bytes of a populated store file with bulk*50 more sessions.
func validFile(t *testing.T, bulk int) []byte {
	t.Helper()
	dir := t.TempDir()
	b := openBolt(t, dir)
	populate(t, b)
	// Enough sessions that the file has data pages past the first few.
	for i := range bulk {
		var put []store.Session
		for j := range 50 {
			put = append(put, storetest.Sess(fmt.Sprintf("bulk-%d-%d", i, j)))
		}
		must(t, b.Commit(put, nil, nil))
	}
	must(t, b.Close())
	data, err := os.ReadFile(b.Path())
	must(t, err)
	return data
}

// A file that is not a whole, readable store of a version we know stops
// start-up with an error that names it and says what to do, and is left as
// it was.
func TestBoltOpenRefusesBadFiles(t *testing.T) {
	valid := validFile(t, 20)
	garbage := make([]byte, 64<<10)
	_, _ = rand.Read(garbage)
	const page = 4096

	cases := []struct {
		name string
		make func(t *testing.T, path string) // writes the bad file at path
		want string                          // in the error, besides the path
	}{
		{"garbage", func(t *testing.T, p string) { must(t, os.WriteFile(p, garbage, 0o600)) }, "move it away"},
		{"short garbage", func(t *testing.T, p string) { must(t, os.WriteFile(p, []byte("not a database\n"), 0o600)) }, "move it away"},
		{"empty", func(t *testing.T, p string) { must(t, os.WriteFile(p, nil, 0o600)) }, "empty"},
		{"truncated to half", func(t *testing.T, p string) { must(t, os.WriteFile(p, valid[:len(valid)/2], 0o600)) }, "truncated"},
		{"truncated to one page", func(t *testing.T, p string) { must(t, os.WriteFile(p, valid[:page], 0o600)) }, "truncated"},
		{"truncated to the headers", func(t *testing.T, p string) { must(t, os.WriteFile(p, valid[:2*page], 0o600)) }, "truncated"},
		{"data pages overwritten", func(t *testing.T, p string) {
			bad := slices.Clone(valid)
			copy(bad[2*page:], garbage)
			must(t, os.WriteFile(p, bad, 0o600))
		}, "corrupt"},
		{"headers overwritten", func(t *testing.T, p string) {
			bad := slices.Clone(valid)
			copy(bad[:2*page], garbage)
			must(t, os.WriteFile(p, bad, 0o600))
		}, "corrupt"},
		{"a bbolt file that is not ours", func(t *testing.T, p string) {
			db, err := bbolt.Open(p, 0o600, nil)
			must(t, err)
			must(t, db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket([]byte("other")); return err }))
			must(t, db.Close())
		}, "not a presence-sidecar store"},
		{"newer schema", func(t *testing.T, p string) {
			must(t, os.WriteFile(p, valid, 0o600))
			db, err := bbolt.Open(p, 0o600, nil)
			must(t, err)
			must(t, db.Update(func(tx *bbolt.Tx) error {
				return tx.Bucket([]byte("meta")).Put([]byte("schema"), []byte{0, 0, 0, 0, 0, 0, 0, store.SchemaVersion + 1})
			}))
			must(t, db.Close())
		}, "newer presence-sidecar"},
		{"a directory", func(t *testing.T, p string) { must(t, os.Mkdir(p, 0o700)) }, "not a regular file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, store.FileName)
			c.make(t, path)
			before, _ := os.ReadFile(path)
			b, err := store.OpenBolt(dir, zaptest.NewLogger(t))
			if err == nil {
				b.Close()
				t.Fatal("OpenBolt succeeded")
			}
			t.Log(err)
			if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, c.want) {
				t.Fatalf("error %q: want the path %s and %q", msg, path, c.want)
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
				t.Fatal("OpenBolt changed the file it refused")
			}
		})
	}
}

// A file the sidecar may not read or write stops start-up with an error that
// names it. As root (who ignores permissions) the check runs in a child
// process that drops to nobody.
func TestBoltOpenRefusesUnreadableFile(t *testing.T) {
	if os.Getenv("STORE_TEST_OPEN_DIR") != "" {
		_, err := store.OpenBolt(os.Getenv("STORE_TEST_OPEN_DIR"), nil)
		fmt.Printf("RESULT %v\n", err)
		os.Exit(0)
	}
	for _, mode := range []os.FileMode{0o000, 0o400} { // unreadable; read-only
		t.Run(mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			b := openBolt(t, dir)
			must(t, b.Close())
			must(t, os.Chmod(b.Path(), mode))
			var msg string
			if os.Geteuid() != 0 {
				_, err := store.OpenBolt(dir, zaptest.NewLogger(t))
				if err == nil {
					t.Fatal("OpenBolt succeeded")
				}
				msg = err.Error()
			} else {
				msg = openAsNobody(t, dir)
			}
			t.Log(msg)
			if !strings.Contains(msg, b.Path()) || !strings.Contains(msg, "permission") {
				t.Fatalf("error %q: want the path %s and the permission problem", msg, b.Path())
			}
		})
	}
}

// openAsNobody runs OpenBolt(dir) in a copy of the test binary as uid 65534
// and returns the error it printed.
func openAsNobody(t *testing.T, dir string) string {
	t.Helper()
	// The child must reach the binary and the directory: give both to a
	// world-searchable place, leaving the file's own mode as the test set it.
	pub, err := os.MkdirTemp("", "store-perm-")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(pub) })
	must(t, os.Chmod(pub, 0o755))
	exe, err := os.Executable()
	must(t, err)
	bin := filepath.Join(pub, "store.test")
	data, err := os.ReadFile(exe)
	must(t, err)
	must(t, os.WriteFile(bin, data, 0o755))
	data, err = os.ReadFile(filepath.Join(dir, store.FileName))
	must(t, err)
	mode, err := os.Stat(filepath.Join(dir, store.FileName))
	must(t, err)
	must(t, os.WriteFile(filepath.Join(pub, store.FileName), data, 0o600))
	must(t, os.Chmod(filepath.Join(pub, store.FileName), mode.Mode().Perm()))

	cmd := exec.Command(bin, "-test.run=^TestBoltOpenRefusesUnreadableFile$")
	cmd.Env = append(os.Environ(), "STORE_TEST_OPEN_DIR="+pub)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cannot run a child as nobody (tests run as root here): %v %s", err, out)
	}
	for line := range strings.Lines(string(out)) {
		if msg, ok := strings.CutPrefix(line, "RESULT "); ok {
			if strings.TrimSpace(msg) == "<nil>" {
				t.Fatal("OpenBolt succeeded as nobody")
			}
			return strings.ReplaceAll(msg, pub, dir) // report it against the test's own path
		}
	}
	t.Fatalf("child printed no result: %s", out)
	return ""
}

// A second process on the same DATA_DIR gets a clear error, not a wait
// forever nor a second writer.
func TestBoltOpenRefusesALockedFile(t *testing.T) {
	dir := t.TempDir()
	b := openBolt(t, dir)
	start := time.Now()
	// flock locks belong to open file descriptions, so a second open in this
	// process conflicts like another process would.
	_, err := store.OpenBoltWith(dir, zaptest.NewLogger(t), store.TestBoltOptions{LockTimeout: 300 * time.Millisecond})
	if err == nil {
		t.Fatal("second OpenBolt succeeded")
	}
	t.Log(err)
	if msg := err.Error(); !strings.Contains(msg, b.Path()) || !strings.Contains(msg, "another presence-sidecar may be running on the same DATA_DIR") {
		t.Fatalf("error %q", msg)
	}
	if waited := time.Since(start); waited < 250*time.Millisecond || waited > 5*time.Second {
		t.Fatalf("waited %v for the lock, want about the timeout", waited)
	}
	must(t, b.Commit([]store.Session{storetest.Sess("still-works")}, nil, nil))
	must(t, b.Close())
	b = openBolt(t, dir)
	must(t, b.Close())
}

// A write that fails half-way through a Commit leaves nothing behind, and
// the failed Seqs are not skipped.
func TestBoltCommitRollsBackAFailedWrite(t *testing.T) {
	b := openBolt(t, t.TempDir())
	defer b.Close()
	first := []store.Notification{storetest.Note("a", "s")}
	must(t, b.Commit(nil, nil, first))
	before := snap(t, b)

	tooLong := storetest.Sess(strings.Repeat("x", bbolt.MaxKeySize+1)) // bbolt refuses it after the others are written
	notes := []store.Notification{storetest.Note("b", "s"), storetest.Note("c", "s")}
	must(t, b.Commit([]store.Session{storetest.Sess("ok")}, nil, []store.Notification{storetest.Note("d", "s")}))
	err := b.Commit([]store.Session{storetest.Sess("ok2"), tooLong}, []string{"ok"}, notes)
	if err == nil {
		t.Fatal("Commit with a too-long key succeeded")
	}
	if notes[0].Seq != 0 || notes[1].Seq != 0 {
		t.Fatalf("failed Commit assigned Seqs %d %d", notes[0].Seq, notes[1].Seq)
	}
	after := snap(t, b)
	if _, ok := after.sessions["ok2"]; ok {
		t.Fatal("a failed Commit wrote a session")
	}
	if _, ok := after.sessions["ok"]; !ok {
		t.Fatal("a failed Commit forgot a session")
	}
	if len(after.pending) != len(before.pending)+1 {
		t.Fatalf("pending %v", idsOf(after.pending))
	}

	// Several writers at once share transactions; one bad write must not
	// fail the others.
	var wg sync.WaitGroup
	errs := make([]error, 32)
	for i := range errs {
		wg.Go(func() {
			s := storetest.Sess(fmt.Sprintf("g%d", i))
			if i == 7 {
				s = tooLong
			}
			errs[i] = b.Commit([]store.Session{s}, nil, []store.Notification{storetest.Note(fmt.Sprintf("g%d", i), s.ID)})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if (err != nil) != (i == 7) {
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	p, err := b.Pending()
	must(t, err)
	for i := 1; i < len(p); i++ {
		if p[i].Seq != p[i-1].Seq+1 {
			t.Fatalf("Seqs %d then %d: failed writes left a gap", p[i-1].Seq, p[i].Seq)
		}
	}
	if len(p) != len(after.pending)+31 {
		t.Fatalf("%d pending, want %d", len(p), len(after.pending)+31)
	}
}

// Check (for /readyz) notices a closed store and a file removed or replaced
// under the running sidecar.
func TestBoltCheck(t *testing.T) {
	dir := t.TempDir()
	b := openBolt(t, dir)
	must(t, b.Check())
	must(t, os.Rename(b.Path(), b.Path()+".moved"))
	if err := b.Check(); err == nil || !strings.Contains(err.Error(), b.Path()) {
		t.Fatalf("Check with the file moved away = %v", err)
	}
	must(t, os.WriteFile(b.Path(), []byte("other"), 0o600))
	if err := b.Check(); err == nil || !strings.Contains(err.Error(), "replaced") {
		t.Fatalf("Check with the file replaced = %v", err)
	}
	must(t, os.Remove(b.Path()))
	must(t, os.Rename(b.Path()+".moved", b.Path()))
	must(t, b.Check())
	must(t, b.Close())
	if err := b.Check(); err == nil {
		t.Fatal("Check after Close succeeded")
	}
	must(t, b.Close()) // twice is fine
}

// Long runs of commit/deliver cycles reuse freed pages: the file stops
// growing. Forgotten sessions, delivered notifications and the capped recent
// and dead lists all give their space back.
func TestBoltFileStopsGrowing(t *testing.T) {
	b, err := store.OpenBoltWith(t.TempDir(), zaptest.NewLogger(t), store.TestBoltOptions{NoSync: true, DeadLimit: 50})
	must(t, err)
	defer b.Close()
	cycle := 0
	run := func(n int) (fileSize, inUse int64) {
		for range n {
			cycle++
			id := fmt.Sprintf("session-%04d", cycle%500)
			s := storetest.Sess(id)
			notes := []store.Notification{storetest.Note(fmt.Sprintf("n-%d", cycle), id)}
			notes[0].Text = strings.Repeat("t", 200)
			must(t, b.Commit([]store.Session{s}, []string{fmt.Sprintf("session-%04d", (cycle+250)%500)}, notes))
			switch cycle % 10 {
			case 0:
				must(t, b.DeadLetter(notes[0]))
			case 5:
				notes[0].Attempts = 1
				must(t, b.Attempted(notes[0]))
				must(t, b.Delivered(notes[0]))
			default:
				must(t, b.Delivered(notes[0]))
			}
		}
		fi, err := os.Stat(b.Path())
		must(t, err)
		return fi.Size(), store.HighWater(b.Path())
	}
	const n = 500
	warmSize, warmUse := run(2 * n) // sessions, recent and dead lists reach their steady size
	firstSize, firstUse := run(n)
	secondSize, secondUse := run(2 * n)
	t.Logf("after %d, %d and %d cycles: file %d, %d, %d bytes; pages in use up to %d, %d, %d",
		2*n, 3*n, 5*n, warmSize, firstSize, secondSize, warmUse, firstUse, secondUse)
	if secondSize > firstSize {
		t.Fatalf("the file grew from %d to %d bytes over %d more cycles of steady state", firstSize, secondSize, 2*n)
	}
	// bbolt may take a few more pages while free ones are fragmented; a leak
	// of even 100 bytes a cycle would show as far more.
	if slack := int64(16 * 4096); secondUse > firstUse+slack {
		t.Fatalf("pages in use grew from %d to %d bytes over %d more cycles of steady state", firstUse, secondUse, 2*n)
	}
	if p, _ := b.Pending(); len(p) != 0 {
		t.Fatalf("%d pending", len(p))
	}
}

// ---- kill -9 ----

const killChildEnv = "STORE_TEST_KILL_CHILD_DIR"

// A sidecar killed with SIGKILL in the middle of writing loses nothing it
// had been told was committed, and its file opens cleanly.
func TestBoltSurvivesKill9(t *testing.T) {
	if dir := os.Getenv(killChildEnv); dir != "" {
		killChild(dir)
		os.Exit(0)
	}
	dir := t.TempDir()
	exe, err := os.Executable()
	must(t, err)
	committed := map[string]bool{} // reported committed
	delStart := map[string]bool{}  // Delivered called
	delDone := map[string]bool{}   // Delivered returned
	for round := range 3 {
		cmd := exec.Command(exe, "-test.run=^TestBoltSurvivesKill9$")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s", killChildEnv, dir), fmt.Sprintf("STORE_TEST_ROUND=%d", round))
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		must(t, err)
		must(t, cmd.Start())
		sc := bufio.NewScanner(out)
		lines, killAt := 0, 300+round*150
		for sc.Scan() {
			verb, id, _ := strings.Cut(sc.Text(), " ")
			switch verb {
			case "commit":
				committed[id] = true
			case "del-start":
				delStart[id] = true
			case "del-done":
				delDone[id] = true
			default:
				continue
			}
			if lines++; lines == killAt {
				must(t, cmd.Process.Signal(syscall.SIGKILL))
			}
		}
		_, _ = io.Copy(io.Discard, out)
		err = cmd.Wait()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: child ended with %v after %d lines, want killed", round, err, lines)
		}

		b := openBolt(t, dir) // runs the full consistency check
		snapshot := snap(t, b)
		must(t, b.Close())
		inPending := map[string]bool{}
		for i, n := range snapshot.pending {
			inPending[n.ID] = true
			if i > 0 && n.Seq <= snapshot.pending[i-1].Seq {
				t.Fatalf("round %d: pending out of Seq order", round)
			}
		}
		for id := range committed {
			if _, ok := snapshot.sessions[id]; !ok {
				t.Fatalf("round %d: session %s was reported committed and is gone", round, id)
			}
			switch {
			case delDone[id] && inPending[id]:
				t.Fatalf("round %d: %s was reported delivered and is still pending", round, id)
			case !delStart[id] && !inPending[id]:
				t.Fatalf("round %d: notification %s was reported committed and is gone", round, id)
			}
		}
		t.Logf("round %d: killed after %d lines; %d commits and %d deliveries reported so far; %d pending, %d sessions on reopen",
			round, lines, len(committed), len(delDone), len(snapshot.pending), len(snapshot.sessions))
	}
}

// killChild commits from several goroutines, printing each outcome after it
// returned, until it is killed.
func killChild(dir string) {
	b, err := store.OpenBolt(dir, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	say := func(verb, id string) {
		mu.Lock()
		fmt.Printf("%s %s\n", verb, id) // os.Stdout is unbuffered: written before the next write starts
		mu.Unlock()
	}
	round := os.Getenv("STORE_TEST_ROUND")
	deadline := time.Now().Add(30 * time.Second) // in case the parent is gone
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; time.Now().Before(deadline); i++ {
				id := fmt.Sprintf("r%s-w%d-%d", round, w, i)
				notes := []store.Notification{storetest.Note(id, id)}
				if err := b.Commit([]store.Session{storetest.Sess(id)}, nil, notes); err != nil {
					fmt.Fprintln(os.Stderr, "child:", err)
					os.Exit(2)
				}
				say("commit", id)
				if i%3 == 0 {
					say("del-start", id)
					if err := b.Delivered(notes[0]); err != nil {
						fmt.Fprintln(os.Stderr, "child:", err)
						os.Exit(2)
					}
					say("del-done", id)
				}
			}
		})
	}
	wg.Wait()
}

// ---- throughput ----

// BenchmarkBoltCommit measures durable transitions per second on the real
// disk under the test's temp dir: each op is one Commit (one fsync) of a
// session and its notification, or of ten of each (batching), and, in
// parallel, as many concurrent committers as the presence engine's shards
// (group commit shares an fsync among them).
func BenchmarkBoltCommit(b *testing.B) {
	for _, bc := range []struct {
		name     string
		perOp    int
		parallel int
	}{
		{"1session+1note", 1, 0},
		{"10sessions+10notes", 10, 0},
		{"1session+1note/16writers", 1, 16},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := store.OpenBolt(b.TempDir(), nil)
			must(b, err)
			defer s.Close()
			op := func(i int) {
				put := make([]store.Session, bc.perOp)
				notes := make([]store.Notification, bc.perOp)
				for j := range bc.perOp {
					id := fmt.Sprintf("s%d-%d", i%10000, j)
					put[j] = storetest.Sess(id)
					notes[j] = storetest.Note(fmt.Sprintf("n%d-%d", i, j), id)
				}
				if err := s.Commit(put, nil, notes); err != nil {
					b.Fatal(err)
				}
			}
			ops := 0
			b.ResetTimer()
			if bc.parallel == 0 {
				for ; b.Loop(); ops++ {
					op(ops)
				}
			} else {
				var mu sync.Mutex
				next := 0
				b.SetParallelism(max(1, bc.parallel/runtime.GOMAXPROCS(0)))
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						mu.Lock()
						i := next
						next++
						mu.Unlock()
						op(i)
					}
				})
				ops = next
			}
			b.ReportMetric(float64(ops*bc.perOp)/b.Elapsed().Seconds(), "transitions/s")
			b.ReportMetric(s.WritesPerTx(), "commits/tx")
		})
	}
}

// Close while writers are busy: every Commit either succeeds, and is there
// after reopening, or fails; nothing hangs.
func TestBoltCloseDuringWrites(t *testing.T) {
	dir := t.TempDir()
	b := openBolt(t, dir)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ok []string
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("w%d-%d", w, i)
				if err := b.Commit([]store.Session{storetest.Sess(id)}, nil, nil); err != nil {
					if !strings.Contains(err.Error(), "closed") {
						t.Errorf("Commit: %v", err)
					}
					return
				}
				mu.Lock()
				ok = append(ok, id)
				mu.Unlock()
			}
		})
	}
	time.Sleep(50 * time.Millisecond)
	must(t, b.Close())
	wg.Wait()
	b = openBolt(t, dir)
	defer b.Close()
	got := snap(t, b).sessions
	for _, id := range ok {
		if _, found := got[id]; !found {
			t.Fatalf("session %s was committed before Close and is gone", id)
		}
	}
	t.Logf("%d commits before Close", len(ok))
}

// Whatever page of the file is garbage, OpenBolt does not crash: it refuses
// the file with an error naming it, or (for a page not in use) opens it and
// every read works.
func TestBoltOpenSurvivesAnyCorruptPage(t *testing.T) {
	valid := validFile(t, 4)
	const page = 4096
	refused, tried := 0, 0
	for p := 0; p*page < len(valid); p++ {
		tried++
		bad := slices.Clone(valid)
		_, _ = rand.Read(bad[p*page : (p+1)*page])
		dir := t.TempDir()
		path := filepath.Join(dir, store.FileName)
		must(t, os.WriteFile(path, bad, 0o600))
		b, err := store.OpenBoltWith(dir, nil, store.TestBoltOptions{NoSync: true})
		if err != nil {
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("page %d: error without the path: %v", p, err)
			}
			refused++
			continue
		}
		snap(t, b)
		must(t, b.Commit([]store.Session{storetest.Sess("after")}, nil, []store.Notification{storetest.Note("after", "after")}))
		must(t, b.Close())
	}
	t.Logf("%d pages made garbage in turn: %d refused, the others were not in use", tried, refused)
	if refused < 3 {
		t.Fatalf("only %d corrupt pages refused", refused)
	}
}
