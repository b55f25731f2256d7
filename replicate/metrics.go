package replicate

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	stdsync "sync"
	"time"
)

// Metrics counts rounds for Prometheus. Observe each Round; serve it over
// HTTP (any path) in the Prometheus text exposition format, version 0.0.4.
// Safe for concurrent use.
type Metrics struct {
	mu          stdsync.Mutex
	rounds      map[string]float64
	images      map[[2]string]float64 // task, result
	bytes       map[string]float64
	failures    map[string]float64
	lastSuccess map[string]float64
}

// NewMetrics returns empty counters.
func NewMetrics() *Metrics {
	return &Metrics{rounds: map[string]float64{}, images: map[[2]string]float64{}, bytes: map[string]float64{},
		failures: map[string]float64{}, lastSuccess: map[string]float64{}}
}

// Observe adds one round.
func (m *Metrics) Observe(r Round) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rounds[r.Task]++
	// Every result is present from the first round on, so that rate() and
	// increase() see the series start at zero.
	m.images[[2]string{r.Task, ImageCopied}] += float64(r.Copied)
	m.images[[2]string{r.Task, ImageUnchanged}] += float64(r.Unchanged)
	m.images[[2]string{r.Task, ImageFailed}] += float64(r.Failed)
	m.bytes[r.Task] += float64(r.Bytes)
	if _, ok := m.failures[r.Task]; !ok {
		m.failures[r.Task] = 0
	}
	if r.Err != nil {
		m.failures[r.Task]++
	} else {
		end := r.Start.Add(time.Duration(r.Seconds * float64(time.Second)))
		m.lastSuccess[r.Task] = float64(end.UnixMilli()) / 1000
	}
}

// WriteTo writes the metrics in the Prometheus text format.
func (m *Metrics) WriteTo(w io.Writer) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var b strings.Builder
	family := func(name, typ, help string, series map[string]float64) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
		keys := make([]string, 0, len(series))
		for k := range series {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "%s%s %s\n", name, k, strconv.FormatFloat(series[k], 'f', -1, 64))
		}
	}
	byTask := func(in map[string]float64) map[string]float64 {
		out := make(map[string]float64, len(in))
		for t, v := range in {
			out[labels("task", t)] = v
		}
		return out
	}
	images := make(map[string]float64, len(m.images))
	for k, v := range m.images {
		images[labels("task", k[0], "result", k[1])] = v
	}
	family("ferry_sync_rounds_total", "counter", "Rounds run, per task.", byTask(m.rounds))
	family("ferry_sync_images_total", "counter", "Images per task and result (copied, unchanged, failed).", images)
	family("ferry_sync_bytes_total", "counter", "Bytes uploaded into the target, per task.", byTask(m.bytes))
	family("ferry_sync_failures_total", "counter", "Rounds that failed, per task.", byTask(m.failures))
	family("ferry_sync_last_success_timestamp_seconds", "gauge", "Unix time the last successful round of the task ended.", byTask(m.lastSuccess))
	n, err := io.WriteString(w, b.String())
	return int64(n), err
}

// ServeHTTP serves the metrics.
func (m *Metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	if r.Method == http.MethodHead {
		return
	}
	_, _ = m.WriteTo(w)
}

// labels formats {k="v",...} with the text format's escapes.
func labels(kv ...string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i := 0; i+1 < len(kv); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(kv[i])
		b.WriteString(`="`)
		b.WriteString(labelEscaper.Replace(kv[i+1]))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
