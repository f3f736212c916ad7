package proxy

// Tests of framing.go: each framing's decoder turns a message's inspected
// prefix into the documents ids and rules look at.
//
//	go test -run '^$' -fuzz=FuzzFramingDecode -fuzztime=60s ./proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/tidwall/gjson"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
)

const (
	fromC = event.FromClient
	fromS = event.FromServer
)

// gotDoc is one yielded document, copied: a doc is valid only during yield.
type gotDoc struct {
	doc string
	cut bool
}

func (g gotDoc) String() string {
	if g.cut {
		return strconv.Quote(g.doc) + "(cut)"
	}
	return strconv.Quote(g.doc)
}

func decodeDocs(d *decoder, f Framing, dir event.Direction, text bool, p []byte, truncated bool) ([]gotDoc, bool) {
	var got []gotDoc
	ok := d.decode(f, dir, text, p, truncated, func(doc []byte, cut bool) {
		got = append(got, gotDoc{string(doc), cut})
	})
	return got, ok
}

type framingCase struct {
	name   string
	f      Framing
	dir    event.Direction
	binary bool // a binary message (text=false)
	in     string
	trunc  bool // the prefix is cut short
	ok     bool
	docs   []string // exactly, in order
	cut    []bool   // each doc's truncated flag; nil: every one is trunc
	get    []string // "path=value" read by gjson from the last doc
}

