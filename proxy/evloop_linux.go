//go:build linux

package proxy

import (
	"encoding/binary"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The event-loop relay (docs/ARCHITECTURE.md, "Memory per connection"):
// after the handshake, both sockets of a connection leave Go's poller and
// are watched by one of a few epoll loops, one per GOMAXPROCS. An idle
// connection then costs its state and two descriptors: no goroutine, no
// stack, no buffer.
//
// A loop reads a readable socket into its one buffer and hands the chunk to
// the same relay functions as the goroutine relay (relay.go). Writes never
// block: what the kernel does not take at once waits in the socket's
// pending buffer, and the loop stops reading the source until EPOLLOUT has
// drained it, so a slow reader costs at most one chunk.
//
// Who touches what: a loop alone registers, reads and releases its sockets,
// so the loop-only fields need no lock. Writes come from the loop, the
// probe's clock and goAway; loopSock.mu serialises them with the loop's
// flush and with the release of the descriptor.

const (
	// readBudget is how many reads a socket gets per turn before the loop
	// serves the others: one busy connection cannot starve its loop.
	readBudget = 16
	// eventfdSlot marks the loop's own wake-up descriptor in epoll data.
	eventfdSlot = ^uint32(0)
	// yieldsBeforePark is how often an idle loop lets other goroutines run
	// before it parks: a park and its wake-up cost more than a yield.
	yieldsBeforePark = 2
)

// loopSocks is the event-loop part of a wsConn, inline: its loop, its two
// sockets and the linger timer (pump.go: one socket's reads at a time are
// bounded by it).
type loopSocks struct {
	loop   *eventLoop
	linger *time.Timer
	s      [2]loopSock
}

const (
	clientSide   = 0
	upstreamSide = 1
)

// loopSock is one socket owned by an event loop. It implements peer.
type loopSock struct {
	c    *wsConn
	fd   int32
	side uint8
	slot uint32
	gen  uint32

	mu         sync.Mutex
	pending    *[]byte // bytes the kernel did not take yet; nil: none
	closed     bool    // the descriptor is released: writes fail
	shut       bool    // shut down for a kill: writes fail
	wantShutWr bool    // CloseWrite once pending is drained

	// loop only
	done     bool // this socket's direction stopped reading
	readable bool // data may wait (edge-triggered: no new event will tell)
	ended    bool // the peer's FIN (or an error) was reported: read until 0
}

// peerSock is the other socket of the connection.
func (s *loopSock) peerSock() *loopSock { return &s.c.socks.s[1-s.side] }

// Write writes b now as far as the kernel takes it and keeps the rest for
// the loop's flush: it never blocks.
func (s *loopSock) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.shut {
		return 0, net.ErrClosed
	}
	if s.pending != nil {
		*s.pending = append(*s.pending, b...)
		return len(b), nil
	}
	for n := 0; n < len(b); {
		m, err := rawWrite(s.fd, b[n:])
		if m > 0 {
			n += m
		}
		switch err {
		case nil:
		case unix.EINTR:
		case unix.EAGAIN:
			bp := relayBufs.Get().(*[]byte)
			*bp = append((*bp)[:0], b[n:]...)
			s.pending = bp
			return len(b), nil
		default:
			return n, os.NewSyscallError("write", err)
		}
	}
	return len(b), nil
}

// hasPending reports whether written bytes still wait for the kernel.
func (s *loopSock) hasPending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pending != nil
}

// flush writes what is pending; drained is false while the kernel still
// refuses some.
func (s *loopSock) flush() (drained bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending == nil {
		return true, nil
	}
	if s.closed || s.shut {
		return false, net.ErrClosed
	}
	b := *s.pending
	for len(b) > 0 {
		m, err := rawWrite(s.fd, b)
		if m > 0 {
			b = b[m:]
		}
		switch err {
		case nil, unix.EINTR:
		case unix.EAGAIN:
			n := copy(*s.pending, b)
			*s.pending = (*s.pending)[:n]
			return false, nil
		default:
			return false, os.NewSyscallError("write", err)
		}
	}
	s.putPendingLocked()
	if s.wantShutWr {
		s.wantShutWr = false
		unix.Shutdown(int(s.fd), unix.SHUT_WR)
	}
	return true, nil
}

