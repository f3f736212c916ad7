package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Echo is what one echo workload measured through one proxy process.
type Echo struct {
	Msgs       int // round trips in the measured window
	MsgsPerSec float64
	P50, P99   time.Duration
	Max        time.Duration // slowest round trip
	CPU        float64       // proxy CPU during the measured window, in cores (1 = one core busy)
	Foreign    float64       // CPU used meanwhile by everything that is not this benchmark, in cores: noise
	Extensions string        // Sec-WebSocket-Extensions the echo clients' handshakes got
}

// echoVariants is how many different messages each client cycles through.
const echoVariants = 16

// runEcho runs cfg.Clients closed-loop clients: send a message, wait for its
// echo, again, for Warmup+Duration. Round trips that start inside the
// measured window count.
func runEcho(ctx context.Context, p *proxyProc, up *upstreamProc, tag string, cfg Config, w Workload) (Echo, error) {
	var res Echo
	d := websocket.Dialer{
		HandshakeTimeout: ioTimeout,
		// Room for a whole message: one frame each, as a browser sends it.
		ReadBufferSize:    max(4096, w.Size+64),
		WriteBufferSize:   max(4096, w.Size+64),
		EnableCompression: w.Deflate,
	}
	conns := make([]*websocket.Conn, cfg.Clients)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.NetConn().Close()
			}
		}
	}()
	for i := range conns {
		c, h, err := dial(ctx, &d, p.url())
		if err != nil {
			return res, fmt.Errorf("echo client %d: %w", i+1, err)
		}
		conns[i] = c
		ext := strings.Join(h.Values("Sec-WebSocket-Extensions"), ", ")
		if err := checkDeflate(w, ext); err != nil {
			return res, fmt.Errorf("echo client %d through %s: %w", i+1, p.name, err)
		}
		if i == 0 {
			res.Extensions = ext
		} else if ext != res.Extensions {
			return res, fmt.Errorf("echo client %d through %s: Sec-WebSocket-Extensions %q, client 1 got %q", i+1, p.name, ext, res.Extensions)
		}
		if err := link(c, fmt.Sprintf("bench-%s-echo-%d", tag, i)); err != nil {
			return res, fmt.Errorf("echo client %d: %w", i+1, err)
		}
	}

	start := time.Now()
	from := start.Add(cfg.Warmup)
	until := from.Add(cfg.Duration)
	lat := make([][]time.Duration, len(conns))
	errs := make([]error, len(conns))
	var wg sync.WaitGroup
	for i, c := range conns {
		lat[i] = make([]time.Duration, 0, 1<<14)
		wg.Go(func() {
			var msgs [echoVariants][]byte
			for v := range msgs {
				msgs[v] = echoMessage(fmt.Sprintf("bench-%s-echo-%d", tag, i), w.Size, i*echoVariants+v)
			}
			for k := 0; ctx.Err() == nil; k++ {
				msg := msgs[k%echoVariants]
				t0 := time.Now()
				if !t0.Before(until) {
					return
				}
				c.SetWriteDeadline(t0.Add(ioTimeout))
				c.SetReadDeadline(t0.Add(ioTimeout))
				if err := c.WriteMessage(websocket.TextMessage, msg); err != nil {
					errs[i] = fmt.Errorf("echo client %d: write: %w", i+1, err)
					return
				}
				_, r, err := c.NextReader()
				if err != nil {
					errs[i] = fmt.Errorf("echo client %d: read: %w", i+1, err)
					return
				}
				n, err := io.Copy(io.Discard, r)
				if err != nil {
					errs[i] = fmt.Errorf("echo client %d: read: %w", i+1, err)
					return
				}
				if n != int64(len(msg)) {
					errs[i] = fmt.Errorf("echo client %d: echo of %d bytes, sent %d", i+1, n, len(msg))
					return
				}
				if !t0.Before(from) {
					lat[i] = append(lat[i], time.Since(t0))
				}
			}
		})
	}

	// CPU over the measured window: the proxy's, and that of everything on
	// the machine that is not this benchmark (noise).
	cpuDone := make(chan [2]float64, 1)
	go func() {
		time.Sleep(time.Until(from))
		ours := func() int64 { return procTicks(append(p.pids(), os.Getpid(), up.cmd.Process.Pid)...) }
		t0, p0, o0, m0 := time.Now(), p.cpuTicks(), ours(), machineBusyTicks()
		time.Sleep(time.Until(until))
		secs := time.Since(t0).Seconds()
		proxy := float64(p.cpuTicks()-p0) / clockTicks / secs
		foreign := float64((machineBusyTicks()-m0)-(ours()-o0)) / clockTicks / secs
		cpuDone <- [2]float64{proxy, max(foreign, 0)}
	}()
	wg.Wait()
	cpus := <-cpuDone
	res.CPU, res.Foreign = cpus[0], cpus[1]
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}

	all := slices.Concat(lat...)
	if len(all) == 0 {
		return res, errors.New("no echo completed in the measured window")
	}
	slices.Sort(all)
	res.Msgs = len(all)
	res.MsgsPerSec = float64(len(all)) / cfg.Duration.Seconds()
	res.P50 = percentile(all, 0.50)
	res.P99 = percentile(all, 0.99)
	res.Max = all[len(all)-1]
	return res, nil
}

// checkDeflate fails a workload whose handshake did not come out as asked:
// a proxy that drops the offer or the answer would otherwise be measured
// relaying plain frames under the deflate heading.
func checkDeflate(w Workload, ext string) error {
	has := strings.Contains(strings.ToLower(ext), "permessage-deflate")
	switch {
	case w.Deflate && !has:
		return fmt.Errorf("permessage-deflate not negotiated: the client offered it and the upstream accepts it, but the handshake's Sec-WebSocket-Extensions is %q", ext)
	case !w.Deflate && has:
		return fmt.Errorf("permessage-deflate negotiated though the client did not offer it (Sec-WebSocket-Extensions %q)", ext)
	}
	return nil
}

// percentile of a sorted sample (nearest rank).
func percentile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