var framingCases = []framingCase{
	// Engine.IO packets that are not messages.
	{name: "eio open", f: FramingSocketIO, dir: fromS, in: `0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`, ok: true,
		docs: []string{`{"type":"open","data":{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}}`},
		get:  []string{"type=open", "data.sid=lv_VI97HAXpY6yYWAAAC", "data.pingInterval=25000"}},
	{name: "eio open bare", f: FramingSocketIO, dir: fromS, in: `0`, ok: true, docs: []string{`{"type":"open"}`}},
	{name: "eio open bad json", f: FramingSocketIO, dir: fromS, in: `0{"sid":`, ok: false},
	{name: "eio open cut", f: FramingSocketIO, dir: fromS, in: `0{"sid":"abc","upgr`, trunc: true, ok: true,
		docs: []string{`{"type":"open","data":{"sid":"abc","upgr`}, get: []string{"type=open", "data.sid=abc"}},
	{name: "eio close", f: FramingSocketIO, dir: fromC, in: `1`, ok: true, docs: []string{`{"type":"close"}`}},
	{name: "eio ping", f: FramingSocketIO, dir: fromS, in: `2`, ok: true, docs: []string{`{"type":"ping"}`}},
	{name: "eio pong", f: FramingSocketIO, dir: fromC, in: `3`, ok: true, docs: []string{`{"type":"pong"}`}},
	{name: "eio ping probe", f: FramingSocketIO, dir: fromC, in: `2probe`, ok: true, docs: []string{`{"type":"ping","data":"probe"}`}, get: []string{"data=probe"}},
	{name: "eio pong probe", f: FramingSocketIO, dir: fromS, in: `3probe`, ok: true, docs: []string{`{"type":"pong","data":"probe"}`}},
	{name: "eio ping odd payload escaped", f: FramingSocketIO, dir: fromC, in: "2a\"\\\x01", ok: true, docs: []string{`{"type":"ping","data":"a\"\\\u0001"}`}, get: []string{"data=a\"\\\x01"}},
	{name: "eio ping cut", f: FramingSocketIO, dir: fromC, in: `2pro`, trunc: true, ok: true, docs: []string{`{"type":"ping","data":"pro"}`}},
	{name: "eio upgrade", f: FramingSocketIO, dir: fromC, in: `5`, ok: true, docs: []string{`{"type":"upgrade"}`}},
	{name: "eio noop", f: FramingSocketIO, dir: fromS, in: `6`, ok: true, docs: []string{`{"type":"noop"}`}},

	// Socket.IO packets in Engine.IO message packets.
	{name: "sio connect", f: FramingSocketIO, dir: fromC, in: `40`, ok: true, docs: []string{`{"type":"connect","nsp":"/"}`}, get: []string{"nsp=/"}},
	{name: "sio connect auth", f: FramingSocketIO, dir: fromC, in: `40{"token":1}`, ok: true, docs: []string{`{"type":"connect","nsp":"/","data":{"token":1}}`}, get: []string{"data.token=1"}},
	{name: "sio connect nsp auth", f: FramingSocketIO, dir: fromC, in: `40/admin,{"token":"t"}`, ok: true, docs: []string{`{"type":"connect","nsp":"/admin","data":{"token":"t"}}`}, get: []string{"nsp=/admin", "data.token=t"}},
	{name: "sio connect nsp only", f: FramingSocketIO, dir: fromC, in: `40/admin`, ok: true, docs: []string{`{"type":"connect","nsp":"/admin"}`}},
	{name: "sio connect nsp comma", f: FramingSocketIO, dir: fromC, in: `40/admin,`, ok: true, docs: []string{`{"type":"connect","nsp":"/admin"}`}},
	{name: "sio connect reply", f: FramingSocketIO, dir: fromS, in: `40{"sid":"wZX3oN0bSVIhsaknAAAI"}`, ok: true, docs: []string{`{"type":"connect","nsp":"/","data":{"sid":"wZX3oN0bSVIhsaknAAAI"}}`}},
	{name: "sio disconnect", f: FramingSocketIO, dir: fromC, in: `41`, ok: true, docs: []string{`{"type":"disconnect","nsp":"/"}`}},
	{name: "sio disconnect nsp", f: FramingSocketIO, dir: fromC, in: `41/admin,`, ok: true, docs: []string{`{"type":"disconnect","nsp":"/admin"}`}},
	{name: "sio event", f: FramingSocketIO, dir: fromC, in: `42["link",{"sessionId":"s"}]`, ok: true,
		docs: []string{`{"type":"event","nsp":"/","data":["link",{"sessionId":"s"}]}`}, get: []string{"type=event", "data.0=link", "data.1.sessionId=s"}},
	{name: "sio event ack id", f: FramingSocketIO, dir: fromC, in: `4213["x"]`, ok: true, docs: []string{`{"type":"event","nsp":"/","id":13,"data":["x"]}`}, get: []string{"id=13", "data.0=x"}},
	{name: "sio event id no data", f: FramingSocketIO, dir: fromC, in: `4213`, ok: true, docs: []string{`{"type":"event","nsp":"/","id":13}`}},
	{name: "sio event nsp", f: FramingSocketIO, dir: fromS, in: `42/chat,["m",1]`, ok: true, docs: []string{`{"type":"event","nsp":"/chat","data":["m",1]}`}, get: []string{"nsp=/chat", "data.1=1"}},
	{name: "sio event nsp id", f: FramingSocketIO, dir: fromC, in: `42/chat,7["m"]`, ok: true, docs: []string{`{"type":"event","nsp":"/chat","id":7,"data":["m"]}`}},
	{name: "sio event nsp escaped", f: FramingSocketIO, dir: fromC, in: `42/a"b,["m"]`, ok: true, docs: []string{`{"type":"event","nsp":"/a\"b","data":["m"]}`}, get: []string{`nsp=/a"b`}},
	{name: "sio event trailing space", f: FramingSocketIO, dir: fromC, in: `42["m"] `, ok: true, docs: []string{`{"type":"event","nsp":"/","data":["m"] }`}},
	{name: "sio ack", f: FramingSocketIO, dir: fromS, in: `431["ok",{"n":2}]`, ok: true, docs: []string{`{"type":"ack","nsp":"/","id":1,"data":["ok",{"n":2}]}`}, get: []string{"id=1", "data.1.n=2"}},
	{name: "sio connect_error", f: FramingSocketIO, dir: fromS, in: `44{"message":"x"}`, ok: true, docs: []string{`{"type":"connect_error","nsp":"/","data":{"message":"x"}}`}, get: []string{"data.message=x"}},
	{name: "sio binary event", f: FramingSocketIO, dir: fromC, in: `451-["up",{"_placeholder":true,"num":0}]`, ok: true,
		docs: []string{`{"type":"binary_event","attachments":1,"nsp":"/","data":["up",{"_placeholder":true,"num":0}]}`}, get: []string{"attachments=1", "data.1._placeholder=true"}},
	{name: "sio binary ack nsp id", f: FramingSocketIO, dir: fromS, in: `4612-/admin,5[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`, ok: true,
		docs: []string{`{"type":"binary_ack","attachments":12,"nsp":"/admin","id":5,"data":[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]}`}},
	{name: "attachment", f: FramingSocketIO, dir: fromC, binary: true, in: "\x00\x01\xff", ok: true, docs: []string{`{"type":"attachment"}`}},
	{name: "attachment cut", f: FramingSocketIO, dir: fromS, binary: true, in: "\x00\x01", trunc: true, ok: true, docs: []string{`{"type":"attachment"}`}, cut: []bool{false}},
	{name: "sio empty", f: FramingSocketIO, dir: fromC, in: ``, ok: false},
	{name: "sio bad eio type", f: FramingSocketIO, dir: fromC, in: `9`, ok: false},
	{name: "sio bad eio type letter", f: FramingSocketIO, dir: fromC, in: `x42["m"]`, ok: false},
	{name: "sio message without packet", f: FramingSocketIO, dir: fromC, in: `4`, ok: false},
	{name: "sio bad sio type", f: FramingSocketIO, dir: fromC, in: `47`, ok: false},
	{name: "sio event object", f: FramingSocketIO, dir: fromC, in: `42{"not":"array"}`, ok: false},
	{name: "sio ack string", f: FramingSocketIO, dir: fromC, in: `431"x"`, ok: false},
	{name: "sio event broken", f: FramingSocketIO, dir: fromC, in: `42[broken`, ok: false},
	{name: "sio disconnect junk", f: FramingSocketIO, dir: fromC, in: `41junk`, ok: false},
	{name: "sio binary no dash", f: FramingSocketIO, dir: fromC, in: `451["x"]`, ok: false},
	{name: "sio binary no count", f: FramingSocketIO, dir: fromC, in: `45-["x"]`, ok: false},
	{name: "sio binary count only", f: FramingSocketIO, dir: fromC, in: `451`, ok: false},
	{name: "sio event cut mid json", f: FramingSocketIO, dir: fromC, in: `42["link",{"sessionId":"s","text":"a long messa`, trunc: true, ok: true,
		docs: []string{`{"type":"event","nsp":"/","data":["link",{"sessionId":"s","text":"a long messa`}, get: []string{"type=event", "data.0=link", "data.1.sessionId=s"}},
	{name: "sio event cut after id", f: FramingSocketIO, dir: fromC, in: `42/chat,12`, trunc: true, ok: true, docs: []string{`{"type":"event","nsp":"/chat","id":12}`}},
	{name: "sio event cut in nsp", f: FramingSocketIO, dir: fromC, in: `42/ch`, trunc: true, ok: true, docs: []string{`{"type":"event","nsp":"/ch"}`}},
	{name: "sio event cut object", f: FramingSocketIO, dir: fromC, in: `42{"a":`, trunc: true, ok: false},

	// SockJS from the server.
	{name: "sockjs open", f: FramingSockJS, dir: fromS, in: `o`, ok: true},
	{name: "sockjs heartbeat", f: FramingSockJS, dir: fromS, in: `h`, ok: true},
	{name: "sockjs close", f: FramingSockJS, dir: fromS, in: `c[3000,"Go away!"]`, ok: true},
	{name: "sockjs array", f: FramingSockJS, dir: fromS, in: `a["{\"action\":\"link\"}","second"]`, ok: true, docs: []string{`{"action":"link"}`, `second`}},
	{name: "sockjs array spaced", f: FramingSockJS, dir: fromS, in: `a[ "x" , "y" ] `, ok: true, docs: []string{`x`, `y`}},
	{name: "sockjs array empty", f: FramingSockJS, dir: fromS, in: `a[]`, ok: true},
	{name: "sockjs message", f: FramingSockJS, dir: fromS, in: `m"x"`, ok: true, docs: []string{`x`}},
	{name: "sockjs empty string", f: FramingSockJS, dir: fromS, in: `a[""]`, ok: true, docs: []string{``}},
	{name: "sockjs empty", f: FramingSockJS, dir: fromS, in: ``, ok: false},
	{name: "sockjs bad frame", f: FramingSockJS, dir: fromS, in: `x`, ok: false},
	{name: "sockjs open junk", f: FramingSockJS, dir: fromS, in: `oo`, ok: false},
	{name: "sockjs a alone", f: FramingSockJS, dir: fromS, in: `a`, ok: false},
	{name: "sockjs array number", f: FramingSockJS, dir: fromS, in: `a[1]`, ok: false},
	{name: "sockjs array unterminated", f: FramingSockJS, dir: fromS, in: `a["unterminated`, ok: false},
	{name: "sockjs array unclosed", f: FramingSockJS, dir: fromS, in: `a["x"`, ok: false, docs: []string{`x`}},
	{name: "sockjs array trailing comma", f: FramingSockJS, dir: fromS, in: `a["x",]`, ok: false, docs: []string{`x`}},
	{name: "sockjs array no comma", f: FramingSockJS, dir: fromS, in: `a["x" "y"]`, ok: false, docs: []string{`x`}},
	{name: "sockjs array junk after", f: FramingSockJS, dir: fromS, in: `a["x"]]`, ok: false, docs: []string{`x`}},
	{name: "sockjs raw control char", f: FramingSockJS, dir: fromS, in: "a[\"a\x01\"]", ok: false},
	{name: "sockjs bad escape", f: FramingSockJS, dir: fromS, in: `a["a\x41"]`, ok: false},
	{name: "sockjs bad hex", f: FramingSockJS, dir: fromS, in: `a["\u00zz"]`, ok: false},

	// SockJS from the client.
	{name: "sockjs client array", f: FramingSockJS, dir: fromC, in: `["{\"a\":1}"]`, ok: true, docs: []string{`{"a":1}`}},
	{name: "sockjs client string", f: FramingSockJS, dir: fromC, in: `"{\"a\":1}"`, ok: true, docs: []string{`{"a":1}`}},
	{name: "sockjs client empty array", f: FramingSockJS, dir: fromC, in: `[]`, ok: true},
	{name: "sockjs client frame letter", f: FramingSockJS, dir: fromC, in: `a["x"]`, ok: false},
	{name: "sockjs client null", f: FramingSockJS, dir: fromC, in: `null`, ok: false},
	{name: "sockjs client binary", f: FramingSockJS, dir: fromC, binary: true, in: `["x"]`, ok: false},

	// SockJS string escapes (RFC 8259 section 7).
	{name: "sockjs escape newline", f: FramingSockJS, dir: fromS, in: `a["a\nb"]`, ok: true, docs: []string{"a\nb"}},
	{name: "sockjs escape quote", f: FramingSockJS, dir: fromS, in: `a["a\"b"]`, ok: true, docs: []string{`a"b`}},
	{name: "sockjs escape backslash", f: FramingSockJS, dir: fromS, in: `a["a\\b"]`, ok: true, docs: []string{`a\b`}},
	{name: "sockjs escape slash", f: FramingSockJS, dir: fromS, in: `a["a\/b"]`, ok: true, docs: []string{`a/b`}},
	{name: "sockjs escape controls", f: FramingSockJS, dir: fromS, in: `a["\b\f\r\t"]`, ok: true, docs: []string{"\b\f\r\t"}},
	{name: "sockjs escape u", f: FramingSockJS, dir: fromS, in: `a["caf\u00e9 \u00C9"]`, ok: true, docs: []string{"café É"}},
	{name: "sockjs escape pair", f: FramingSockJS, dir: fromS, in: `a["\ud83d\ude00!"]`, ok: true, docs: []string{"😀!"}},
	{name: "sockjs raw utf8", f: FramingSockJS, dir: fromS, in: `a["😀é"]`, ok: true, docs: []string{"😀é"}},
	{name: "sockjs lone high", f: FramingSockJS, dir: fromS, in: `a["\ud83dx"]`, ok: true, docs: []string{"\uFFFDx"}},
	{name: "sockjs lone high then u", f: FramingSockJS, dir: fromS, in: `a["\ud83d\u0041"]`, ok: true, docs: []string{"\uFFFDA"}},
	{name: "sockjs lone low", f: FramingSockJS, dir: fromS, in: `a["\ude00"]`, ok: true, docs: []string{"\uFFFD"}},

	// SockJS prefixes cut short: the string as far as it goes.
	{name: "sockjs cut in string", f: FramingSockJS, dir: fromS, in: `a["{\"sessionId\":\"s\",\"te`, trunc: true, ok: true, docs: []string{`{"sessionId":"s","te`}, get: []string{"sessionId=s"}},
	{name: "sockjs cut second string", f: FramingSockJS, dir: fromS, in: `a["one","tw`, trunc: true, ok: true, docs: []string{`one`, `tw`}, cut: []bool{false, true}},
	{name: "sockjs cut after string", f: FramingSockJS, dir: fromS, in: `a["one"`, trunc: true, ok: true, docs: []string{`one`}, cut: []bool{false}},
	{name: "sockjs cut after comma", f: FramingSockJS, dir: fromS, in: `a["one",`, trunc: true, ok: true, docs: []string{`one`}, cut: []bool{false}},
	{name: "sockjs cut after a", f: FramingSockJS, dir: fromS, in: `a`, trunc: true, ok: true},
	{name: "sockjs client cut", f: FramingSockJS, dir: fromC, in: `["{\"a\":`, trunc: true, ok: true, docs: []string{`{"a":`}},
	{name: "sockjs cut bad escape", f: FramingSockJS, dir: fromS, in: `a["ab\q`, trunc: true, ok: false},

	// Centrifuge JSON protocol.
	{name: "centrifuge connect", f: FramingCentrifuge, dir: fromC, in: `{"id":1,"connect":{"data":{"sessionId":"s"},"name":"js"}}`, ok: true,
		docs: []string{`{"type":"connect","id":1,"connect":{"data":{"sessionId":"s"},"name":"js"}}`}, get: []string{"type=connect", "id=1", "connect.data.sessionId=s"}},
	{name: "centrifuge batch", f: FramingCentrifuge, dir: fromC, in: "{\"id\":1,\"connect\":{}}\n{\"id\":2,\"subscribe\":{\"channel\":\"c\"}}\n{\"id\":3,\"publish\":{\"channel\":\"c\",\"data\":{}}}", ok: true,
		docs: []string{`{"type":"connect","id":1,"connect":{}}`, `{"type":"subscribe","id":2,"subscribe":{"channel":"c"}}`, `{"type":"publish","id":3,"publish":{"channel":"c","data":{}}}`}},
	{name: "centrifuge blank lines", f: FramingCentrifuge, dir: fromC, in: "\n{\"id\":4,\"rpc\":{}}\n\n  {\"id\":5,\"send\":{}}\n", ok: true,
		docs: []string{`{"type":"rpc","id":4,"rpc":{}}`, `{"type":"send","id":5,"send":{}}`}},
	{name: "centrifuge crlf", f: FramingCentrifuge, dir: fromC, in: "{\"id\":4,\"rpc\":{}}\r\n{}", ok: true, docs: []string{"{\"type\":\"rpc\",\"id\":4,\"rpc\":{}}\r", `{"type":"pong"}`}},
	{name: "centrifuge pong", f: FramingCentrifuge, dir: fromC, in: `{}`, ok: true, docs: []string{`{"type":"pong"}`}},
	{name: "centrifuge ping", f: FramingCentrifuge, dir: fromS, in: `{}`, ok: true, docs: []string{`{"type":"ping"}`}},
	{name: "centrifuge ping spaced", f: FramingCentrifuge, dir: fromS, in: `{ }`, ok: true, docs: []string{`{"type":"ping"}`}},
	{name: "centrifuge connect reply", f: FramingCentrifuge, dir: fromS, in: `{"id":1,"connect":{"client":"c1","version":"6.0.0","ping":25,"pong":true}}`, ok: true,
		docs: []string{`{"type":"connect","id":1,"connect":{"client":"c1","version":"6.0.0","ping":25,"pong":true}}`}, get: []string{"connect.client=c1"}},
	{name: "centrifuge error", f: FramingCentrifuge, dir: fromS, in: `{"id":2,"error":{"code":100,"message":"internal server error"}}`, ok: true,
		docs: []string{`{"type":"error","id":2,"error":{"code":100,"message":"internal server error"}}`}, get: []string{"type=error", "error.code=100"}},
	{name: "centrifuge push", f: FramingCentrifuge, dir: fromS, in: `{"push":{"channel":"c","pub":{"data":{"isTransfer":true}}}}`, ok: true,
		docs: []string{`{"type":"push","push":{"channel":"c","pub":{"data":{"isTransfer":true}}}}`}, get: []string{"type=push", "push.channel=c", "push.pub.data.isTransfer=true"}},
	{name: "centrifuge empty reply", f: FramingCentrifuge, dir: fromS, in: `{"id":3}`, ok: true, docs: []string{`{"type":"reply","id":3}`}, get: []string{"type=reply", "id=3"}},
	{name: "centrifuge key after id", f: FramingCentrifuge, dir: fromS, in: `{ "id":3, "rpc":{"data":1} }`, ok: true, docs: []string{`{"type":"rpc","id":3, "rpc":{"data":1} }`}},
	{name: "centrifuge bad line among good", f: FramingCentrifuge, dir: fromS, in: "{\"id\":1,\"rpc\":{}}\n{bad\n{\"id\":2,\"send\":{}}", ok: false,
		docs: []string{`{"type":"rpc","id":1,"rpc":{}}`, `{"type":"send","id":2,"send":{}}`}},
	{name: "centrifuge array line", f: FramingCentrifuge, dir: fromC, in: "[1,2]\n{}", ok: false, docs: []string{`{"type":"pong"}`}},
	{name: "centrifuge string line", f: FramingCentrifuge, dir: fromC, in: `"x"`, ok: false},
	{name: "centrifuge object then junk", f: FramingCentrifuge, dir: fromC, in: `{}x`, ok: false},
	{name: "centrifuge binary", f: FramingCentrifuge, dir: fromC, binary: true, in: `{}`, ok: false},
	{name: "centrifuge cut last line", f: FramingCentrifuge, dir: fromS, in: "{\"id\":1,\"connect\":{}}\n{\"push\":{\"channel\":\"c\",\"pub\":{\"data\":{\"isTransfer\":true,\"te", trunc: true, ok: true,
		docs: []string{`{"type":"connect","id":1,"connect":{}}`, `{"type":"push","push":{"channel":"c","pub":{"data":{"isTransfer":true,"te`}, cut: []bool{false, true},
		get: []string{"type=push", "push.channel=c", "push.pub.data.isTransfer=true"}},
	{name: "centrifuge cut after id", f: FramingCentrifuge, dir: fromC, in: `{"id":2`, trunc: true, ok: true, docs: []string{`{"type":"reply","id":2`}},
	{name: "centrifuge cut bad first line", f: FramingCentrifuge, dir: fromC, in: "{bad\n{\"id\":2", trunc: true, ok: false, docs: []string{`{"type":"reply","id":2`}},

	// JSON: the prefix as it is.
	{name: "json", f: FramingJSON, dir: fromC, in: `{"type":"link","sessionId":"s"}`, ok: true, docs: []string{`{"type":"link","sessionId":"s"}`}, get: []string{"sessionId=s"}},
	{name: "json not json", f: FramingJSON, dir: fromS, in: `not json`, ok: true, docs: []string{`not json`}},
	{name: "json cut", f: FramingJSON, dir: fromC, in: `{"sessionId":"s","x`, trunc: true, ok: true, docs: []string{`{"sessionId":"s","x`}, get: []string{"sessionId=s"}},
}

