package cache

import (
	"fmt"
	"io"
	"strings"
	"sync/atomic"
)

// Metrics are the cache's counters, served at /metrics in the Prometheus
// text format (version 0.0.4). Safe for concurrent use.
type Metrics struct {
	hits, misses, stale         int64 // requests served from the store, fetched upstream, served stale
	redirects                   int64 // hits answered with a presigned URL (Options.Redirect)
	bytesUpstream, bytesServed  int64
	upstreamErrors              int64
	evictedBlobs, evictedMfsts  int64
	evictedBytes, cleanerPasses int64
}

func (m *Metrics) add(p *int64, n int64) { atomic.AddInt64(p, n) }

func (m *Metrics) evicted(r CleanResult) {
	m.add(&m.cleanerPasses, 1)
	m.add(&m.evictedBlobs, int64(r.Blobs))
	m.add(&m.evictedMfsts, int64(r.Manifests))
	m.add(&m.evictedBytes, r.Bytes)
}

// Snapshot is a copy of the counters.
type Snapshot struct {
	Hits, Misses, Stale, Redirects     int64
	BytesUpstream, BytesServed         int64
	UpstreamErrors                     int64
	EvictedBlobs, EvictedManifests     int64
	EvictedBytes, CleanerPasses, Store int64
}

// Snapshot returns the counters now; Store is left zero.
func (m *Metrics) Snapshot() Snapshot {
	l := func(p *int64) int64 { return atomic.LoadInt64(p) }
	return Snapshot{Hits: l(&m.hits), Misses: l(&m.misses), Stale: l(&m.stale), Redirects: l(&m.redirects),
		BytesUpstream: l(&m.bytesUpstream), BytesServed: l(&m.bytesServed), UpstreamErrors: l(&m.upstreamErrors),
		EvictedBlobs: l(&m.evictedBlobs), EvictedManifests: l(&m.evictedMfsts),
		EvictedBytes: l(&m.evictedBytes), CleanerPasses: l(&m.cleanerPasses)}
}

// writeMetrics writes s, with the store's size and bound, in the Prometheus
// text format.
func writeMetrics(w io.Writer, s Snapshot, maxSize int64) error {
	var b strings.Builder
	metric := func(name, typ, help string, v int64, labels string) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n%s%s %d\n", name, help, name, typ, name, labels, v)
	}
	fmt.Fprintf(&b, "# HELP ferry_cache_requests_total Blob and manifest requests by result: hit (from the store), miss (fetched upstream), stale (upstream down, served from the store).\n# TYPE ferry_cache_requests_total counter\n")
	fmt.Fprintf(&b, "ferry_cache_requests_total{result=\"hit\"} %d\nferry_cache_requests_total{result=\"miss\"} %d\nferry_cache_requests_total{result=\"stale\"} %d\n", s.Hits, s.Misses, s.Stale)
	metric("ferry_cache_redirects_total", "counter", "Blob hits answered with a redirect to a presigned URL of the object store (--s3-redirect).", s.Redirects, "")
	metric("ferry_cache_upstream_bytes_total", "counter", "Blob bytes downloaded from upstreams.", s.BytesUpstream, "")
	metric("ferry_cache_served_bytes_total", "counter", "Blob bytes sent to clients.", s.BytesServed, "")
	metric("ferry_cache_upstream_errors_total", "counter", "Upstream requests that failed.", s.UpstreamErrors, "")
	fmt.Fprintf(&b, "# HELP ferry_cache_evictions_total Objects the cleaner evicted, by kind.\n# TYPE ferry_cache_evictions_total counter\n")
	fmt.Fprintf(&b, "ferry_cache_evictions_total{kind=\"blob\"} %d\nferry_cache_evictions_total{kind=\"manifest\"} %d\n", s.EvictedBlobs, s.EvictedManifests)
	metric("ferry_cache_evicted_bytes_total", "counter", "Bytes the cleaner freed.", s.EvictedBytes, "")
	metric("ferry_cache_cleaner_passes_total", "counter", "Cleaner passes that evicted something.", s.CleanerPasses, "")
	metric("ferry_cache_store_bytes", "gauge", "Bytes of blobs, manifests and tag list pages in the store.", s.Store, "")
	metric("ferry_cache_store_max_bytes", "gauge", "The size the cleaner brings the store down to.", maxSize, "")
	_, err := io.WriteString(w, b.String())
	return err
}
