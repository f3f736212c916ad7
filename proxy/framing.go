package proxy

import (
	"bytes"
	"sync"
	"unicode/utf8"

	"github.com/tidwall/gjson"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
	"github.com/presence-sidecar/presence-sidecar/proxy/wsframe"
)

// Framing is how a chat stack wraps its messages inside WebSocket messages
// (PRESET; README, "Presets"). A framing other than FramingJSON decodes the
// inspected prefix of each message into the JSON documents that ids and
// rules look at; the bytes on the wire never change. A message the framing
// cannot decode is counted (Stats.Unparsed) and ignored: no id, no rule, no
// activity, and nothing at all for the client, whose bytes pass as ever.
//
// Only the WebSocket transport is decoded. The HTTP fallbacks (Engine.IO
// long polling, SockJS's XHR and EventSource transports, Centrifuge's HTTP
// streaming and SSE) pass untouched: their requests carry the framework's
// transport session, not the chat's, so there is no session to give them to.
type Framing uint8

const (
	// FramingJSON: each text message is one JSON document (the seed
	// platform's socket, PRESET=seed).
	FramingJSON Framing = iota
	// FramingSocketIO: Engine.IO v4 packets carrying Socket.IO v5 packets
	// (Socket.IO 3 and 4). Each message becomes
	// {"type":…,"nsp":…,"id":…,"attachments":…,"data":…}, the fields of
	// Socket.IO's own packet object: type is the Socket.IO packet type
	// (connect, disconnect, event, ack, connect_error, binary_event,
	// binary_ack) or, for a packet that is not a message, the Engine.IO one
	// (open, close, ping, pong, upgrade, noop); a binary message (an
	// attachment) is {"type":"attachment"}.
	FramingSocketIO
	// FramingSockJS: the SockJS protocol. Each message string of a frame
	// (a["…","…"], m"…", or a client's ["…"]) becomes one document, the
	// string's content; o, h and c frames carry no message.
	FramingSockJS
	// FramingCentrifuge: Centrifuge's JSON protocol, one command, reply or
	// push per line. Each line becomes one document, the line with a
	// leading "type" field naming its kind: the command or push (connect,
	// subscribe, publish, rpc, send, push, …), "error" or "reply" for a
	// reply without one, and "ping" (from the server) or "pong" (from the
	// client) for an empty {}.
	FramingCentrifuge
)

// String names the framing as PRESET does.
func (f Framing) String() string {
	switch f {
	case FramingSocketIO:
		return "socketio"
	case FramingSockJS:
		return "sockjs"
	case FramingCentrifuge:
		return "centrifuge"
	}
	return "json"
}

// observe reports one message of direction dir to the observer, as the
// documents its framing holds, and looks for the ids in the client's first
// ones. It runs on the direction's own pump goroutine.
func (c *wsConn) observe(dir event.Direction, m wsframe.Message) {
	msg := toEvent(m)
	f := c.p.o.Framing
	if f == FramingJSON || msg.Prefix == nil {
		// Nothing decoded: the message as it is (no prefix: nobody looks).
		if dir == event.FromClient && c.idTries < idFrames && m.Opcode == wsframe.OpText && msg.Prefix != nil {
			c.identify(msg.Prefix)
		}
		c.p.obs.Message(c.id, dir, msg)
		return
	}
	d := decoders.Get().(*decoder)
	defer decoders.Put(d)
	ok := d.decode(f, dir, msg.Text, msg.Prefix, msg.Truncated, func(doc []byte, truncated bool) {
		if dir == event.FromClient && c.idTries < idFrames {
			c.identify(doc)
		}
		c.p.obs.Message(c.id, dir, event.Message{Text: true, Size: msg.Size, Prefix: doc, Truncated: truncated})
	})
	if !ok {
		c.p.stats.Unparsed[dir].Add(1)
	}
}

var decoders = sync.Pool{New: func() any { return &decoder{buf: make([]byte, 0, 512)} }}

// decoder holds the scratch space one message is decoded into.
type decoder struct{ buf []byte }