func TestFramingDecode(t *testing.T) {
	for _, c := range framingCases {
		t.Run(c.f.String()+"/"+c.name, func(t *testing.T) {
			got, ok := decodeDocs(&decoder{}, c.f, c.dir, !c.binary, []byte(c.in), c.trunc)
			if ok != c.ok {
				t.Errorf("decode(%q) ok = %v, want %v", c.in, ok, c.ok)
			}
			var docs []string
			for _, g := range got {
				docs = append(docs, g.doc)
			}
			if !slices.Equal(docs, c.docs) {
				t.Fatalf("decode(%q) docs\n got %q\nwant %q", c.in, docs, c.docs)
			}
			for i, g := range got {
				wantCut := c.trunc
				if c.cut != nil {
					wantCut = c.cut[i]
				}
				if g.cut != wantCut {
					t.Errorf("doc %d %q truncated = %v, want %v", i, g.doc, g.cut, wantCut)
				}
				// SockJS docs are the messages' text, JSON or not.
				if !g.cut && c.f != FramingSockJS && c.f != FramingJSON && !gjson.Valid(g.doc) {
					t.Errorf("doc %d %q is not valid JSON", i, g.doc)
				}
			}
			for _, kv := range c.get {
				path, want, _ := strings.Cut(kv, "=")
				r := gjson.Get(got[len(got)-1].doc, path)
				if !r.Exists() || r.String() != want {
					t.Errorf("gjson %s = %q (exists %v), want %q", path, r.String(), r.Exists(), want)
				}
			}
		})
	}
}