func (s *loopSock) putPendingLocked() {
	if cap(*s.pending) == headroom+relayBufSize {
		*s.pending = (*s.pending)[:cap(*s.pending)]
		relayBufs.Put(s.pending)
	}
	s.pending = nil
}

// CloseWrite half-closes the socket once what is pending went out: the
// peer sees the end of the stream after its last byte.
func (s *loopSock) CloseWrite() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed || s.shut:
		return net.ErrClosed
	case s.pending != nil:
		s.wantShutWr = true
		return nil
	}
	return unix.Shutdown(int(s.fd), unix.SHUT_WR)
}

// Close is a kill's close, from any goroutine: both ways of the socket are
// shut down at once (the peer sees the end), and the loop is asked to stop
// the connection and release the descriptors. Only the loop closes a
// descriptor, so a number the kernel reuses is never mistaken for this one.
func (s *loopSock) Close() error {
	s.mu.Lock()
	if !s.closed && !s.shut {
		s.shut = true
		unix.Shutdown(int(s.fd), unix.SHUT_RDWR)
	}
	s.mu.Unlock()
	s.c.socks.loop.post(loopTask{kind: taskStop, c: s.c})
	return nil
}

// SetReadDeadline bounds this socket's reads (the linger after the other
// side ended, pump.go): when t passes, its direction ends as a timed-out
// read would.
func (s *loopSock) SetReadDeadline(t time.Time) error {
	ls := &s.c.socks
	if ls.linger != nil {
		ls.linger.Stop()
	}
	if t.IsZero() {
		return nil
	}
	side := s.side
	ls.linger = time.AfterFunc(time.Until(t), func() { ls.loop.post(loopTask{kind: taskDeadline, c: s.c, side: side}) })
	return nil
}

// release removes the socket from its loop and closes the descriptor; the
// loop calls it once both directions stopped.
func (s *loopSock) release() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		// No EPOLL_CTL_DEL: closing the last descriptor of the open file
		// removes its registration (epoll(7), Q6), and this one is the
		// last (adoptSockets closed the original; F_DUPFD_CLOEXEC keeps it
		// from children). Were a copy alive all the same, its events would
		// name a freed slot's old generation, which lookup ignores.
		unix.Close(int(s.fd))
		if s.pending != nil {
			s.putPendingLocked()
		}
	}
	s.mu.Unlock()
	s.c.socks.loop.freeSlot(s.slot)
}

// loopTask is work posted to a loop from another goroutine.
type loopTask struct {
	kind                   uint8
	side                   uint8
	c                      *wsConn
	clientBuf, upstreamBuf []byte // taskRegister: what the peers sent with the handshake
}

const (
	taskRegister = iota // take over c's sockets
	taskStop            // c was killed: end both directions
	taskDeadline        // the read deadline of c.socks.s[side] passed
)

// eventLoop is one epoll loop and the sockets it owns.
type eventLoop struct {
	epfd, efd int
	// epfd on Go's poller, so that an idle loop parks like any goroutine
	// waiting for input instead of holding a P in epoll_wait (wait); nil
	// if the poller would not take it.
	epfile   *os.File
	epoll    syscall.RawConn
	pollOnce func(uintptr) bool // made once: a closure per wait would allocate

	mu     sync.Mutex
	posted []loopTask
	woken  bool // an eventfd write is outstanding

	// loop only
	slots  []slotEntry
	free   []uint32
	ready  []slotRef // sockets that spent their read budget with data left
	buf    []byte
	events []unix.EpollEvent
	got    int // events pollOnce found
}

type slotEntry struct {
	s   *loopSock
	gen uint32
}

type slotRef struct{ slot, gen uint32 }

var (
	loopsOnce sync.Once
	loops     []*eventLoop
)

