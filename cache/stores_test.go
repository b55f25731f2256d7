package cache

import (
	"os"
	"testing"

	"github.com/ferry-airgap/ferry/test/harness"
)

// onS3 puts the store in a fresh bucket of the test binary's SeaweedFS.
func onS3(t *testing.T) func(*Options) {
	sw := harness.StartSeaweed(t)
	st, err := sw.Store(t, sw.Bucket(t))
	if err != nil {
		t.Fatal(err)
	}
	return func(o *Options) { o.Objects = st }
}

// forEachStore runs test once with the store on disk (the default) and
// once in object storage (a real SeaweedFS): one suite, two stores. Keep
// the S3 subtest out with FERRY_SKIP_SEAWEED=1.
func forEachStore(t *testing.T, test func(t *testing.T, store func(*Options))) {
	t.Run("disk", func(t *testing.T) { test(t, func(*Options) {}) })
	t.Run("s3", func(t *testing.T) { test(t, onS3(t)) })
}

// TestMain stops the SeaweedFS the S3 subtests started.
func TestMain(m *testing.M) {
	code := m.Run()
	harness.StopSeaweed()
	os.Exit(code)
}