// TestFramingDecodeDirtyDecoder: a pooled decoder's old contents never show
// through in a later message's documents.
func TestFramingDecodeDirtyDecoder(t *testing.T) {
	for _, c := range framingCases {
		want, wantOK := decodeDocs(&decoder{}, c.f, c.dir, !c.binary, []byte(c.in), c.trunc)
		d := &decoder{buf: bytes.Repeat([]byte(`#"]}`), 256)}
		got, ok := decodeDocs(d, c.f, c.dir, !c.binary, []byte(c.in), c.trunc)
		if ok != wantOK || !slices.Equal(got, want) {
			t.Errorf("%s: with a used decoder got %v, %v; fresh %v, %v", c.name, got, ok, want, wantOK)
		}
	}
}

// TestFramingDecoderReuse: observe decodes into a pooled decoder's scratch
// space, so a doc is valid only during yield; whoever keeps it must copy it
// (as decodeDocs does). This pins that behaviour: the doc kept uncopied is
// overwritten by the next document, the copies are intact.
func TestFramingDecoderReuse(t *testing.T) {
	d := decoders.Get().(*decoder)
	defer decoders.Put(d)

	const first = `{"type":"event","nsp":"/","data":["link",{"sessionId":"first"}]}`
	var kept []byte
	var copied string
	d.decode(FramingSocketIO, fromC, true, []byte(`42["link",{"sessionId":"first"}]`), false, func(doc []byte, _ bool) {
		kept, copied = doc, string(doc)
	})
	var second string
	d.decode(FramingSocketIO, fromC, true, []byte(`42["note",{"sessionId":"other"}]`), false, func(doc []byte, _ bool) {
		second = string(doc)
	})
	if copied != first {
		t.Fatalf("first doc %q, want %q", copied, first)
	}
	if want := `{"type":"event","nsp":"/","data":["note",{"sessionId":"other"}]}`; second != want {
		t.Fatalf("second doc %q, want %q", second, want)
	}
	if string(kept) == first {
		t.Errorf("the uncopied first doc survived the second decode: the buffer is no longer reused; decode's comment (valid only during yield) and observe may be relaxed")
	}

	// Several documents of one message share the space too.
	var kepts [][]byte
	var copies []string
	d.decode(FramingSockJS, fromS, true, []byte(`a["first","second"]`), false, func(doc []byte, _ bool) {
		kepts, copies = append(kepts, doc), append(copies, string(doc))
	})
	if !slices.Equal(copies, []string{"first", "second"}) {
		t.Fatalf("docs %q", copies)
	}
	if string(kepts[0]) == "first" {
		t.Errorf("the uncopied first SockJS doc survived the second one")
	}
}

