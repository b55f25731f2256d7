package replicate

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestMetricsText serves two tasks' rounds and checks the exposition text
// line by line: HELP and TYPE per family, sorted series, escaped labels,
// failures counted per failed round, the last success time of the task.
func TestMetricsText(t *testing.T) {
	m := NewMetrics()
	start := time.Unix(1700000000, 0)
	m.Observe(Round{Task: "core", Start: start, Seconds: 2.5, Copied: 3, Unchanged: 1, Bytes: 1024})
	m.Observe(Round{Task: "core", Start: start.Add(time.Minute), Seconds: 1, Unchanged: 4, Failed: 1, Err: errors.New("x")})
	m.Observe(Round{Task: `we"ird\`, Start: start, Seconds: 0, Unchanged: 2})

	srv := httptest.NewServer(m)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/plain; version=0.0.4; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	body, _ := io.ReadAll(resp.Body)
	want := `# HELP ferry_sync_rounds_total Rounds run, per task.
# TYPE ferry_sync_rounds_total counter
ferry_sync_rounds_total{task="core"} 2
ferry_sync_rounds_total{task="we\"ird\\"} 1
# HELP ferry_sync_images_total Images per task and result (copied, unchanged, failed).
# TYPE ferry_sync_images_total counter
ferry_sync_images_total{task="core",result="copied"} 3
ferry_sync_images_total{task="core",result="failed"} 1
ferry_sync_images_total{task="core",result="unchanged"} 5
ferry_sync_images_total{task="we\"ird\\",result="copied"} 0
ferry_sync_images_total{task="we\"ird\\",result="failed"} 0
ferry_sync_images_total{task="we\"ird\\",result="unchanged"} 2
# HELP ferry_sync_bytes_total Bytes uploaded into the target, per task.
# TYPE ferry_sync_bytes_total counter
ferry_sync_bytes_total{task="core"} 1024
ferry_sync_bytes_total{task="we\"ird\\"} 0
# HELP ferry_sync_failures_total Rounds that failed, per task.
# TYPE ferry_sync_failures_total counter
ferry_sync_failures_total{task="core"} 1
ferry_sync_failures_total{task="we\"ird\\"} 0
# HELP ferry_sync_last_success_timestamp_seconds Unix time the last successful round of the task ended.
# TYPE ferry_sync_last_success_timestamp_seconds gauge
ferry_sync_last_success_timestamp_seconds{task="core"} 1700000002.5
ferry_sync_last_success_timestamp_seconds{task="we\"ird\\"} 1700000000
`
	if string(body) != want {
		t.Errorf("metrics:\n%s\nwant:\n%s", body, want)
	}
	// Every sample line is NAME{LABELS} VALUE.
	for _, l := range strings.Split(strings.TrimSpace(string(body)), "\n") {
		if !strings.HasPrefix(l, "#") && (!strings.Contains(l, "} ") || !strings.HasPrefix(l, "ferry_sync_")) {
			t.Errorf("malformed sample line %q", l)
		}
	}
	if r, err := http.Post(srv.URL, "text/plain", nil); err != nil || r.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %v %v, want 405", r, err)
	} else {
		r.Body.Close()
	}
}
