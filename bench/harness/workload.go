package harness

import (
	"bytes"
	"compress/flate"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
)

// Workload is one echo measurement: the message size, and whether the
// clients and the upstream negotiate permessage-deflate (as browsers do).
type Workload struct {
	Size    int  // bytes per message, before compression
	Deflate bool // permessage-deflate negotiated end to end
}

// DefaultWorkloads is what a run measures unless told otherwise.
var DefaultWorkloads = []Workload{{128, false}, {4096, false}, {128, true}, {4096, true}}

// String names the workload in the report: "128 B", "4 KiB, deflate".
func (w Workload) String() string {
	s := strconv.Itoa(w.Size) + " B"
	if w.Size >= 1024 && w.Size%1024 == 0 {
		s = strconv.Itoa(w.Size/1024) + " KiB"
	}
	if w.Deflate {
		s += ", deflate"
	}
	return s
}

// Flag is the workload as -workloads spells it: "128", "4096z".
func (w Workload) Flag() string {
	s := strconv.Itoa(w.Size)
	if w.Deflate {
		s += "z"
	}
	return s
}

// ParseWorkloads reads a -workloads list: sizes in bytes ("4k" is 4096),
// each followed by "z" for permessage-deflate, e.g. "128,4096,128z,4096z".
func ParseWorkloads(s string) ([]Workload, error) {
	var out []Workload
	for _, f := range strings.Split(s, ",") {
		f = strings.ToLower(strings.TrimSpace(f))
		if f == "" {
			continue
		}
		var w Workload
		num, z := strings.CutSuffix(f, "z")
		w.Deflate = z
		mult := 1
		if n, k := strings.CutSuffix(num, "k"); k {
			num, mult = n, 1024
		}
		n, err := strconv.Atoi(num)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("workload %q: want a size in bytes, optionally with k, then z for deflate (e.g. 128, 4096z)", f)
		}
		w.Size = n * mult
		for _, have := range out {
			if have == w {
				return nil, fmt.Errorf("workload %q given twice", f)
			}
		}
		out = append(out, w)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no workload in %q", s)
	}
	return out, nil
}

// minMsgSize leaves room for the JSON envelope.
const minMsgSize = 64

// words is chat-like text: the payload compresses about as much as real
// messages do, where a run of one letter would shrink to nothing and make
// permessage-deflate look free.
var words = strings.Fields(`hi hello thanks please sorry yes no ok sure the a an to of and or
in on at for with from my your our it is was will can could would should do does did not
order delivery package refund account password email address number card payment invoice
today tomorrow yesterday morning evening week days hours minutes still again already
help support agent bot question problem issue working broken arrived missing late wrong
change cancel update check track status confirm send sent received waiting booked
I you we they this that there here what when where why how which who
1 2 3 4 5 10 12 24 48 2024 #4411 #5820 EUR USD`)

// echoMessage is a size-byte JSON text message shaped like the seed's, its
// text pseudo-random words (variant picks which) so that no two variants
// are alike and deflate has real text to work on.
func echoMessage(session string, size, variant int) []byte {
	head := fmt.Sprintf(`{"action":"message","data":{"sessionId":%q,"text":"`, session)
	tail := `"}}`
	pad := size - len(head) - len(tail)
	if pad < 0 {
		// Long session ids: keep the size exact; the text shrinks to fit.
		head = `{"action":"message","data":{"text":"`
		pad = size - len(head) - len(tail)
	}
	rng := rand.New(rand.NewPCG(uint64(variant), uint64(size)))
	var text strings.Builder
	for text.Len() < pad {
		if text.Len() > 0 {
			text.WriteByte(' ')
		}
		text.WriteString(words[rng.IntN(len(words))])
	}
	return []byte(head + text.String()[:pad] + tail)
}

// deflatedShare is how big the message is on the wire with deflate at
// gorilla/websocket's level (1, no context takeover): compressed ÷ plain.
func deflatedShare(msg []byte) float64 {
	var b bytes.Buffer
	fw, _ := flate.NewWriter(&b, 1)
	fw.Write(msg)
	fw.Flush()
	// A message ends without the flush's empty block (RFC 7692 7.2.1).
	return float64(b.Len()-4) / float64(len(msg))
}