func TestFramingString(t *testing.T) {
	for f, want := range map[Framing]string{FramingJSON: "json", FramingSocketIO: "socketio", FramingSockJS: "sockjs", FramingCentrifuge: "centrifuge", 99: "json"} {
		if got := f.String(); got != want {
			t.Errorf("Framing(%d).String() = %q, want %q", f, got, want)
		}
	}
}

var (
	socketIOKinds = []string{"open", "close", "ping", "pong", "upgrade", "noop", "connect", "disconnect", "event", "ack", "connect_error", "binary_event", "binary_ack", "attachment"}
	framings      = []Framing{FramingJSON, FramingSocketIO, FramingSockJS, FramingCentrifuge}
)

// FuzzFramingDecode: whatever a peer sends, cut short or not, decode never
// panics, a used decoder decodes as a fresh one, a whole document is valid
// JSON, a cut one reads, and each framing yields what its protocol holds:
// SockJS the strings encoding/json reads, Centrifuge one document per
// object line.
func FuzzFramingDecode(f *testing.F) {
	for _, c := range framingCases {
		f.Add([]byte(c.in))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		for _, fr := range framings {
			for _, dir := range []event.Direction{fromC, fromS} {
				for _, trunc := range []bool{false, true} {
					for _, text := range []bool{true, false} {
						checkDecode(t, fr, dir, text, p, trunc)
					}
				}
			}
		}
	})
}