// decode calls yield with each document of one message's prefix (valid only
// during the call; truncated: the document is cut short, as the prefix is)
// and reports whether the message decoded as the framing says. Documents
// found before a fault are yielded.
func (d *decoder) decode(f Framing, dir event.Direction, text bool, p []byte, truncated bool, yield func(doc []byte, truncated bool)) bool {
	switch f {
	case FramingSocketIO:
		return d.socketIO(text, p, truncated, yield)
	case FramingSockJS:
		return text && d.sockJS(dir, p, truncated, yield)
	case FramingCentrifuge:
		return text && d.centrifuge(dir, p, truncated, yield)
	}
	yield(p, truncated)
	return true
}

var engineIOTypes = [...]string{"open", "close", "ping", "pong", "message", "upgrade", "noop"}
var socketIOTypes = [...]string{"connect", "disconnect", "event", "ack", "connect_error", "binary_event", "binary_ack"}

// socketIO decodes an Engine.IO v4 packet over WebSocket: one packet per
// message, its type a digit; a message packet (4) holds a Socket.IO packet
// <type>[<attachments>-][<nsp>,][<id>][<JSON>] (the Socket.IO protocol,
// github.com/socketio/socket.io-protocol, v5).
func (d *decoder) socketIO(text bool, p []byte, truncated bool, yield func([]byte, bool)) bool {
	b := d.buf[:0]
	if !text {
		yield(append(b, `{"type":"attachment"}`...), false)
		return true
	}
	if len(p) == 0 || p[0] < '0' || p[0] > '6' {
		return false
	}
	if p[0] != '4' {
		b = append(append(append(b, `{"type":"`...), engineIOTypes[p[0]-'0']...), '"')
		rest := p[1:]
		switch {
		case len(rest) == 0:
		case p[0] == '0': // open: the handshake object
			if !jsonOK(rest, truncated) {
				return false
			}
			b = append(append(b, `,"data":`...), rest...)
		default: // "2probe" and the like
			b = appendJSONString(append(b, `,"data":`...), rest)
		}
		d.buf = b
		yield(closeDoc(b, truncated && p[0] == '0'), truncated)
		return true
	}
	p = p[1:]
	if len(p) == 0 || p[0] < '0' || p[0] > '6' {
		return false
	}
	kind := p[0] - '0'
	p = p[1:]
	b = append(append(append(b, `{"type":"`...), socketIOTypes[kind]...), '"')
	if kind == 5 || kind == 6 { // binary: the count of attachments, then '-'
		n, rest := digits(p)
		if len(n) == 0 || len(rest) == 0 || rest[0] != '-' {
			return false
		}
		b = append(append(b, `,"attachments":`...), jsonInt(n)...)
		p = rest[1:]
	}
	nsp := []byte("/")
	if len(p) > 0 && p[0] == '/' {
		// Up to a comma or the end, as Socket.IO's own decoder reads it.
		if i := bytes.IndexByte(p, ','); i >= 0 {
			nsp, p = p[:i], p[i+1:]
		} else {
			nsp, p = p, nil
		}
	}
	b = appendJSONString(append(b, `,"nsp":`...), nsp)
	if id, rest := digits(p); len(id) > 0 {
		b = append(append(b, `,"id":`...), jsonInt(id)...)
		p = rest
	}
	if len(p) > 0 {
		if !jsonOK(p, truncated) {
			return false
		}
		// The data of an event or an ack is an array; of a connect, an object.
		if (kind == 2 || kind == 3 || kind == 5 || kind == 6) && p[0] != '[' {
			return false
		}
		b = append(append(b, `,"data":`...), p...)
	}
	d.buf = b
	yield(closeDoc(b, truncated && len(p) > 0), truncated)
	return true
}