// eventLoops starts the loops on first use; nil when epoll is unavailable
// (the goroutine relay then serves every connection).
func eventLoops() []*eventLoop {
	loopsOnce.Do(func() {
		n := runtime.GOMAXPROCS(0)
		for range n {
			l, err := newEventLoop()
			if err != nil {
				return
			}
			loops = append(loops, l)
			go l.run()
		}
	})
	return loops
}

func newEventLoop() (*eventLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	setEventRef(&ev, slotRef{slot: eventfdSlot})
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, efd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(efd)
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	l := &eventLoop{epfd: epfd, efd: efd, buf: make([]byte, headroom+relayBufSize), events: make([]unix.EpollEvent, 256)}
	l.pollOnce = func(uintptr) bool {
		l.got = rawEpollWait(l.epfd, l.events)
		return l.got > 0
	}
	// An epoll descriptor is itself pollable: readable while events wait.
	if unix.SetNonblock(epfd, true) == nil {
		l.epfile = os.NewFile(uintptr(epfd), "epoll")
		if rc, err := l.epfile.SyscallConn(); err == nil {
			l.epoll = rc
		}
	}
	return l, nil
}

// The epoll data of a socket is its slot and the slot's generation: an
// event still queued for a released socket never reaches the next one.
func setEventRef(ev *unix.EpollEvent, r slotRef) {
	ev.Fd, ev.Pad = int32(r.slot), int32(r.gen)
}

func eventRef(ev *unix.EpollEvent) slotRef { return slotRef{uint32(ev.Fd), uint32(ev.Pad)} }

// adoptSockets prepares c's two TCP sockets for an event loop: it takes
// their descriptors, and c relays through the loop once startLoop posts
// it. It returns false, with nothing changed, when the sockets are not
// plain TCP (TLS) or the loops are unavailable. It runs before c is shared
// (track), so c.client and c.upstream change hands unobserved.
func (c *wsConn) adoptSockets() bool {
	ls := eventLoops()
	if len(ls) == 0 {
		return false
	}
	cfd, ok := dupFD(c.client)
	if !ok {
		return false
	}
	ufd, ok := dupFD(c.upstream)
	if !ok {
		unix.Close(cfd)
		return false
	}
	// The duplicates keep the sockets open; the net.Conns go, and with them
	// Go's poller registrations.
	c.client.Close()
	c.upstream.Close()
	l := ls[uint64(c.id)%uint64(len(ls))]
	c.socks.loop = l
	c.socks.s[clientSide] = loopSock{c: c, fd: int32(cfd), side: clientSide}
	c.socks.s[upstreamSide] = loopSock{c: c, fd: int32(ufd), side: upstreamSide}
	c.client, c.upstream = &c.socks.s[clientSide], &c.socks.s[upstreamSide]
	c.looped = true
	return true
}

// startLoop hands an adopted connection to its loop, with what the peers
// sent along with the handshake, which is relayed first.
func (c *wsConn) startLoop(clientBuf, upstreamBuf []byte) {
	c.socks.loop.post(loopTask{kind: taskRegister, c: c, clientBuf: clientBuf, upstreamBuf: upstreamBuf})
}

// closeSockets closes both sockets for closeAndReport: on the loop, the
// descriptors are released.
func (c *wsConn) closeSockets() {
	if c.looped {
		if c.socks.linger != nil {
			c.socks.linger.Stop()
		}
		c.socks.s[clientSide].release()
		c.socks.s[upstreamSide].release()
		return
	}
	c.client.Close()
	c.upstream.Close()
}

// dupFD duplicates the descriptor of a plain TCP connection. Not File():
// that would make the socket blocking and tie it to a finalizer.
func dupFD(conn peer) (int, bool) {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return 0, false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0, false
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil || derr != nil {
		return 0, false
	}
	return fd, true
}

// post queues t for the loop and wakes it.
func (l *eventLoop) post(t loopTask) {
	l.mu.Lock()
	l.posted = append(l.posted, t)
	wake := !l.woken
	l.woken = true
	l.mu.Unlock()
	if wake {
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		unix.Write(l.efd, one[:])
	}
}