func checkDecode(t *testing.T, fr Framing, dir event.Direction, text bool, p []byte, trunc bool) {
	t.Helper()
	in := string(p) // decode must not write to the prefix
	got, ok := decodeDocs(&decoder{}, fr, dir, text, p, trunc)
	again, ok2 := decodeDocs(&decoder{buf: bytes.Repeat([]byte(`#"]}`), 64)}, fr, dir, text, p, trunc)
	where := func() string { return fmt.Sprintf("%s %s text=%v truncated=%v", fr, dir, text, trunc) }
	if string(p) != in {
		t.Fatalf("%s: decode changed its input %q to %q", where(), in, p)
	}
	if ok != ok2 || !slices.Equal(got, again) {
		t.Fatalf("%s: %q decodes to %v, %v fresh, %v, %v with a used decoder", where(), p, got, ok, again, ok2)
	}
	for _, g := range got {
		if g.cut && !trunc {
			t.Fatalf("%s: %q: doc %q cut short though the prefix is not", where(), p, g.doc)
		}
		// A cut document must read, as far as it goes.
		r := gjson.Parse(g.doc)
		r.ForEach(func(_, v gjson.Result) bool { _ = v.String(); return true })
		for _, path := range []string{"type", "data.0", "data.1.sessionId", "connect.data.sessionId", "push.pub.data.isTransfer", "sessionId"} {
			_ = gjson.Get(g.doc, path).String()
		}
		if fr == FramingJSON || fr == FramingSockJS {
			continue
		}
		if !g.cut && !gjson.Valid(g.doc) {
			t.Fatalf("%s: %q decodes to invalid JSON %q", where(), p, g.doc)
		}
		if typ := gjson.Get(g.doc, "type"); typ.Type != gjson.String || (fr == FramingSocketIO && !slices.Contains(socketIOKinds, typ.Str)) {
			t.Fatalf("%s: %q: doc %q has type %s", where(), p, g.doc, typ.Raw)
		}
	}
	switch fr {
	case FramingJSON:
		if !ok || len(got) != 1 || got[0].doc != string(p) || got[0].cut != trunc {
			t.Fatalf("%s: %q decodes to %v, %v", where(), p, got, ok)
		}
	case FramingSocketIO:
		if !text && (!ok || len(got) != 1 || got[0].doc != `{"type":"attachment"}`) {
			t.Fatalf("%s: binary %q decodes to %v, %v", where(), p, got, ok)
		}
		if ok != (len(got) == 1) || len(got) > 1 {
			t.Fatalf("%s: %q decodes to %v, %v: one packet, one doc", where(), p, got, ok)
		}
	case FramingSockJS:
		if !text && (ok || len(got) > 0) {
			t.Fatalf("%s: binary %q decodes to %v, %v", where(), p, got, ok)
		}
		if text && !trunc {
			checkSockJS(t, dir, p, got, ok)
		}
	case FramingCentrifuge:
		if !text && (ok || len(got) > 0) {
			t.Fatalf("%s: binary %q decodes to %v, %v", where(), p, got, ok)
		}
		if text && !trunc {
			checkCentrifuge(t, dir, p, got, ok)
		}
	}
}

