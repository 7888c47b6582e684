package imagebuilder

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"
)

// ProgressMode selects how build phases are reported.
type ProgressMode string

const (
	// ProgressTTY redraws a status line with the running phase and its
	// elapsed time: for people at a terminal.
	ProgressTTY ProgressMode = "tty"
	// ProgressPlain prints one line per phase start and end: for logs.
	ProgressPlain ProgressMode = "plain"
	// ProgressJSON prints one JSON object per event: for CI.
	ProgressJSON ProgressMode = "json"
	// ProgressQuiet prints nothing.
	ProgressQuiet ProgressMode = "quiet"
)

// ParseProgressMode validates a --progress value.
func ParseProgressMode(s string) (ProgressMode, error) {
	switch m := ProgressMode(s); m {
	case ProgressTTY, ProgressPlain, ProgressJSON, ProgressQuiet:
		return m, nil
	}
	return "", fmt.Errorf("progress mode %q: want tty, plain, json or quiet", s)
}

// Event is one progress report; it is also the JSON-lines schema.
type Event struct {
	Time     time.Time `json:"time"`
	Phase    string    `json:"phase"`
	Index    int       `json:"index"`
	Total    int       `json:"total"`
	Event    string    `json:"event"` // start, done, error, bytes
	Detail   string    `json:"detail,omitempty"`
	Duration float64   `json:"duration_s,omitempty"`
	// Bytes and BytesTotal are set on "bytes" events (push, pull).
	Bytes      int64 `json:"bytes,omitempty"`
	BytesTotal int64 `json:"bytes_total,omitempty"`
}

// Progress reports phase events to a writer.
type Progress struct {
	mode  ProgressMode
	w     io.Writer
	now   func() time.Time
	mu    sync.Mutex
	stop  chan struct{}
	done  chan struct{}
	cur   Event
	start time.Time
	bytes bytesState
}

// NewProgress returns a reporter; now is the clock (time.Now in
// production, injectable for tests).
func NewProgress(mode ProgressMode, w io.Writer, now func() time.Time) *Progress {
	if now == nil {
		now = time.Now
	}
	return &Progress{mode: mode, w: w, now: now}
}

// Start marks a phase as running.
func (p *Progress) Start(index, total int, phase string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cur = Event{Time: p.now(), Phase: phase, Index: index, Total: total, Event: "start"}
	p.start = p.cur.Time
	p.bytes = bytesState{}
	switch p.mode {
	case ProgressJSON:
		p.emitJSON(p.cur)
	case ProgressPlain:
		fmt.Fprintf(p.w, "[%d/%d] %s ...\n", index, total, phase)
	case ProgressTTY:
		p.stop, p.done = make(chan struct{}), make(chan struct{})
		go p.ticker(p.stop, p.done)
	}
}

// End marks the running phase finished (err nil) or failed.
func (p *Progress) End(detail string, err error) {
	if p == nil {
		return
	}
	p.mu.Lock()
	stop, done := p.stop, p.done
	p.stop = nil
	p.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	ev := p.cur
	ev.Time = p.now()
	ev.Duration = ev.Time.Sub(p.start).Seconds()
	ev.Event, ev.Detail = "done", detail
	if err != nil {
		ev.Event, ev.Detail = "error", err.Error()
	}
	switch p.mode {
	case ProgressJSON:
		p.emitJSON(ev)
	case ProgressPlain, ProgressTTY:
		prefix := ""
		if p.mode == ProgressTTY {
			prefix = "\r\033[K"
		}
		status := "ok"
		if err != nil {
			status = "FAILED"
		}
		fmt.Fprintf(p.w, "%s[%d/%d] %-10s %-6s %6.1fs  %s\n", prefix, ev.Index, ev.Total, ev.Phase, status, ev.Duration, firstLine(ev.Detail))
	}
}

func (p *Progress) ticker(stop, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	spin := `|/-\`
	for i := 0; ; i++ {
		p.mu.Lock()
		fmt.Fprintf(p.w, "\r\033[K[%d/%d] %-10s %c %6.1fs%s", p.cur.Index, p.cur.Total, p.cur.Phase, spin[i%4], p.now().Sub(p.start).Seconds(), p.bytesText())
		p.mu.Unlock()
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

func (p *Progress) emitJSON(ev Event) {
	b, _ := json.Marshal(ev)
	p.w.Write(append(b, '\n')) //nolint:errcheck
}

func firstLine(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			return s[:i]
		}
	}
	return s
}
