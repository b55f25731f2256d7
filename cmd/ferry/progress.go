package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/internal/units"
)

// progress draws bundle events: a progress bar on a terminal, a plain
// timestamped line every few seconds otherwise (cron, CI, pipes).
type progress struct {
	mu       sync.Mutex
	w        io.Writer
	label    string
	bar      *progressbar.ProgressBar
	total    int64
	done     int64
	lastLine time.Time
	every    time.Duration
	quiet    bool
	tty      bool
}

func newProgress(e *env, label string) *progress {
	p := &progress{w: e.stderr, label: label, every: 10 * time.Second, quiet: e.quiet}
	if f, ok := e.stderr.(*os.File); ok && !e.quiet && term.IsTerminal(int(f.Fd())) {
		p.tty = true
	}
	return p
}

// newBar starts a bar for total bytes. A bar is made once its total is
// known: progressbar's Reset forgets how wide the line it drew was, and
// then cannot clear it.
func (p *progress) newBar(total int64) {
	if p.bar != nil {
		_ = p.bar.Finish()
	}
	p.bar = progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(p.w),
		progressbar.OptionSetDescription(p.label),
		progressbar.OptionShowBytes(true),
		progressbar.OptionUseIECUnits(true), // KiB, MiB: as the summaries
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
}

// Event implements bundle.Progress.
func (p *progress) Event(ev bundle.Event) {
	if p.quiet {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch ev.Kind {
	case bundle.EventPlanned:
		p.total, p.done = ev.Total, 0
		if p.tty && ev.Total > 0 {
			p.newBar(ev.Total)
		} else {
			p.line(fmt.Sprintf("%s: %s to go", p.label, units.Bytes(ev.Total)))
		}
	case bundle.EventBytes:
		p.done += ev.Bytes
		if p.bar != nil {
			_ = p.bar.Add64(ev.Bytes)
		} else if time.Since(p.lastLine) >= p.every {
			p.line(fmt.Sprintf("%s: %s of %s", p.label, units.Bytes(p.done), units.Bytes(p.total)))
		}
	case bundle.EventBlobFailed:
		if p.bar != nil {
			_ = p.bar.Clear()
		}
		p.line(fmt.Sprintf("%s: blob %s failed: %v", p.label, ev.Digest, ev.Err))
	}
}

func (p *progress) line(s string) {
	p.lastLine = time.Now()
	fmt.Fprintf(p.w, "%s %s\n", p.lastLine.Format("15:04:05"), s)
}

func (p *progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		_ = p.bar.Finish()
		p.bar = nil
	} else if !p.quiet && p.total > 0 {
		p.line(fmt.Sprintf("%s: %s of %s done", p.label, units.Bytes(p.done), units.Bytes(p.total)))
	}
}
