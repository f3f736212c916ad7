package proxy

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

const (
	// relayBufSize is what one read may take. Buffers are borrowed only
	// once a socket is readable, so idle connections hold none.
	relayBufSize = 32 << 10
	// headroom in front of each buffer lets up to maxHeld bytes held back
	// from the previous chunk be prepended without a copy of the chunk.
	headroom = 16
)

var relayBufs = sync.Pool{New: func() any { b := make([]byte, headroom+relayBufSize); return &b }}

// socketReader reads a socket into pooled buffers, borrowing one only when
// the socket has data: an idle connection holds no read buffer
// (docs/ARCHITECTURE.md, "Memory per connection"). It reads the descriptor
// itself through RawConn, so a chunk costs one read(2): the buffer goes back
// to the pool on EAGAIN, and Go's poller waits for readability. Sockets
// without a descriptor (TLS) fall back to a plain Read, which holds its
// buffer while it waits.
type socketReader struct {
	conn   net.Conn
	rc     syscall.RawConn // nil: plain Read
	bp     *[]byte         // the borrowed buffer, between readFD and read
	n      int             // readFD's result for read
	err    error
	readFn func(fd uintptr) bool // r.readFD as the RawConn callback, made once so that read does not allocate
}

func newSocketReader(conn net.Conn) *socketReader {
	r := &socketReader{conn: conn}
	if sc, ok := conn.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			r.rc = rc
			r.readFn = r.readFD
		}
	}
	return r
}

// read returns a borrowed buffer whose bytes [headroom, headroom+n) were
// read, or an error (io.EOF at the end). The caller puts the buffer back.
func (r *socketReader) read() (*[]byte, int, error) {
	if r.rc == nil {
		bp := relayBufs.Get().(*[]byte)
		n, err := r.conn.Read((*bp)[headroom:])
		return bp, n, err
	}
	r.n, r.err = 0, nil
	if err := r.rc.Read(r.readFn); err != nil {
		return r.takeBuffer(), 0, err // a deadline or a closed socket
	}
	return r.takeBuffer(), r.n, r.err
}

// takeBuffer hands the borrowed buffer (nil if none) to the caller.
func (r *socketReader) takeBuffer() *[]byte {
	bp := r.bp
	r.bp = nil
	return bp
}

// readFD is the RawConn callback: true when the read is done, false to wait
// for readability.
func (r *socketReader) readFD(fd uintptr) bool {
	if r.bp == nil {
		r.bp = relayBufs.Get().(*[]byte)
	}
	for {
		n, err := syscall.Read(int(fd), (*r.bp)[headroom:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			relayBufs.Put(r.bp) // nothing to read: do not hold a buffer while waiting
			r.bp = nil
			return false
		case err != nil:
			r.err = os.NewSyscallError("read", err)
		case n == 0:
			r.err = io.EOF
		default:
			r.n = n
		}
		return true
	}
}
