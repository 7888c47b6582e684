package imagebuilder

import (
	"fmt"
	"time"
)

// bytesEvery is how often a "bytes" JSON event is emitted at most.
const bytesEvery = 500 * time.Millisecond

type bytesState struct {
	done, total int64
	emitted     time.Time
}

// Bytes reports bytes moved within the running phase (push, pull). JSON
// mode emits a "bytes" event at most every half second and at the end;
// the TTY status line shows them with the rate; plain mode prints
// nothing (the phase's end line says what moved).
func (p *Progress) Bytes(done, total int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bytes.done, p.bytes.total = done, total
	if p.mode != ProgressJSON {
		return
	}
	now := p.now()
	if now.Sub(p.bytes.emitted) < bytesEvery && done != total {
		return
	}
	p.bytes.emitted = now
	ev := p.cur
	ev.Time, ev.Event, ev.Bytes, ev.BytesTotal = now, "bytes", done, total
	ev.Duration = now.Sub(p.start).Seconds()
	p.emitJSON(ev)
}

// bytesText is the TTY status line's byte part; callers hold p.mu.
func (p *Progress) bytesText() string {
	b := p.bytes
	if b.total == 0 && b.done == 0 {
		return ""
	}
	s := fmt.Sprintf("  %d/%d MiB", b.done>>20, b.total>>20)
	if el := p.now().Sub(p.start).Seconds(); el > 0 {
		s += fmt.Sprintf("  %.0f MiB/s", float64(b.done)/(1<<20)/el)
	}
	return s
}