func (l *eventLoop) run() {
	events := l.events
	var tasks []loopTask
	var ready []slotRef
	for {
		n := l.wait()
		for i := range events[:n] {
			ev := &events[i]
			r := eventRef(ev)
			if r.slot == eventfdSlot {
				tasks = l.takeTasks(tasks[:0])
				for j := range tasks {
					l.runTask(&tasks[j])
					tasks[j] = loopTask{}
				}
				continue
			}
			s := l.lookup(r)
			if s == nil {
				continue
			}
			if ev.Events&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
				l.writable(s)
			}
			if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				s.readable = true
				s.ended = s.ended || ev.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0
				l.readFrom(s)
			}
		}
		ready, l.ready = l.ready, ready[:0]
		for _, r := range ready {
			if s := l.lookup(r); s != nil {
				l.readFrom(s)
			}
		}
	}
}

// wait returns how many events it put in l.events: those already there
// without the scheduler's system-call bookkeeping; after a few yields to
// other goroutines (under load, new events come while they run); else it
// parks on Go's poller until the epoll descriptor is readable.
//
// Blocking in epoll_wait instead keeps the P: with GOMAXPROCS=1 (one CPU
// in a container) every goroutine the loop's writes wake then waits for
// sysmon to take the P back, and a single connection's echo took 230–270 µs
// against 50 µs on the goroutine relay (docs/ARCHITECTURE.md, "Memory per
// connection"). Sockets left on the ready list do not wait.
func (l *eventLoop) wait() int {
	if n := rawEpollWait(l.epfd, l.events); n > 0 || len(l.ready) > 0 {
		return n
	}
	for range yieldsBeforePark {
		runtime.Gosched()
		if n := rawEpollWait(l.epfd, l.events); n > 0 {
			return n
		}
	}
	if l.epoll != nil {
		if err := l.epoll.Read(l.pollOnce); err == nil {
			return l.got
		}
	}
	for {
		if n, err := unix.EpollWait(l.epfd, l.events, -1); err == nil {
			return n
		}
	}
}

func (l *eventLoop) takeTasks(into []loopTask) []loopTask {
	var b [8]byte
	unix.Read(l.efd, b[:])
	l.mu.Lock()
	into = append(into, l.posted...)
	clear(l.posted)
	l.posted = l.posted[:0]
	l.woken = false
	l.mu.Unlock()
	return into
}

func (l *eventLoop) runTask(t *loopTask) {
	c := t.c
	switch t.kind {
	case taskRegister:
		l.register(c, t.clientBuf, t.upstreamBuf)
	case taskStop:
		for side := range c.socks.s {
			l.stop(&c.socks.s[side], net.ErrClosed)
		}
	case taskDeadline:
		l.stop(&c.socks.s[t.side], os.ErrDeadlineExceeded)
	}
}

// register adds c's sockets to the loop, edge-triggered for reading,
// writing and the peer's half-close, and relays the handshake leftovers.
func (l *eventLoop) register(c *wsConn, clientBuf, upstreamBuf []byte) {
	for side := range c.socks.s {
		s := &c.socks.s[side]
		s.slot, s.gen = l.allocSlot(s)
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET}
		setEventRef(&ev, slotRef{s.slot, s.gen})
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, int(s.fd), &ev); err != nil {
			c.p.log.Error("event loop cannot watch a socket; closing the connection")
			c.kill(c.direction(side == clientSide).srcGone)
		}
	}
	// The leftovers go first; what arrives later is read on the sockets'
	// first events (an edge is reported at once for data already there).
	for side, b := range [2][]byte{clientBuf, upstreamBuf} {
		if len(b) == 0 {
			continue
		}
		buf := make([]byte, headroom+len(b))
		copy(buf[headroom:], b)
		d := c.direction(side == clientSide)
		if err := d.relay(buf, len(b)); err != nil {
			c.kill(d.dstGone)
		}
	}
}