// sockJS decodes a SockJS frame (the SockJS protocol, sockjs-protocol 0.3):
// from the server o (open), h (heartbeat), c[code,"reason"] (close),
// a["…",…] (messages) or m"…" (one message); from the client a JSON array
// of strings, or one string.
func (d *decoder) sockJS(dir event.Direction, p []byte, truncated bool, yield func([]byte, bool)) bool {
	if dir == event.FromServer {
		if len(p) == 0 {
			return false
		}
		switch p[0] {
		case 'o', 'h':
			return len(p) == 1
		case 'c':
			return true
		case 'a', 'm':
			p = p[1:]
		default:
			return false
		}
	}
	p = trimSpace(p)
	if len(p) == 0 {
		return truncated
	}
	if p[0] == '"' {
		rest, ok := d.sockJSString(p, truncated, yield)
		return ok && len(trimSpace(rest)) == 0
	}
	if p[0] != '[' {
		return false
	}
	p = trimSpace(p[1:])
	if len(p) > 0 && p[0] == ']' {
		return len(trimSpace(p[1:])) == 0
	}
	for len(p) > 0 {
		rest, ok := d.sockJSString(p, truncated, yield)
		if !ok {
			return false
		}
		p = trimSpace(rest)
		switch {
		case len(p) == 0:
			return truncated
		case p[0] == ',':
			p = trimSpace(p[1:])
		case p[0] == ']':
			return len(trimSpace(p[1:])) == 0
		default:
			return false
		}
	}
	return truncated
}

// sockJSString yields the content of the JSON string p starts with and
// returns what follows it. A string the prefix cuts short is yielded as far
// as it goes.
func (d *decoder) sockJSString(p []byte, truncated bool, yield func([]byte, bool)) (rest []byte, ok bool) {
	if len(p) == 0 || p[0] != '"' {
		return nil, false
	}
	b, n, done, ok := unquote(d.buf[:0], p[1:])
	d.buf = b
	if !ok || (!done && !truncated) {
		return nil, false
	}
	yield(b, !done)
	return p[1+n:], true
}

// centrifuge decodes Centrifuge's JSON protocol (client protocol v2): one
// JSON object per line; an empty object is the server's ping and the
// client's pong.
func (d *decoder) centrifuge(dir event.Direction, p []byte, truncated bool, yield func([]byte, bool)) bool {
	ok := true
	for len(p) > 0 {
		line := p
		last := true
		if i := bytes.IndexByte(p, '\n'); i >= 0 {
			line, p, last = p[:i], p[i+1:], false
		} else {
			p = nil
		}
		cut := truncated && last
		line = trimSpace(line)
		if len(line) == 0 {
			continue
		}
		if line[0] != '{' || !jsonOK(line, cut) {
			ok = false
			continue
		}
		kind := centrifugeKind(line)
		body := trimSpace(line[1:])
		switch {
		case len(kind) > 0:
		case len(body) > 0 && body[0] == '}' && dir == event.FromServer:
			kind = []byte("ping")
		case len(body) > 0 && body[0] == '}':
			kind = []byte("pong")
		default:
			kind = []byte("reply")
		}
		b := appendJSONString(append(d.buf[:0], `{"type":`...), kind)
		if len(body) > 0 && body[0] != '}' {
			b = append(b, ',')
		}
		b = append(b, body...)
		d.buf = b
		yield(b, cut)
	}
	return ok
}

// centrifugeKind is a Command's or Reply's first key but "id" (the method:
// "connect", "push", ...), or nothing for a bare reply. The common shape,
// plain keys and a numeric id, is read in place; anything else by gjson,
// which copies the line.
func centrifugeKind(obj []byte) []byte {
	p := trimSpace(obj[1:])
	if len(p) > 0 && p[0] == '}' {
		return nil
	}
	for len(p) > 0 && p[0] == '"' {
		end := bytes.IndexByte(p[1:], '"') + 1
		if end == 0 || bytes.IndexByte(p[1:end], '\\') >= 0 {
			break
		}
		key := p[1:end]
		p = trimSpace(p[end+1:])
		if len(p) == 0 || p[0] != ':' {
			return nil
		}
		if string(key) != "id" {
			return key
		}
		p = trimSpace(p[1:])
		i := 0
		for i < len(p) && (p[i] >= '0' && p[i] <= '9' || p[i] == '-' || p[i] == '.' || p[i] == 'e' || p[i] == 'E' || p[i] == '+') {
			i++
		}
		if i == 0 {
			break
		}
		p = trimSpace(p[i:])
		if len(p) == 0 || p[0] != ',' {
			return nil
		}
		p = trimSpace(p[1:])
	}
	var kind []byte
	gjson.ParseBytes(obj).ForEach(func(k, _ gjson.Result) bool {
		if k.Str != "id" {
			kind = []byte(k.Str)
			return false
		}
		return true
	})
	return kind
}