// checkSockJS: a whole a, m or client frame of valid UTF-8 decodes iff
// encoding/json reads it as a string or an array of strings, to those
// strings.
func checkSockJS(t *testing.T, dir event.Direction, p []byte, got []gotDoc, ok bool) {
	t.Helper()
	body := p
	if dir == fromS {
		if len(p) == 0 || (p[0] != 'a' && p[0] != 'm') {
			return // o, h and c carry no message
		}
		body = p[1:]
	}
	if !utf8.Valid(body) {
		return // encoding/json would replace what decode keeps
	}
	var want []string
	valid := false
	switch lead := bytes.TrimLeft(body, " \t\r\n"); {
	case len(lead) > 0 && lead[0] == '"':
		var s string
		if json.Unmarshal(body, &s) == nil {
			want, valid = []string{s}, true
		}
	case len(lead) > 0 && lead[0] == '[':
		var raws []json.RawMessage
		if json.Unmarshal(body, &raws) == nil {
			valid = true
			for _, r := range raws {
				var s string
				if r[0] != '"' || json.Unmarshal(r, &s) != nil {
					valid = false
					break
				}
				want = append(want, s)
			}
		}
	}
	var docs []string
	for _, g := range got {
		docs = append(docs, g.doc)
	}
	if ok != valid || (valid && !slices.Equal(docs, want)) {
		t.Fatalf("sockjs %s: %q decodes to %q, %v; encoding/json reads %q, %v", dir, p, docs, ok, want, valid)
	}
}

