package harness

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// FaultMode is what a Fault does to a body.
type FaultMode int

const (
	// FaultClose closes the connection after Offset body bytes; the
	// response keeps its Content-Length, so the client reads an unexpected
	// EOF. On a request body (Request) the upload is cut there.
	FaultClose FaultMode = iota
	// FaultReset resets the connection (TCP RST) after Offset bytes.
	FaultReset
	// FaultShort sends a complete response of only Offset bytes, with a
	// Content-Length that says so: the body ends cleanly, too early.
	FaultShort
	// FaultCorrupt flips the byte at Offset.
	FaultCorrupt
)

func (m FaultMode) String() string {
	return [...]string{"close", "reset", "short", "corrupt"}[m]
}

// Fault describes one fault a FaultProxy injects into matching requests.
type Fault struct {
	Method string // "" = any (HEAD is never faulted: it has no body)
	Kind   string // KindBlob, KindManifest, KindUpload…; "" = any
	Match  string // a substring of the path and query, e.g. a digest's hex; "" = any
	Mode   FaultMode
	// Offset is a byte position in the body; negative counts from its end
	// (-1 = one byte before the end; the response needs a Content-Length).
	Offset int64
	// Times is how many matching requests are faulted; 0 = every one.
	Times int
	// Request faults the request body (an upload) instead of the response.
	// Only FaultClose and FaultReset apply.
	Request bool
}

// Faults is the set of faults a FaultProxy injects. Safe for concurrent use.
type Faults struct {
	mu   sync.Mutex
	list []*faultState
}

type faultState struct {
	Fault
	hits int
}

// Add arms f.
func (fs *Faults) Add(f Fault) {
	fs.mu.Lock()
	fs.list = append(fs.list, &faultState{Fault: f})
	fs.mu.Unlock()
}

// Hits returns how many requests each fault (in Add order) has hit.
func (fs *Faults) Hits() []int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	out := make([]int, len(fs.list))
	for i, f := range fs.list {
		out[i] = f.hits
	}
	return out
}

// take returns the first armed fault that matches r, counting the hit.
func (fs *Faults) take(r *http.Request) *Fault {
	if r.Method == http.MethodHead {
		return nil
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for _, f := range fs.list {
		if (f.Method == "" || f.Method == r.Method) && (f.Kind == "" || f.Kind == Kind(r.URL.Path)) &&
			strings.Contains(r.URL.RequestURI(), f.Match) && (f.Times == 0 || f.hits < f.Times) {
			if f.Request && (r.Body == nil || r.Body == http.NoBody) {
				continue
			}
			f.hits++
			c := f.Fault
			return &c
		}
	}
	return nil
}

// FaultProxy is CountingProxy with fault injection: requests matching an
// armed Fault get their response (or request) body cut, reset, shortened
// or corrupted at a byte offset. Every request is counted, faulted or not.
func FaultProxy(t testing.TB, target *Registry) (*Registry, *Counter, *Faults) {
	t.Helper()
	rec := &recorder{}
	faults := &Faults{}
	srv, setHandler := startLateServer(t, target.CA, target.TLS(), true) // quiet: the faults' own noise
	inner := newForwarder(target, srv.URL, nil, nil)
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f := faults.take(r)
		if f == nil {
			inner.ServeHTTP(w, r)
			return
		}
		fw := &faultWriter{ResponseWriter: w, f: f}
		if f.Request {
			r.Body = &cutBody{rc: r.Body, left: f.Offset, fw: fw}
			fw.cutRequest = true
		}
		inner.ServeHTTP(fw, r)
	})
	setHandler(rec.wrap(h))
	return proxyRegistry(srv, target, rec), &rec.Counter, faults
}

// errFaultCut ends a faulted exchange.
var errFaultCut = errors.New("fault injected: connection cut")

// faultWriter applies a response fault as the proxy writes the body; for
// a request fault it drops the connection once the cut request body ended.
type faultWriter struct {
	http.ResponseWriter
	f          *Fault
	cutRequest bool
	cut        atomic.Bool // the request body was cut
	offset     int64       // resolved from a negative Offset
	n          int64       // body bytes passed on
	dead       bool
}

func (w *faultWriter) WriteHeader(code int) {
	if w.cutRequest {
		if w.cut.Load() {
			w.drop()
			return
		}
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.offset = w.f.Offset
	if cl, err := strconv.ParseInt(w.Header().Get("Content-Length"), 10, 64); err == nil {
		if w.offset < 0 {
			w.offset += cl
		}
		if w.f.Mode == FaultShort && w.offset < cl {
			w.Header().Set("Content-Length", strconv.FormatInt(w.offset, 10))
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *faultWriter) Write(p []byte) (int, error) {
	if w.dead {
		return 0, errFaultCut
	}
	if w.cutRequest {
		if w.cut.Load() {
			w.drop()
			return 0, errFaultCut
		}
		return w.ResponseWriter.Write(p)
	}
	in := len(p)
	start := w.n
	switch w.f.Mode {
	case FaultCorrupt:
		if i := w.offset - start; i >= 0 && i < int64(len(p)) {
			p = append([]byte(nil), p...)
			p[i] ^= 0xff
		}
	case FaultShort:
		p = p[:max(0, min(int64(len(p)), w.offset-start))]
	case FaultClose, FaultReset:
		if start+int64(len(p)) >= w.offset {
			m, _ := w.ResponseWriter.Write(p[:max(0, w.offset-start)])
			w.n += int64(m)
			w.drop()
			return m, errFaultCut
		}
	}
	m, err := w.ResponseWriter.Write(p)
	w.n += int64(m)
	if err != nil {
		return m, err
	}
	return in, nil
}

// drop flushes what was written and closes (or resets) the connection.
func (w *faultWriter) drop() {
	if w.dead {
		return
	}
	w.dead = true
	rc := http.NewResponseController(w.ResponseWriter)
	if !w.cutRequest {
		_ = rc.Flush() // the body so far; a cut request gets no answer at all
	}
	conn, _, err := rc.Hijack()
	if err != nil {
		return
	}
	if w.f.Mode == FaultReset {
		c := conn
		if tc, ok := c.(*tls.Conn); ok {
			c = tc.NetConn()
		}
		if tcp, ok := c.(*net.TCPConn); ok {
			_ = tcp.SetLinger(0)
		}
	}
	_ = conn.Close()
}

func (w *faultWriter) Flush() {
	if !w.dead {
		_ = http.NewResponseController(w.ResponseWriter).Flush()
	}
}

func (w *faultWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// cutBody passes left bytes of a request body on, then fails: the proxy's
// request to the registry breaks off mid-body, and the client's connection
// is dropped when the proxy answers.
type cutBody struct {
	rc   io.ReadCloser
	left int64
	fw   *faultWriter
}

func (b *cutBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		b.fw.cut.Store(true)
		return 0, errFaultCut
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *cutBody) Close() error { return b.rc.Close() }