// jsonOK: p is valid JSON, or, cut short by the inspection bound, may be.
func jsonOK(p []byte, truncated bool) bool { return truncated || gjson.ValidBytes(p) }

// closeDoc ends a document that was built open (its last field the raw
// payload), unless that payload is cut short: gjson reads an unfinished
// document as far as it goes.
func closeDoc(b []byte, cut bool) []byte {
	if cut {
		return b
	}
	return append(b, '}')
}

func digits(p []byte) (n, rest []byte) {
	i := 0
	for i < len(p) && p[i] >= '0' && p[i] <= '9' {
		i++
	}
	return p[:i], p[i:]
}

// jsonInt writes digits as a JSON number: without leading zeros, which
// Socket.IO's decoder (Number()) ignores and JSON forbids.
func jsonInt(n []byte) []byte {
	for len(n) > 1 && n[0] == '0' {
		n = n[1:]
	}
	return n
}

func trimSpace(p []byte) []byte {
	for len(p) > 0 && (p[0] == ' ' || p[0] == '\t' || p[0] == '\n' || p[0] == '\r') {
		p = p[1:]
	}
	return p
}

// appendJSONString appends s as a JSON string (RFC 8259 section 7).
func appendJSONString(b, s []byte) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// unquote appends the content of a JSON string whose opening quote is
// already consumed (RFC 8259 section 7). n is how many bytes of p it read
// (the closing quote included when done); done: the closing quote came. A
// string p ends inside, escape and all, is decoded as far as it goes.
func unquote(b, p []byte) (out []byte, n int, done, ok bool) {
	for i := 0; i < len(p); {
		c := p[i]
		switch {
		case c == '"':
			return b, i + 1, true, true
		case c < 0x20:
			return b, i, false, false
		case c != '\\':
			b = append(b, c)
			i++
			continue
		}
		if i+1 >= len(p) {
			return b, i, false, true
		}
		switch e := p[i+1]; e {
		case '"', '\\', '/':
			b = append(b, e)
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			r, w, full, good := hexRune(p[i+2:])
			if !good {
				return b, i, false, false
			}
			if !full {
				return b, i, false, true
			}
			b = utf8.AppendRune(b, r)
			i += 2 + w
			continue
		default:
			return b, i, false, false
		}
		i += 2
	}
	return b, len(p), false, true
}

// hexRune reads the XXXX of a \uXXXX escape, with the low half that follows
// a high surrogate. full is false when p ends first.
func hexRune(p []byte) (r rune, width int, full, ok bool) {
	r, full, ok = hex4(p)
	if !full || !ok {
		return 0, 0, full, ok
	}
	if r < 0xd800 || r > 0xdbff {
		return r, 4, true, true
	}
	if len(p) < 6 {
		return 0, 0, false, true
	}
	if p[4] != '\\' || p[5] != 'u' {
		return utf8.RuneError, 4, true, true
	}
	lo, full, ok := hex4(p[6:])
	if !full || !ok {
		return 0, 0, full, ok
	}
	if lo < 0xdc00 || lo > 0xdfff {
		return utf8.RuneError, 4, true, true
	}
	return 0x10000 + (r-0xd800)<<10 + (lo - 0xdc00), 10, true, true
}

func hex4(p []byte) (r rune, full, ok bool) {
	for i := range 4 {
		if i >= len(p) {
			return 0, false, true
		}
		c := p[i]
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, true, false
		}
	}
	return r, true, true
}
