package config

import (
	"strings"

	"github.com/presence-sidecar/presence-sidecar/proxy"
)

// Preset is one chat stack's defaults (PRESET; README, "Presets"): how its
// messages are framed, where its ids are, which of its client messages are
// not a person (heartbeats, the library's own chatter), and hand-over rules
// that fit it. A variable set explicitly wins over its preset's value.
type Preset struct {
	Name    string
	Framing proxy.Framing

	SessionIDFrom, BotIDFrom                           string
	PresenceIgnore, HandoffStartMatch, HandoffEndMatch string
}

// Presets are the chat stacks the sidecar knows, seed (the defaults) first.
var Presets = []Preset{
	{
		Name:              "seed",
		Framing:           proxy.FramingJSON,
		SessionIDFrom:     "query:sessionId,header:X-Session-Id,frame:data.sessionId,body:sessionId",
		BotIDFrom:         "query:botId,frame:data.botId,body:botId",
		PresenceIgnore:    "client:action=keep_alive",
		HandoffStartMatch: "server:data.isTransfer=true",
		HandoffEndMatch:   "server:action=end_conversation&data.isTransfer!=true",
	},
	{
		// Socket.IO 3/4: the seed's messages as events, emit(action, data):
		// data.0 is the event's name, data.1 its first argument; a
		// connect packet's data is the client's auth object.
		Name:           "socketio",
		Framing:        proxy.FramingSocketIO,
		SessionIDFrom:  "query:sessionId,header:X-Session-Id,frame:data.sessionId,frame:data.1.sessionId",
		BotIDFrom:      "query:botId,frame:data.botId,frame:data.1.botId",
		PresenceIgnore: "client:type=pong;client:type=ping;client:type=upgrade;client:type=noop;client:type=connect;client:type=ack;client:type=event&data.0=keep_alive",
		// The library's heartbeats (Engine.IO pong), transport upgrade and
		// reconnects (connect), and acks its callbacks send by themselves.
		HandoffStartMatch: "server:type=event&data.1.isTransfer=true",
		HandoffEndMatch:   "server:type=event&data.0=end_conversation&data.1.isTransfer!=true",
	},
	{
		// SockJS is a transport: each message string is unwrapped, and the
		// paths address what the app sent, as with seed (a seed-style app
		// over SockJS). Its heartbeats (h) come from the server only.
		Name:              "sockjs",
		Framing:           proxy.FramingSockJS,
		SessionIDFrom:     "query:sessionId,header:X-Session-Id,frame:data.sessionId",
		BotIDFrom:         "query:botId,frame:data.botId",
		PresenceIgnore:    "client:action=keep_alive",
		HandoffStartMatch: "server:data.isTransfer=true",
		HandoffEndMatch:   "server:action=end_conversation&data.isTransfer!=true",
	},
	{
		// Centrifuge's JSON protocol: ids in the connect command's data, the
		// hand-over in a publication's data. Everything the client library
		// sends by itself (pong, connect, subscribe, refreshes, presence,
		// history) is not a person; publish, rpc and send are.
		Name:              "centrifuge",
		Framing:           proxy.FramingCentrifuge,
		SessionIDFrom:     "query:sessionId,header:X-Session-Id,frame:connect.data.sessionId",
		BotIDFrom:         "query:botId,frame:connect.data.botId",
		PresenceIgnore:    "client:type=pong;client:type=connect;client:type=subscribe;client:type=unsubscribe;client:type=refresh;client:type=sub_refresh;client:type=presence;client:type=presence_stats;client:type=history",
		HandoffStartMatch: "server:type=push&push.pub.data.isTransfer=true",
		HandoffEndMatch:   "server:type=push&push.pub.data.action=end_conversation&push.pub.data.isTransfer!=true",
	},
}

// LookupPreset finds a preset by name; "" is seed.
func LookupPreset(name string) (Preset, bool) {
	name = strings.TrimSpace(name)
	if name == "" {
		name = "seed"
	}
	for _, p := range Presets {
		if p.Name == name {
			return p, true
		}
	}
	return Preset{}, false
}

// presetNames lists the presets for error messages: "a, b, c or d".
func presetNames() string {
	names := make([]string, len(Presets))
	for i, p := range Presets {
		names[i] = p.Name
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// applyPreset sets c's preset-dependent values from the preset named name,
// before the explicit variables are read over them. An unknown name changes
// nothing: validate reports it.
func applyPreset(c *Config, name string) {
	p, ok := LookupPreset(name)
	if !ok {
		return
	}
	c.SessionIDFrom, c.BotIDFrom = p.SessionIDFrom, p.BotIDFrom
	c.PresenceIgnore, c.HandoffStartMatch, c.HandoffEndMatch = p.PresenceIgnore, p.HandoffStartMatch, p.HandoffEndMatch
}

// validatePreset checks PRESET.
func (c Config) validatePreset() []error {
	if _, ok := LookupPreset(c.Preset); !ok {
		return []error{bad("PRESET", c.Preset, "want "+presetNames())}
	}
	return nil
}

// Framing is how PRESET's stack frames its messages (seed: plain JSON).
func (c Config) Framing() proxy.Framing {
	p, _ := LookupPreset(c.Preset)
	return p.Framing
}
