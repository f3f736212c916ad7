// Command centrifuge-server is a chat app on github.com/centrifugal/centrifuge
// for the sidecar's end-to-end tests (e2e/frameworks_test.go), speaking the
// control lines of ../peer.js: it prints {"ev":"listening","port":N}, then
// {"ev":"link",...} for each connect and {"ev":"message",...} for each RPC,
// and takes {"cmd":"push","sessionId":…,"action":…,"data":{…}} on stdin.
//
// A client links its session in its connect command's data
// ({"sessionId","botId"}); the server subscribes the connection to the
// session's channel, and a push is a publication there, whose data is the
// bot's frame flattened: {"action":…, …data}. An RPC is a message, answered
// with {"text":"echo: …"}.
//
// It is a module of its own so that the sidecar's module does not depend on
// centrifuge.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/centrifugal/centrifuge"
)

// heartbeat is Centrifuge's app-level ping ({} from the server, {} back),
// faster than the tests' presence interval. The connect reply gives it to
// the client in whole seconds, and a client told 0 never answers: 1 s is the
// least.
const heartbeat = time.Second

var out sync.Mutex

func emit(ev map[string]any) {
	b, _ := json.Marshal(ev)
	out.Lock()
	defer out.Unlock()
	fmt.Printf("%s\n", b)
}

func channel(sessionID string) string { return "session:" + sessionID }

func main() {
	node, err := centrifuge.New(centrifuge.Config{LogLevel: centrifuge.LogLevelError, LogHandler: func(e centrifuge.LogEntry) {
		log.Printf("centrifuge: %s %v", e.Message, e.Fields)
	}})
	if err != nil {
		log.Fatal(err)
	}
	node.OnConnecting(func(_ context.Context, e centrifuge.ConnectEvent) (centrifuge.ConnectReply, error) {
		var link struct{ SessionID, BotID string }
		if err := json.Unmarshal(e.Data, &link); err != nil || link.SessionID == "" {
			return centrifuge.ConnectReply{}, centrifuge.DisconnectInvalidToken
		}
		emit(map[string]any{"ev": "link", "sessionId": link.SessionID, "botId": link.BotID})
		reply, _ := json.Marshal(map[string]string{"socketId": e.ClientID})
		return centrifuge.ConnectReply{
			Credentials:    &centrifuge.Credentials{UserID: link.SessionID},
			Data:           reply,
			Subscriptions:  map[string]centrifuge.SubscribeOptions{channel(link.SessionID): {}},
			PingPongConfig: &centrifuge.PingPongConfig{PingInterval: heartbeat, PongTimeout: heartbeat / 2},
		}, nil
	})
	node.OnConnect(func(c *centrifuge.Client) {
		c.OnRPC(func(e centrifuge.RPCEvent, cb centrifuge.RPCCallback) {
			var m struct{ Text string }
			json.Unmarshal(e.Data, &m)
			emit(map[string]any{"ev": "message", "text": m.Text})
			reply, _ := json.Marshal(map[string]string{"text": "echo: " + m.Text})
			cb(centrifuge.RPCReply{Data: reply}, nil)
		})
	})
	if err := node.Run(); err != nil {
		log.Fatal(err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/connection/websocket", centrifuge.NewWebsocketHandler(node, centrifuge.WebsocketConfig{
		CheckOrigin: func(*http.Request) bool { return true },
	}))
	go func() { log.Fatal(http.Serve(ln, mux)) }()
	emit(map[string]any{"ev": "listening", "port": ln.Addr().(*net.TCPAddr).Port})

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var c struct {
			Cmd, SessionID, Action string
			Data                   map[string]any
		}
		if err := json.Unmarshal(in.Bytes(), &c); err != nil || c.Cmd != "push" {
			continue
		}
		pub := map[string]any{"action": c.Action}
		for k, v := range c.Data {
			pub[k] = v
		}
		b, _ := json.Marshal(pub)
		if _, err := node.Publish(channel(c.SessionID), b); err != nil {
			log.Printf("publish: %v", err)
		}
	}
	// stdin closed: the test ended.
}
