package bulkingest

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// reporter shows progress on w: on a terminal, one line redrawn at most
// every redrawEvery (a bar, pages/s, ETA and the counts); otherwise one
// plain line per finished document, for logs.
type reporter struct {
	mu         sync.Mutex
	w          io.Writer
	terminal   bool
	now        func() time.Time
	start      time.Time
	lastDraw   time.Time
	totalPages int
	totalDocs  int
	pages      int
	docs       int
	failed     int
}

const redrawEvery = 200 * time.Millisecond

func newReporter(w io.Writer, terminal bool, docs []Document) *reporter {
	r := &reporter{w: w, terminal: terminal, now: time.Now, totalDocs: len(docs)}
	for _, d := range docs {
		r.totalPages += len(d.Pages)
	}
	r.start = r.now()
	return r
}

// isTerminal reports whether w is a character device (a terminal), where
// a redrawn line makes sense.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// pagesStored counts n more pages of document name as stored (or found
// already stored).
func (r *reporter) pagesStored(name string, n int) {
	if n <= 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pages += n
	if r.terminal && r.now().Sub(r.lastDraw) >= redrawEvery {
		r.drawLocked()
	}
}

func (r *reporter) documentDone(o outcome) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.docs++
	if o.err != nil {
		r.failed++
	}
	if r.terminal {
		r.drawLocked()
		return
	}
	elapsed := r.now().Sub(r.start).Seconds()
	switch {
	case o.err != nil:
		fmt.Fprintf(r.w, "failed  %s (%d pages): %v\n", o.doc.Name, len(o.doc.Pages), o.err)
	case o.created:
		fmt.Fprintf(r.w, "stored  %s (%d pages) as %s; %d/%d documents, %.1f pages/s\n", o.doc.Name, len(o.doc.Pages), o.id, r.docs, r.totalDocs, float64(r.pages)/max(elapsed, 1e-9))
	default:
		fmt.Fprintf(r.w, "skipped %s (%d pages): already stored as %s; %d/%d documents\n", o.doc.Name, len(o.doc.Pages), o.id, r.docs, r.totalDocs)
	}
}

// drawLocked redraws the terminal line: a bar, pages, pages/s, ETA.
func (r *reporter) drawLocked() {
	now := r.now()
	r.lastDraw = now
	const width = 30
	done := 0
	if r.totalPages > 0 {
		done = min(width, r.pages*width/r.totalPages)
	}
	elapsed := now.Sub(r.start).Seconds()
	rate := float64(r.pages) / max(elapsed, 1e-9)
	eta := "?"
	if rate > 0 {
		eta = time.Duration(float64(r.totalPages-r.pages) / rate * float64(time.Second)).Round(time.Second).String()
	}
	fmt.Fprintf(r.w, "\r[%s%s] %d/%d pages %6.1f pages/s ETA %-8s docs %d/%d failed %d ",
		strings.Repeat("=", done), strings.Repeat(" ", width-done), r.pages, r.totalPages, rate, eta, r.docs, r.totalDocs, r.failed)
}

// finish ends the terminal line.
func (r *reporter) finish() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.terminal {
		r.drawLocked()
		fmt.Fprintln(r.w)
	}
}