// checkCentrifuge: a whole message yields, in order, one document per line
// that is a JSON object (ok iff every non-blank line is one): the line with
// a leading type, its first key but "id", or ping/pong/reply.
func checkCentrifuge(t *testing.T, dir event.Direction, p []byte, got []gotDoc, ok bool) {
	t.Helper()
	var lines [][]byte
	wantOK := true
	for _, l := range bytes.Split(p, []byte{'\n'}) {
		l = bytes.TrimLeft(l, " \t\r\n")
		switch {
		case len(l) == 0:
		case l[0] != '{' || !gjson.ValidBytes(l):
			wantOK = false
		default:
			lines = append(lines, l)
		}
	}
	if ok != wantOK || len(got) != len(lines) {
		t.Fatalf("centrifuge %s: %q decodes to %v, %v; want %d docs, %v", dir, p, got, ok, len(lines), wantOK)
	}
	for i, l := range lines {
		doc := got[i].doc
		typ := gjson.Get(doc, "type")
		rest := doc[typ.Index+len(typ.Raw):]
		body := bytes.TrimLeft(l[1:], " \t\r\n")
		if !strings.HasPrefix(doc, `{"type":`) || typ.Index != len(`{"type":`) {
			t.Fatalf("centrifuge: line %q: doc %q does not lead with its type", l, doc)
		}
		want := firstKey(l)
		switch {
		case body[0] == '}':
			if rest != string(body) {
				t.Fatalf("centrifuge: line %q: doc %q", l, doc)
			}
			want = "pong"
			if dir == fromS {
				want = "ping"
			}
		case rest != ","+string(body):
			t.Fatalf("centrifuge: line %q: doc %q is not the line with a type", l, doc)
		case want == "":
			want = "reply"
		}
		// Keys with escapes: gjson and encoding/json unescape bad ones apart.
		if !bytes.Contains(l, []byte(`\`)) && utf8.Valid(l) && want != "?" && typ.Str != want {
			t.Fatalf("centrifuge: line %q: type %q, want %q", l, typ.Str, want)
		}
	}
}

// firstKey is the object's first key but "id", read by encoding/json; "?"
// if it cannot read it.
func firstKey(obj []byte) string {
	dec := json.NewDecoder(bytes.NewReader(obj))
	if _, err := dec.Token(); err != nil {
		return "?"
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return "?"
		}
		if k != "id" {
			return k.(string)
		}
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return "?"
		}
	}
	return ""
}

// Typical event messages, decoded as observe does: from the pool.
func benchDecode(b *testing.B, f Framing, dir event.Direction, msg string) {
	p := []byte(msg)
	var n int
	yield := func(doc []byte, _ bool) { n += len(doc) }
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		d := decoders.Get().(*decoder)
		if !d.decode(f, dir, true, p, false, yield) {
			b.Fatal("not decoded")
		}
		decoders.Put(d)
	}
	if n == 0 {
		b.Fatal("no docs")
	}
}

func BenchmarkFramingDecodeJSON(b *testing.B) {
	benchDecode(b, FramingJSON, fromC, `{"type":"message","sessionId":"s-123","text":"hello there"}`)
}

func BenchmarkFramingDecodeSocketIO(b *testing.B) {
	benchDecode(b, FramingSocketIO, fromC, `42["message",{"sessionId":"s-123","text":"hello there"}]`)
}

func BenchmarkFramingDecodeSockJS(b *testing.B) {
	benchDecode(b, FramingSockJS, fromS, `a["{\"type\":\"message\",\"sessionId\":\"s-123\",\"text\":\"hello there\"}"]`)
}

func BenchmarkFramingDecodeCentrifuge(b *testing.B) {
	benchDecode(b, FramingCentrifuge, fromS, `{"push":{"channel":"chat","pub":{"data":{"sessionId":"s-123","text":"hello there"}}}}`)
}

func BenchmarkFramingDecodeCentrifugePing(b *testing.B) {
	benchDecode(b, FramingCentrifuge, fromS, `{}`)
}

// TestFramingThroughRelay: with Socket.IO framing the relay finds the ids in
// an event's arguments, passes every message unchanged, and counts what it
// cannot decode by direction without dropping it.
func TestFramingThroughRelay(t *testing.T) {
	up, _ := gorillaUpstream(t, websocket.Upgrader{})
	tp := startProxy(t, up, func(o *Options) {
		o.Framing = FramingSocketIO
		o.InspectClient, o.InspectServer = true, true
		o.SessionFrom = mustSources(t, "frame:data.1.sessionId")
		o.BotFrom = mustSources(t, "frame:data.1.botId")
	})
	c, _ := gorillaDial(t, nil, tp.ws("/socket.io/?EIO=4&transport=websocket"), nil)
	echo(t, c, websocket.TextMessage, []byte(`42["link",{"sessionId":"s-1","botId":"b-1"}]`))
	got := tp.rec.wait(t, "identified", isKind(evIdentified))
	if got.Who.SessionID != "s-1" || got.Who.BotID != "b-1" {
		t.Fatalf("identified as %+v", got.Who)
	}
	// Not Socket.IO: echoed (counted once each way), not lost.
	echo(t, c, websocket.TextMessage, []byte(`{"sessionId":"plain json"}`))
	echo(t, c, websocket.TextMessage, []byte(`42["message",{"text":"hi"}]`))
	st := tp.p.Stats()
	deadline := time.Now().Add(waitTime)
	for st.Unparsed[event.FromServer].Load() < 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if c, s := st.Unparsed[event.FromClient].Load(), st.Unparsed[event.FromServer].Load(); c != 1 || s != 1 {
		t.Fatalf("unparsed: %d from the client, %d from the server; want 1 and 1", c, s)
	}
}
