package test

import (
	"os"
	"testing"

	"github.com/ferry-airgap/ferry/test/harness"
)

// TestMain removes the ferry binary the harness built, so test runs do not
// leave a build directory behind in the temporary directory, and stops the
// real Harbor if a test started one.
func TestMain(m *testing.M) {
	code := m.Run()
	harness.StopHarbor()
	harness.RemoveFerryBuild()
	os.Exit(code)
}
