package wsframe

import (
	"bytes"
	"testing"
)

// TestAppendControlBytes pins the bytes of the control frames a relay
// writes itself (RFC 6455 §5.2, §5.5.1, §5.5.2): final bit and opcode, a
// 7-bit length, the key and masked payload when masked; what dst held
// before is kept. The 0-allocation figure is in TestNoAllocs.
func TestAppendControlBytes(t *testing.T) {
	key := [4]byte{0x11, 0x22, 0x33, 0x44}
	probe := []byte("12345678")
	maskedProbe := make([]byte, len(probe))
	for i, b := range probe {
		maskedProbe[i] = b ^ key[i%4]
	}
	for _, tc := range []struct {
		name string
		got  []byte
		want []byte
	}{
		{"close 1001 to the client", AppendClose(nil, CloseGoingAway, nil), []byte{0x88, 0x02, 0x03, 0xe9}},
		{"close 1001 to the server", AppendClose(nil, CloseGoingAway, &key),
			[]byte{0x88, 0x82, 0x11, 0x22, 0x33, 0x44, 0x03 ^ 0x11, 0xe9 ^ 0x22}},
		{"close 1000", AppendClose(nil, 1000, nil), []byte{0x88, 0x02, 0x03, 0xe8}},
		{"ping to the client", AppendPing(nil, probe, nil), append([]byte{0x89, 0x08}, probe...)},
		{"ping to the server", AppendPing(nil, probe, &key), append([]byte{0x89, 0x88, 0x11, 0x22, 0x33, 0x44}, maskedProbe...)},
		{"empty ping", AppendPing(nil, nil, nil), []byte{0x89, 0x00}},
		{"empty masked ping", AppendPing(nil, nil, &key), []byte{0x89, 0x80, 0x11, 0x22, 0x33, 0x44}},
		{"appended after other bytes", AppendClose([]byte("ab"), CloseGoingAway, nil), []byte{'a', 'b', 0x88, 0x02, 0x03, 0xe9}},
	} {
		if !bytes.Equal(tc.got, tc.want) {
			t.Errorf("%s: % x, want % x", tc.name, tc.got, tc.want)
		}
	}
	if got := AppendPing(nil, probe, nil); &probe[0] == &got[2] {
		t.Error("AppendPing aliases its payload")
	}
	if AppendPing(nil, probe, &key); string(probe) != "12345678" {
		t.Errorf("AppendPing masked its payload in place: %q", probe)
	}
}

// TestAppendControlReadBack: the parser, and the reference parser at every
// split, read the frames back as what was appended; masked frames pass
// where masking is required. The test frame builder makes the same bytes.
func TestAppendControlReadBack(t *testing.T) {
	key := [4]byte{0xa1, 0xb2, 0xc3, 0xd4}
	big := bytes.Repeat([]byte{0x5a}, maxControlPayload)
	for _, tc := range []struct {
		name    string
		op      Opcode
		payload []byte
		build   func(mask *[4]byte) []byte
	}{
		{"close", OpClose, []byte{0x03, 0xe9}, func(m *[4]byte) []byte { return AppendClose(nil, CloseGoingAway, m) }},
		{"ping", OpPing, []byte("probe-01"), func(m *[4]byte) []byte { return AppendPing(nil, []byte("probe-01"), m) }},
		{"empty ping", OpPing, nil, func(m *[4]byte) []byte { return AppendPing(nil, nil, m) }},
		{"125-byte ping", OpPing, big, func(m *[4]byte) []byte { return AppendPing(nil, big, m) }},
	} {
		for _, masked := range []bool{false, true} {
			var mask *[4]byte
			if masked {
				mask = &key
			}
			stream := tc.build(mask)
			want := frame{fin: true, op: tc.op, mask: masked, key: key, payload: tc.payload}.bytes()
			if !bytes.Equal(stream, want) {
				t.Errorf("%s masked=%v: % x, the test builder makes % x", tc.name, masked, stream, want)
			}
			evs := feedAll(t, stream, Options{ExpectMasked: masked})
			if len(evs) != 2 || evs[0].kind != 'H' || evs[1].kind != 'E' {
				t.Fatalf("%s masked=%v: events:\n%s", tc.name, masked, dumpEvents(evs))
			}
			h := evs[1].h
			if !h.Fin || h.Opcode != tc.op || h.Masked != masked || h.Length != int64(len(tc.payload)) ||
				h.RSV1 || h.RSV2 || h.RSV3 || masked && h.MaskKey != key {
				t.Errorf("%s masked=%v: header %+v", tc.name, masked, h)
			}
			if !bytes.Equal(evs[1].data, tc.payload) || evs[1].off != int64(len(stream)) {
				t.Errorf("%s masked=%v: payload %q ending at %d, want %q ending at %d", tc.name, masked, evs[1].data, evs[1].off, tc.payload, len(stream))
			}
			checkEverySplit(t, stream, Options{ExpectMasked: masked})
		}
	}
}

// TestAppendPingTooLong: a payload a control frame cannot carry is a
// programming error, not a frame the parser would reject later.
func TestAppendPingTooLong(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("AppendPing took a 126-byte payload")
		}
	}()
	AppendPing(nil, make([]byte, maxControlPayload+1), nil)
}