func (l *eventLoop) allocSlot(s *loopSock) (slot, gen uint32) {
	if n := len(l.free); n > 0 {
		slot = l.free[n-1]
		l.free = l.free[:n-1]
	} else {
		slot = uint32(len(l.slots))
		l.slots = append(l.slots, slotEntry{})
	}
	e := &l.slots[slot]
	e.s = s
	return slot, e.gen
}

func (l *eventLoop) freeSlot(slot uint32) {
	e := &l.slots[slot]
	if e.s == nil {
		return
	}
	e.s = nil
	e.gen++
	l.free = append(l.free, slot)
}

func (l *eventLoop) lookup(r slotRef) *loopSock {
	if int(r.slot) >= len(l.slots) {
		return nil
	}
	e := &l.slots[r.slot]
	if e.s == nil || e.gen != r.gen {
		return nil
	}
	return e.s
}

// readFrom relays what s has to read, until the kernel has no more, the
// peer stops taking it (back-pressure: s waits for the peer's flush), or
// the read budget is spent (s goes to the ready list).
func (l *eventLoop) readFrom(s *loopSock) {
	c := s.c
	if s.done || !s.readable {
		return
	}
	fromClient := s.side == clientSide
	dst := s.peerSock()
	for range readBudget {
		if dst.hasPending() {
			return // readable stays set: the peer's flush resumes this read
		}
		if c.ending.killed.Load() != nil {
			l.stop(s, net.ErrClosed)
			return
		}
		n, err := rawRead(s.fd, l.buf[headroom:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			s.readable = false
			return
		case err != nil:
			l.stop(s, os.NewSyscallError("read", err))
			return
		case n == 0:
			l.stop(s, io.EOF)
			return
		}
		var werr error
		if fromClient {
			werr = c.relayFromClient(l.buf, n)
		} else {
			werr = c.relayFromUpstream(l.buf, n)
		}
		if werr != nil {
			// The destination failed: as in pumpLoop, both sides close.
			s.done = true
			c.kill(c.direction(fromClient).dstGone)
			c.pumpStopped()
			return
		}
		if n < relayBufSize && !s.ended {
			// A short read emptied the socket, and new data raises a new
			// edge: no read to EAGAIN. Not once the FIN was reported: its
			// edge is spent, so the loop reads on to the 0 (nginx's
			// ngx_unix_recv does the same).
			s.readable = false
			return
		}
	}
	l.ready = append(l.ready, slotRef{s.slot, s.gen})
}

// writable flushes s; once drained, the source it was waiting for reads
// again at once (its data will not raise another edge).
func (l *eventLoop) writable(s *loopSock) {
	drained, err := s.flush()
	if err != nil {
		if !s.peerSock().done {
			// Nothing more can reach s: its source's direction fails as a
			// relay write would.
			src := s.peerSock()
			src.done = true
			s.c.kill(s.c.direction(src.side == clientSide).dstGone)
			s.c.pumpStopped()
		}
		return
	}
	if drained {
		l.readFrom(s.peerSock())
	}
}

// stop ends the direction that reads s, as pumpLoop ends on a read error
// or the end of the stream: err is io.EOF for the peer's clean end.
func (l *eventLoop) stop(s *loopSock, err error) {
	if s.done {
		return
	}
	s.done = true
	d := s.c.direction(s.side == clientSide)
	s.c.sourceEnded(&d, err)
	s.c.pumpStopped()
}

// rawRead and rawWrite are read(2) and write(2) without the scheduler's
// system-call bookkeeping: on a non-blocking socket they never block, so
// the loop keeps its P (as the runtime's own netpoll does for epoll_wait
// with a zero timeout).
func rawRead(fd int32, b []byte) (int, error) {
	r, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func rawWrite(fd int32, b []byte) (int, error) {
	r, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// rawEpollWait takes the ready events without blocking (epoll_pwait with
// no timeout and no signal mask, which every Linux architecture has).
func rawEpollWait(epfd int, events []unix.EpollEvent) int {
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(unsafe.SliceData(events))), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0
	}
	return int(r)
}
